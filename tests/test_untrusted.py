"""Untrusted files: a checkpoint that carries code is refused without running it, on every path that reads one.

The payload is live: the same file unpickled the ordinary way (``torch.load(weights_only=False)``, in a child
process) does create its marker file. Every compscale path then reads it and must (a) refuse it with one line,
(b) leave the marker uncreated. A source scan proves the only unpickling call in the package is
``torch.load(..., weights_only=True)`` and that YAML is read with ``safe_load`` only.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compscale.cli import EXIT_USER_ERROR, main
from compscale.errors import UserError
from conftest import tiny_spec

SRC = Path(__file__).resolve().parents[1] / "src" / "compscale"
TINY = tiny_spec(stages=2, head_channels=32)


class _Payload:
    """Unpickling this runs ``exec`` on code that creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


@pytest.fixture
def evil(tmp_path):
    """(folder, marker): malicious checkpoints in every shape a user could be handed."""
    marker = tmp_path / "MARKER"
    d = tmp_path / "files"
    d.mkdir()
    from compscale.models.registry import build_model, resolve_spec

    state = build_model(resolve_spec(TINY, 10, 1)).state_dict()
    # Real tensors beside the payload: the file looks like an ordinary checkpoint.
    torch.save({**state, "extra": _Payload(marker)}, d / "evil.pth")
    torch.save({"state_dict": {**state}, "optimizer": _Payload(marker)}, d / "evil_nested.pt")
    (d / "evil.safetensors").write_bytes((d / "evil.pth").read_bytes())  # a pickle under a trusted name
    (d / "tiny.json").write_text(json.dumps(TINY.as_dict()))
    return d, marker


def test_the_payload_is_live(evil):
    """Without weights_only the file runs its code: the tests below would notice if compscale unpickled it."""
    d, marker = evil
    code = f"import torch; torch.load({str(d / 'evil.pth')!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, capture_output=True)
    assert marker.read_text() == "code ran"


@pytest.mark.parametrize("name", ["evil.pth", "evil_nested.pt"])
def test_load_weights_refuses_pickled_code(evil, name):
    from compscale.models.registry import build_model, resolve_spec
    from compscale.models.weights import load_weights

    d, marker = evil
    with pytest.raises(UserError) as err:
        load_weights(build_model(resolve_spec(TINY, 10, 1)), d / name)
    message = str(err.value)
    assert "\n" not in message
    assert "is refused (only tensors are accepted): it holds pickled Python objects" in message
    assert message.endswith("could run code (it imports exec)")
    assert "weights_only` set to `False`" not in message  # never advise the unsafe load
    assert not marker.exists()


@pytest.mark.parametrize("argv, expect", [
    (["eval", "{d}/tiny.json", "--weights", "{d}/evil.pth", "--data", "digits"], "is refused"),
    (["eval", "{d}/tiny.json", "--weights", "{d}/evil.safetensors", "--data", "digits"],
     "not a readable safetensors file"),
    (["predict", "efficientnet_b0", "--weights", "{d}/evil.pth", "--image", "skimage:coffee"], "is refused"),
    (["predict", "efficientnet_b0", "--weights", "{d}/evil_nested.pt", "--image", "skimage:coffee"], "is refused"),
    (["finetune", "{d}/tiny.json", "--weights", "{d}/evil.pth", "--data", "digits", "--out", "{d}/ft"], "is refused"),
    (["export", "efficientnet_b0", "--format", "onnx", "--weights", "{d}/evil.pth", "--out", "{d}/m.onnx"],
     "is refused"),
], ids=["eval-pth", "eval-disguised", "predict-pth", "predict-nested", "finetune", "export"])
def test_cli_refuses_pickled_code(evil, argv, expect, capsys):
    d, marker = evil
    rc = main([a.replace("{d}", str(d)) for a in argv])
    err = capsys.readouterr().err
    assert rc == EXIT_USER_ERROR
    assert len(err.strip().splitlines()) == 1 and expect in err, err
    assert not marker.exists()
    assert not (d / "ft").exists() and not (d / "m.onnx").exists()


def test_train_resume_refuses_a_malicious_checkpoint(evil, capsys):
    """A pickle put in place of OUT/checkpoint.safetensors: resuming reads it as safetensors only."""
    d, marker = evil
    out = d / "run"
    out.mkdir()
    (out / "checkpoint.safetensors").write_bytes((d / "evil.pth").read_bytes())
    rc = main(["train", str(d / "tiny.json"), "--data", "digits", "--out", str(out), "--resume", "--epochs", "1",
               "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == EXIT_USER_ERROR
    assert err.strip().splitlines()[-1].startswith("compscale: error: ")
    assert "checkpoint.safetensors is not a readable checkpoint" in err
    assert not marker.exists()
    assert not (out / "model.safetensors").exists()


def test_no_traceback_and_no_code_in_a_real_process(evil):
    d, marker = evil
    proc = subprocess.run([sys.executable, "-m", "compscale", "eval", str(d / "tiny.json"), "--weights",
                           str(d / "evil.pth"), "--data", "digits"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_USER_ERROR and "Traceback" not in proc.stderr
    assert "is refused" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not marker.exists()


# --- the source scan ---------------------------------------------------------------------------------------


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return ""  # a method of a computed value, e.g. model(...).eval(): not a module-level function
    parts.append(func.id)
    return ".".join(reversed(parts))


def _scan() -> tuple[list[str], list[str], int]:
    """(torch.load calls without weights_only=True, forbidden calls/imports, torch.load calls seen)."""
    unsafe_torch, forbidden, seen = [], [], 0
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20  # the scan really sees the package
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        where = lambda node: f"{path.relative_to(SRC.parent)}:{node.lineno}"  # noqa: E731
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names]
                module = getattr(node, "module", None) or ""
                if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "marshal", "shelve", "joblib") for n in names) \
                        or module.split(".")[0] in ("pickle", "dill", "marshal", "shelve", "joblib"):
                    forbidden.append(f"{where(node)} imports {module or names}")
                if module == "torch" and "load" in names:
                    forbidden.append(f"{where(node)} imports torch.load by name (the scan could not check it)")
        for call in _calls(tree):
            name = _dotted(call.func)
            if name == "torch.load":
                seen += 1
                ok = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                         for k in call.keywords)
                if not ok:
                    unsafe_torch.append(where(call))
            elif name in ("eval", "exec", "compile", "__import__") or name.endswith(
                    ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all")):
                forbidden.append(f"{where(call)} calls {name}")
            elif name.endswith(("np.load", "numpy.load")) and any(
                    k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                    for k in call.keywords):
                forbidden.append(f"{where(call)} calls {name} with allow_pickle")
            elif name.endswith(("yaml.Loader", "yaml.UnsafeLoader", "yaml.FullLoader")):
                forbidden.append(f"{where(call)} uses {name}")
    return unsafe_torch, forbidden, seen


def test_source_unpickles_nothing():
    unsafe_torch, forbidden, seen = _scan()
    assert seen >= 1  # weights.read_state_dict's .pth path
    assert unsafe_torch == [], f"torch.load without weights_only=True: {unsafe_torch}"
    assert forbidden == [], forbidden


def test_the_scan_catches_what_it_forbids(tmp_path, monkeypatch):
    """The scanner itself, on a planted file: it must not be a test that cannot fail."""
    global SRC
    pkg = tmp_path / "compscale"
    pkg.mkdir()
    for i in range(21):
        (pkg / f"m{i}.py").write_text("x = 1\n")
    (pkg / "bad.py").write_text("import pickle\nimport torch, yaml\n"
                                "a = torch.load('f')\nb = torch.load('f', weights_only=False)\n"
                                "c = yaml.load('x')\nd = eval('1')\nm = torch.nn.Linear(1, 1).eval()\n"
                                "e = torch.load('f', weights_only=True)\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", pkg)
    unsafe_torch, forbidden, seen = _scan()
    assert seen == 3 and len(unsafe_torch) == 2
    assert any("imports" in f for f in forbidden) and any("yaml.load" in f for f in forbidden)
    assert sum("calls eval" in f for f in forbidden) == 1  # model.eval() is a method, not the builtin
