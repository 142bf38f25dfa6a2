"""Deployment: folded, optimized and exported models compute what the original computes.

Correctness only (timings are benchmarks, not tests). Every comparison is relative: BatchNorm is calibrated
(conftest.calibrate_batchnorm) so logits are O(1), and max|diff| must be <= 1e-4 * max|logit|, the
tolerance compscale.optimize promises; folding changes float rounding, so 1e-5 would be too tight for
randomly initialised deep nets.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

import compscale
from compscale.cli import main
from compscale.deploy import export_onnx, export_torchscript, fold_batchnorm, optimize
from compscale.deploy.fold import _observed_pairs, find_conv_bn_pairs
from compscale.errors import UserError
from compscale.models.weights import save_weights
from conftest import calibrate_batchnorm

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.load.*deprecated:FutureWarning")

RTOL = 1e-4

# (model, test resolution): small inputs; Inception-ResNet-v2's valid-padded stem needs >= 75 px.
MODELS = [
    ("efficientnet_b0", 64),
    ("tf_efficientnet_b0", 67),  # odd size: TF "SAME" padding is asymmetric (Conv2dSame)
    ("efficientnet_lite0", 64),
    pytest.param("resnext50_32x4d", 64),
    pytest.param("inception_resnet_v2", 75),
]

_CACHE: dict[tuple[str, int], nn.Module] = {}


def calibrated(name: str, res: int) -> nn.Module:
    """One calibrated model per (name, resolution) for the whole module (building them is the slow part)."""
    if (name, res) not in _CACHE:
        torch.manual_seed(0)
        model = compscale.create_model(name)
        calibrate_batchnorm(model, resolution=res)
        _CACHE[name, res] = model
    return _CACHE[name, res]


def images(n: int, res: int, seed: int = 7) -> torch.Tensor:
    return torch.randn(n, 3, res, res, generator=torch.Generator().manual_seed(seed))


def assert_close(ref: torch.Tensor, out, rtol: float = RTOL) -> None:
    out = torch.as_tensor(out)
    assert out.shape == ref.shape
    scale = ref.abs().max().item()
    assert scale > 0.1, "logits collapsed: the comparison would mean nothing"
    diff = (out.float() - ref.float()).abs().max().item()
    assert diff <= rtol * scale, f"max|diff| {diff:.3g} > {rtol:g} * max|logit| {scale:.3g}"


def n_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("name,res", MODELS)
def test_fold_batchnorm_removes_every_bn_and_keeps_the_function(name, res):
    model = calibrated(name, res)
    x = images(2, res)
    before = n_batchnorms(model)
    folded = fold_batchnorm(model, example_input=x[:1])
    assert n_batchnorms(model) == before > 0  # the original is untouched
    assert folded.folded_batchnorms == before and n_batchnorms(folded) == 0
    with torch.no_grad():
        assert_close(model(x), folded(x))


def test_fold_observed_pairs_agree_with_fx_trace():
    """The run-time detection (used when fx cannot trace a model) finds exactly the fx pairs."""
    model = calibrated("tf_efficientnet_b0", 67).eval()
    assert sorted(_observed_pairs(model, images(1, 67))) == sorted(find_conv_bn_pairs(model))


class _SharedConvOutput(nn.Module):
    """conv → BN, but the conv output is also added back: folding it would change the function."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 4, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn2(self.conv2(self.bn(y) + y))


class _ValueBranch(_SharedConvOutput):
    """Same dataflow behind Python control flow on a tensor value (fx cannot trace it)."""

    def forward(self, x):
        if x.sum() > -1e9:
            return super().forward(x)
        return x


@pytest.mark.parametrize("cls", [_SharedConvOutput, _ValueBranch])
def test_fold_skips_a_conv_whose_output_is_read_twice(cls):
    torch.manual_seed(0)
    model = cls()
    for bn in (model.bn, model.bn2):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-1, 1)
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    folded = fold_batchnorm(model, example_input=x)
    assert folded.folded_batchnorms == 1
    assert isinstance(folded.bn, nn.BatchNorm2d) and isinstance(folded.bn2, nn.Identity)
    with torch.no_grad():
        assert_close(model(x), folded(x), rtol=1e-6)


@pytest.mark.parametrize("name,res", MODELS[:3])
def test_optimize_every_backend_matches(name, res):
    model = calibrated(name, res)
    x = images(3, res)
    opt = optimize(model, x, warmup=1, repeats=1, min_seconds=0.0)
    # Every default backend was built, checked and timed; none was rejected; the winner is the fastest.
    assert {"eager", "channels_last", "torchscript", "onnxruntime", "onnxruntime[micro_batch=1]",
            "openvino"} <= set(opt.timings)
    assert any(k.startswith("openvino[micro_batch=2,") for k in opt.timings)
    assert not opt.rejected and opt.precision == "fp32"
    assert opt.backend == min(opt.timings, key=opt.timings.get)
    assert all(0 <= e <= RTOL for e in opt.errors.values())
    assert n_batchnorms(model) > 0 and model.training is False
    x2 = images(3, res, seed=11)
    with torch.no_grad():
        assert_close(model(x2), opt(x2))


@pytest.mark.parametrize("backend", ["eager", "channels_last", "torchscript", "onnxruntime", "openvino"])
def test_optimize_single_backend_and_other_batch_sizes(backend):
    model = calibrated("efficientnet_b0", 64)
    opt = optimize(model, images(4, 64), backends=backend, warmup=0, repeats=1, min_seconds=0.0)
    assert opt.backend.startswith(backend)
    for n in (1, 5):  # ONNX Runtime: one static session per batch size, micro-batches for the rest
        x = images(n, 64, seed=n)
        with torch.no_grad():
            assert_close(model(x), opt(x))


@pytest.mark.parametrize("name,res", MODELS[3:])
def test_optimize_other_families(name, res):
    model = calibrated(name, res)
    x = images(2, res)
    opt = optimize(model, x, backends=("channels_last", "onnxruntime", "openvino"), warmup=0, repeats=1,
                   min_seconds=0.0)
    assert not opt.rejected and "openvino" in opt.timings and opt.errors["openvino"] <= RTOL
    with torch.no_grad():
        assert_close(model(x), opt(x))


def test_optimize_bad_input():
    model = calibrated("efficientnet_b0", 64)
    with pytest.raises(UserError, match="unknown backend"):
        optimize(model, images(1, 64), backends=("tensorrt",))
    with pytest.raises(UserError, match="4-D"):
        optimize(model, torch.randn(3, 64, 64))
    opt = optimize(model, images(1, 64), backends="torchscript", warmup=0, repeats=1, min_seconds=0.0)
    with pytest.raises(UserError, match="optimize again"):
        opt(images(1, 72))


@pytest.mark.parametrize("fold_bn", [False, True])
@pytest.mark.parametrize("name,res", MODELS)
def test_export_onnx_runs_in_onnxruntime(tmp_path, name, res, fold_bn):
    model = calibrated(name, res)
    path = tmp_path / "m.onnx"
    report = export_onnx(model, path, resolution=res, fold_bn=fold_bn)
    assert path.is_file() and report.relative_error <= RTOL and report.dynamic_batch
    assert report.folded_batchnorms == (n_batchnorms(model) if fold_bn else 0)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = images(3, res, seed=3)  # another batch size than exported: the batch axis is dynamic
    with torch.no_grad():
        assert_close(model(x), sess.run(None, {"input": x.numpy()})[0])
    assert os.listdir(tmp_path) == ["m.onnx"]


@pytest.mark.parametrize("name,res", MODELS)
def test_export_torchscript_loads_and_matches(tmp_path, name, res):
    model = calibrated(name, res)
    path = tmp_path / "m.pt"
    report = export_torchscript(model, path, resolution=res, fold_bn=True)
    assert report.relative_error <= RTOL
    loaded = torch.jit.load(str(path))
    x = images(2, res, seed=5)
    with torch.no_grad():
        assert_close(model(x), loaded(x))


# --- the command line ---------------------------------------------------------------------------------

def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def lite0_weights(tmp_path_factory):
    model = calibrated("efficientnet_lite0", 64)
    path = tmp_path_factory.mktemp("w") / "lite0.safetensors"
    save_weights(model, path)
    return model, path


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "openvino"])
def test_cli_export_writes_a_file_that_loads_and_matches(capsys, tmp_path, lite0_weights, fmt):
    model, weights = lite0_weights
    out = tmp_path / "sub" / f"lite0.{'xml' if fmt == 'openvino' else fmt}"
    code, stdout, err = run(capsys, "export", "efficientnet_lite0", "--format", fmt, "--weights", weights,
                            "--resolution", 64, "--fold-bn", "--out", out, "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["relative_error"] <= RTOL and report["folded_batchnorms"] == n_batchnorms(model)
    x = images(2, 64, seed=9)
    if fmt == "onnx":
        got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    elif fmt == "openvino":
        from compscale.deploy.openvino_runtime import run_ir

        got = run_ir(out, x)
    else:
        with torch.no_grad():
            got = torch.jit.load(str(out))(x)
    with torch.no_grad():
        assert_close(model(x), got)


@pytest.mark.parametrize("argv,message", [
    (["export", "efficientnet_b0", "--format", "tflite"], "invalid choice"),
    (["export", "efficientnet_b99", "--format", "onnx"], "unknown model"),
    (["export", "efficientnet_lite0", "--format", "onnx", "--weights", "{tmp}/missing.safetensors"], "not found"),
    (["export", "efficientnet_lite0", "--format", "onnx", "--resolution", "64", "--out", "{tmp}/afile/x.onnx"],
     "cannot write"),
    (["export", "efficientnet_lite0", "--format", "openvino", "--resolution", "64"], "ending in .xml"),
    (["bench", "efficientnet_b0", "--backend", "tensorrt"], "invalid choice"),
    (["bench", "efficientnet_b99"], "unknown model"),
    (["bench", "tf_efficientnet_b0", "--vs", "torchvision", "--resolution", "64"], "torchvision has no model"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(capsys, tmp_path, argv, message):
    (tmp_path / "afile").write_text("a file, not a directory")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "export" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "out.onnx")]
    before = sorted(os.listdir(tmp_path))
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err
    assert sorted(os.listdir(tmp_path)) == before


def test_cli_bench_json_against_timm(capsys):
    pytest.importorskip("timm")
    code, out, err = run(capsys, "bench", "efficientnet_lite0", "--resolution", 64, "--batch", 2, "--threads", 1,
                         "--backend", "onnxruntime", "--vs", "timm", "--repeats", 2, "--warmup", 1, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["library"] for r in rows] == ["compscale", "timm"]
    assert all(r["latency_ms"] > 0 and r["batch"] == 2 and r["repeats"] == 2 for r in rows)
    assert rows[1]["speedup_vs_peer"] == 1.0
    assert rows[0]["speedup_vs_peer"] == pytest.approx(rows[1]["latency_ms"] / rows[0]["latency_ms"])


# --- OpenVINO, reduced precision, accuracy cost, timing blocks ---------------------------------------------

def test_openvino_micro_batches_and_streams_cover_every_image():
    from compscale.deploy.export import onnx_bytes
    from compscale.deploy.openvino_runtime import OpenVinoModule

    model = calibrated("efficientnet_b0", 64)
    folded = fold_batchnorm(model, example_input=images(1, 64))
    runner = OpenVinoModule(onnx_bytes(folded, images(1, 64)), (2, 3, 64, 64), threads=2, micro_batch=2, streams=2)
    for n in (5, 1, 2):  # 2 + 2 in flight and 1 left over; a single image; exactly one micro-batch
        x = images(n, 64, seed=20 + n)
        with torch.no_grad():
            assert_close(model(x), runner(x))
    with pytest.raises(UserError, match="compiled for inputs"):
        runner(images(1, 72))
    with pytest.raises(UserError, match="unknown precision"):
        OpenVinoModule(b"", (1, 3, 64, 64), precision="fp8")


def test_optimize_bf16_is_opt_in_and_really_bf16():
    from compscale.deploy.openvino_runtime import available_precisions

    model = calibrated("efficientnet_b0", 64)
    x = images(2, 64)
    with pytest.raises(UserError, match="unknown precision"):
        optimize(model, x, precision="int4")
    with pytest.raises(UserError, match="openvino backend only"):
        optimize(model, x, backends=("eager", "openvino"), precision="bf16")
    if "bf16" not in available_precisions():
        pytest.skip("this CPU has no native bf16 (AVX512-BF16/AMX)")
    opt = optimize(model, x, precision="bf16", warmup=0, repeats=1, min_seconds=0.0)
    assert opt.precision == "bf16" and opt.backend.startswith("openvino[bf16")
    # Really reduced precision (OpenVINO was not left at fp32), yet still the model's function.
    assert 1e-4 < opt.max_relative_error <= 0.1
    with pytest.raises(UserError, match="allowed 1e-05"):  # a tolerance bf16 cannot meet: every candidate is rejected
        optimize(model, x, precision="bf16", rtol=1e-5, warmup=0, repeats=1, min_seconds=0.0)


def test_accuracy_cost_counts_agreement():
    from compscale.deploy.accuracy import accuracy_cost

    model = calibrated("efficientnet_b0", 64)
    x = images(6, 64, seed=4)
    same = accuracy_cost(model, model, x, batch=4)
    assert (same.images == 6 and same.top1_agreement == 1.0 and same.top5_overlap == 1.0
            and same.max_relative_error == 0.0)
    with torch.no_grad():
        ref = model(x)
    # A candidate that swaps the top class of the first two images with their runner-up, and nothing else.
    swapped = ref.clone()
    top2 = ref.topk(2, dim=1).indices
    for i in range(2):
        a, b = top2[i]
        swapped[i, a], swapped[i, b] = ref[i, b], ref[i, a]
    lookup = {tuple(x[i, 0, 0, :3].tolist()): swapped[i] for i in range(6)}
    cost = accuracy_cost(model, lambda t: torch.stack([lookup[tuple(r[0, 0, :3].tolist())] for r in t]), x, batch=4)
    assert cost.top1_agreement == pytest.approx(4 / 6) and cost.top5_overlap == 1.0 and cost.max_relative_error > 0


def test_photo_views_are_real_photos_and_reproducible():
    pytest.importorskip("skimage")
    from compscale.deploy.accuracy import photo_views
    from compscale.pretrained import Preprocess

    pre = Preprocess(resolution=32)
    a, b, c = photo_views(pre, 3, seed=0), photo_views(pre, 3, seed=0), photo_views(pre, 3, seed=1)
    assert a.shape == (15, 3, 32, 32)  # 5 distinct photos x 3 views
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[0], pre("skimage:astronaut")[0])  # each photo's first view is its centre crop
    assert a.std() > 0.2  # photos, not blank frames


def test_measure_auto_blocks():
    import time as _time

    from compscale.deploy.bench import measure

    calls = {"fast": lambda: _time.sleep(0.001), "slow": lambda: _time.sleep(0.1)}
    t = measure(calls, batch=1, warmup=1, repeats=2, inner="auto")
    assert len(t["fast"].times) == 2 and len(t["slow"].times) == 2
    assert 0.001 <= t["fast"].median < 0.05 and t["slow"].median >= 0.1
    with pytest.raises(UserError, match="inner"):
        measure(calls, batch=1, inner=0)
    # prune: "slow" is 100x the fastest after the first round, so it is timed once; with only "fast" left
    # there is nothing to compare, so timing stops; with two fast ones, they go on to the end.
    t = measure(calls, batch=1, warmup=0, repeats=3, prune=2.0)
    assert len(t["slow"].times) == 1 and len(t["fast"].times) == 1
    calls["fast2"] = calls["fast"]
    t = measure(calls, batch=1, warmup=0, repeats=3, prune=2.0)
    assert len(t["slow"].times) == 1 and len(t["fast"].times) == len(t["fast2"].times) == 3


@pytest.mark.parametrize("name,res", [MODELS[0], MODELS[3], MODELS[4]])
def test_export_openvino_ir_loads_and_matches(tmp_path, name, res):
    from compscale.deploy.export import export_openvino
    from compscale.deploy.openvino_runtime import run_ir

    model = calibrated(name, res)
    path = tmp_path / "m.xml"
    report = export_openvino(model, path, resolution=res, fold_bn=True)
    assert report.relative_error <= RTOL and report.folded_batchnorms == n_batchnorms(model)
    assert sorted(os.listdir(tmp_path)) == ["m.bin", "m.xml"]  # no temporary left behind
    x = images(3, res, seed=6)  # dynamic batch
    with torch.no_grad():
        assert_close(model(x), run_ir(path, x))
    with pytest.raises(UserError, match="ending in .xml"):
        export_openvino(model, tmp_path / "m.onnx", resolution=res)
    assert sorted(os.listdir(tmp_path)) == ["m.bin", "m.xml"]


def test_cli_bench_openvino_and_precision(capsys):
    code, out, err = run(capsys, "bench", "efficientnet_lite0", "--resolution", 64, "--batch", 2, "--threads", 1,
                         "--backend", "openvino", "--repeats", 2, "--warmup", 1, "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["backend"].startswith("OpenVINO fp32") and row["precision"] == "fp32" and row["latency_ms"] > 0
    code, out, err = run(capsys, "bench", "efficientnet_lite0", "--backend", "eager", "--precision", "bf16")
    assert code == 2 and out == "" and "needs --backend openvino or best" in err
