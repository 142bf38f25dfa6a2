"""Packed seeds (compscale.models.packing): k members trained as one module stay k separate networks.

Exactness is claimed in float64: the packed forward equals each member's own forward, and k packed members
trained with the sum of their losses end where k separate runs end (weights and BatchNorm buffers)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compscale import UserError
from compscale.models import build_model, create_model, model_spec
from compscale.models.blocks import DropPath
from compscale.models.packing import (
    PackedDropPath,
    PackedLinear,
    PackedModel,
    member_losses,
    pack,
    stack_inputs,
    unpack,
)
from compscale.specs import MBConvStage
from compscale.train.config import TrainConfig
from compscale.train.ema import ModelEma
from compscale.train.optim import build_optimizer, param_groups
from conftest import tiny_spec

SEEDS = (0, 1, 2)


def _members(spec, seeds=SEEDS, dtype=torch.float64, calibrate: bool = True) -> list[nn.Module]:
    """One model per seed (``torch.manual_seed(s); build_model(spec)``), each with its own non-trivial
    BatchNorm affine parameters and running statistics when ``calibrate``."""
    models = []
    for s in seeds:
        torch.manual_seed(s)
        model = build_model(spec)
        if calibrate:
            _calibrate(model, spec, seed=10 * s)
        models.append(model.to(dtype))
    return models


@torch.no_grad()
def _calibrate(model: nn.Module, spec, seed: int) -> None:
    """conftest's ``calibrate_batchnorm`` for any ``in_chans``: random BN affine parameters, then running
    statistics of two random batches (O(1) activations in eval mode), then the spec's momentum again."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
        m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for _ in range(2):
        model(torch.randn(4, spec.in_chans, spec.resolution, spec.resolution, generator=g))
    for m in bns:
        m.momentum = spec.bn_momentum
    model.eval()


def _rel_err(got: torch.Tensor, want: torch.Tensor, floor: float = 1e-300) -> float:
    """max |got − want| / max(max |want|, floor) (0 when both are exactly equal)."""
    got, want = got.detach().double(), want.detach().double()
    diff = float((got - want).abs().max()) if got.numel() else 0.0
    return diff / max(float(want.abs().max()), floor) if diff else 0.0


def _inputs(k: int, spec, batch: int, size: int, seed: int, dtype=torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, spec.in_chans, size, size, generator=g, dtype=dtype) for _ in range(k)]


RESNEXT = model_spec("resnext_tiny").replace(in_chans=1, num_classes=7)
FAMILIES = {"efficientnet": tiny_spec(num_classes=10), "resnext": RESNEXT}


# --- 1. the packed forward is each member's forward -------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_packed_forward_equals_each_member(family, mode):
    spec = FAMILIES[family]
    models = _members(spec)
    packed = pack(models)
    assert isinstance(packed, PackedModel) and packed.k == 3 and packed.spec == spec
    for m in (packed, *models):
        m.train(mode == "train")
    xs = _inputs(3, spec, batch=4, size=spec.resolution, seed=5)
    logits = packed(stack_inputs(xs))
    assert logits.shape == (4, 3, spec.num_classes)
    for i, (model, x) in enumerate(zip(models, xs)):
        want = model(x)
        assert float(want.detach().abs().max()) > 1e-3  # non-trivial activations: the tolerance means something
        assert _rel_err(logits[:, i], want) < 1e-10, (family, mode, i)
    if mode == "train":  # the batch statistics went into each member's own running statistics
        for mine, separate in zip(unpack(packed), models):
            for (name, a), b in zip(mine.named_buffers(), separate.buffers()):
                assert _rel_err(a, b) < 1e-10, name


def test_packed_layers_and_param_groups():
    """Convs grouped ×k, BN ×k features, the classifier block diagonal with 2-D weight / 1-D bias: the engine's
    param_groups puts the packed parameters in the same decay / no-decay groups as one member's."""
    spec = tiny_spec(num_classes=10)
    models = _members(spec, calibrate=False)
    packed = pack(models)
    stem = packed.net.stem.conv
    assert (stem.in_channels, stem.out_channels, stem.groups) == (9, 24, 3)
    assert packed.net.stem.bn.num_features == 24
    clf = packed.net.classifier
    assert isinstance(clf, PackedLinear) and clf.weight.shape == (30, 64) and clf.bias.shape == (30,)
    assert packed.get_classifier() is clf
    ref = param_groups(models[0], 1e-5)
    got = param_groups(packed, 1e-5)
    assert [(g["name"], g["weight_decay"], len(g["params"])) for g in got] == \
           [(g["name"], g["weight_decay"], len(g["params"])) for g in ref]
    for g_ref, g_got in zip(ref, got):
        assert [p.ndim for p in g_got["params"]] == [p.ndim for p in g_ref["params"]]
        assert sum(p.numel() for p in g_got["params"]) == 3 * sum(p.numel() for p in g_ref["params"])
    head = param_groups(packed, 1e-5, head=packed.get_classifier(), head_lr_scale=10.0)
    assert {g["name"] for g in head} == {"body", "body_no_decay", "head", "head_no_decay"}


# --- 2. training k packed seeds is training k separate seeds -----------------------------------------------------


def _train_separately(models, cfg, batches, criterion):
    for model in models:
        model.train()
    opts = [build_optimizer(cfg, param_groups(m, cfg.weight_decay)) for m in models]
    for xs, ys in batches:
        for model, opt, x, y in zip(models, opts, xs, ys):
            loss = criterion(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return models


def _train_packed(packed, cfg, batches, criterion):
    packed.train()
    opt = build_optimizer(cfg, param_groups(packed, cfg.weight_decay))
    for xs, ys in batches:
        losses = member_losses(packed(stack_inputs(xs)), torch.stack(ys, dim=1), criterion)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
    return packed


@pytest.mark.parametrize("family,optimizer,lr", [
    ("efficientnet", "sgd", 0.05),
    ("efficientnet", "rmsproptf", 0.01),
    ("efficientnet", "adamw", 0.003),
    ("resnext", "sgd", 0.05),
    ("resnext", "rmsproptf", 0.01),
])
def test_packed_training_equals_separate_runs(family, optimizer, lr):
    """float64, 3 seeds, each member its own batches, loss = Σ member losses, 6 steps: every member's unpacked
    weights and BatchNorm buffers equal its separately trained model's within 1e-6 relative.

    The members start from calibrated (non-zero) BatchNorm parameters and statistics: from BN biases of exactly 0
    some tensors stay exact zeros (a BN bias whose output reaches only convs followed by train-mode BNs, which
    cancel any constant shift, has an exact gradient of 0), which both runs move by rounding noise alone (±1e-17,
    ~1e-11 after AdamW's normalisation): relative errors of noise would compare nothing."""
    spec = FAMILIES[family]
    cfg = TrainConfig(optimizer=optimizer, lr=lr, weight_decay=0.01 if optimizer == "adamw" else 1e-3, momentum=0.9)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    g = torch.Generator().manual_seed(123)
    batches = [([torch.randn(6, spec.in_chans, 16, 16, generator=g, dtype=torch.float64) for _ in SEEDS],
                [torch.randint(0, spec.num_classes, (6,), generator=g) for _ in SEEDS]) for _ in range(6)]
    separate = _members(spec)
    packed = pack(copy.deepcopy(separate))
    start = [copy.deepcopy(m.state_dict()) for m in separate]
    _train_separately(separate, cfg, batches, criterion)
    _train_packed(packed, cfg, batches, criterion)
    for i, (mine, ref) in enumerate(zip(unpack(packed), separate)):
        sa, sb = mine.state_dict(), ref.state_dict()
        assert sa.keys() == sb.keys()
        for key in sb:
            if sb[key].dtype == torch.long:  # num_batches_tracked
                assert torch.equal(sa[key], sb[key]), key
            else:
                err = _rel_err(sa[key], sb[key])
                assert err < 1e-6, (i, key, err)
        assert _rel_err(sb["stem.conv.weight"], start[i]["stem.conv.weight"]) > 1e-3  # training moved it


# --- 3. stochastic depth: one draw per sample AND member --------------------------------------------------------


def _drop_path_spec():
    stages = (MBConvStage(expand_ratio=1, kernel=3, stride=1, out_channels=8, repeats=2),
              MBConvStage(expand_ratio=4, kernel=3, stride=2, out_channels=16, repeats=2))
    return tiny_spec(num_classes=10).replace(stages=stages, drop_path_rate=0.5)


def test_drop_path_is_per_member():
    spec = _drop_path_spec()
    models = _members(spec, calibrate=False)
    assert any(isinstance(m, DropPath) for m in models[0].modules())
    packed = pack(models)
    drops = [m for m in packed.modules() if isinstance(m, DropPath)]
    assert drops and all(isinstance(m, PackedDropPath) and m.k == 3 for m in drops)
    # A large drop rate, identical inputs for every member and sample: which samples each member drops.
    layer = PackedDropPath(3, 0.5).train()
    torch.manual_seed(0)
    out = layer(torch.ones(64, 3 * 5, 2, 2))
    kept = out.unflatten(1, (3, 5)) != 0  # (B, k, C, H, W)
    assert torch.equal(kept, kept[:, :, :1, :1, :1].expand_as(kept))  # one draw per sample and member
    per_member = kept[:, :, 0, 0, 0]  # (B, k)
    assert 0 < int(per_member.sum()) < per_member.numel()
    assert not torch.equal(per_member[:, 0], per_member[:, 1]) and not torch.equal(per_member[:, 1], per_member[:, 2])
    assert torch.allclose(out[out != 0], torch.tensor(2.0))  # survivors divided by 1 − p
    # the whole packed network in train mode: members fed the same input are no longer coupled
    torch.manual_seed(1)
    x = torch.randn(8, spec.in_chans, 32, 32, dtype=torch.float64)
    for mode in ("train", "eval"):
        same = pack([copy.deepcopy(models[0]) for _ in SEEDS]).train(mode == "train")
        logits = same(stack_inputs([x] * 3))
        assert torch.equal(logits[:, 0], logits[:, 1]) == (mode == "eval")


def test_drop_path_eval_is_exact():
    spec = _drop_path_spec()
    models = [m.eval() for m in _members(spec)]
    packed = pack(models).eval()
    xs = _inputs(3, spec, batch=3, size=32, seed=9)
    logits = packed(stack_inputs(xs))
    for i, (model, x) in enumerate(zip(models, xs)):
        assert _rel_err(logits[:, i], model(x)) < 1e-10


# --- 4. what cannot be packed -------------------------------------------------------------------------------------


def _one_line_user_error(fn, *match):
    with pytest.raises(UserError) as err:
        fn()
    msg = str(err.value)
    assert "\n" not in msg and all(m in msg for m in match), msg
    return msg


def test_concatenating_family_is_refused():
    models = []
    for s in (0, 1):
        torch.manual_seed(s)
        models.append(create_model("inception_resnet_tiny", num_classes=5))
    _one_line_user_error(lambda: pack(models), "cannot be packed", "InceptionResNetV2")
    assert pack(models[:1]).k == 1  # one member is always "packed"


def test_different_architectures_are_refused():
    effnet, other_width = build_model(tiny_spec()), build_model(tiny_spec(head_channels=96))
    resnext = create_model("resnext_tiny")
    _one_line_user_error(lambda: pack([effnet, resnext]), "different architectures")
    _one_line_user_error(lambda: pack([effnet, other_width]), "different architectures")
    _one_line_user_error(lambda: pack([effnet, build_model(tiny_spec()).eval()]), "different architectures")
    _one_line_user_error(lambda: pack([]), "at least one")


def test_unknown_parametrised_layer_is_refused():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    _one_line_user_error(lambda: pack([net, copy.deepcopy(net)]), "cannot be packed", "GroupNorm")
    features = build_model(tiny_spec(), features_only=True)
    _one_line_user_error(lambda: pack([features, copy.deepcopy(features)]), "cannot be packed", "logits")


# --- 5. unpack(pack(models)) is the models -------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_unpack_restores_members_exactly(family):
    spec = FAMILIES[family]
    models = _members(spec, dtype=torch.float32)
    before = [copy.deepcopy(m.state_dict()) for m in models]
    members = unpack(pack(models))
    assert len(members) == 3
    for model, state, member in zip(models, before, members):
        assert type(member) is type(model) and member.spec == spec
        separate = build_model(spec)
        assert list(member.state_dict()) == list(separate.state_dict())
        for key, value in member.state_dict().items():
            assert torch.equal(value, state[key]) and torch.equal(model.state_dict()[key], state[key]), key
        assert [repr(m) for m in member.modules()] == [repr(m) for m in model.modules()]


# --- 6. channels_last, deepcopy and the EMA -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_channels_last_matches_nchw(mode):
    spec = tiny_spec(num_classes=10)
    packed = pack(_members(spec, dtype=torch.float32)).train(mode == "train")
    xs = _inputs(3, spec, batch=4, size=32, seed=3, dtype=torch.float32)
    want = copy.deepcopy(packed)(stack_inputs(xs))
    last = packed.to(memory_format=torch.channels_last)
    x = stack_inputs([x.contiguous(memory_format=torch.channels_last) for x in xs])
    assert x.is_contiguous(memory_format=torch.channels_last)
    got = last(x)
    assert _rel_err(got, want) < 1e-5


def test_deepcopy_and_ema():
    spec = tiny_spec(num_classes=10)
    packed = pack(_members(spec, dtype=torch.float32)).eval()
    twin = copy.deepcopy(packed)
    assert twin.k == 3 and twin.spec == spec and isinstance(twin.net.classifier, PackedLinear)
    x = stack_inputs(_inputs(3, spec, batch=2, size=32, seed=4, dtype=torch.float32))
    assert torch.equal(twin(x), packed(x))
    ema = ModelEma(packed, 0.9)
    ema.update(packed)
    assert torch.equal(ema.module(x), packed(x))


def test_member_losses_and_inputs():
    logits = torch.randn(5, 3, 4, requires_grad=True)
    targets = torch.randint(0, 4, (5, 3))
    crit = nn.CrossEntropyLoss()
    losses = member_losses(logits, targets, crit)
    assert losses.shape == (3,)
    for m in range(3):
        assert torch.equal(losses[m], crit(logits[:, m], targets[:, m]))
    with pytest.raises(UserError):
        stack_inputs([torch.zeros(2, 1, 4, 4), torch.zeros(3, 1, 4, 4)])
    packed = pack([create_model("resnext_tiny", in_chans=1)] * 2, check=False)
    with pytest.raises(ValueError, match="takes 2 channels"):
        packed(torch.zeros(1, 3, 32, 32))
