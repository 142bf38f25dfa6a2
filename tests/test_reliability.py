"""Faults during training: SIGKILL at several points, a full disk, a read-only output folder.

* A run killed at the start (before any checkpoint), mid-epoch, or *inside a checkpoint write* (after the
  data is in the temporary file, before the atomic rename) resumes and ends with the uninterrupted run's
  weights bit for bit (deterministic mode, tiny model on digits).
* A full disk or a read-only output folder stops the run with one line and exit status 2; the previous
  checkpoint keeps its exact bytes and still loads.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from compscale.cli import EXIT_USER_ERROR, main
from conftest import tiny_spec

TINY = tiny_spec()
#: 256 images / batch 32 = 8 steps per epoch, 2 epochs; mid-epoch checkpoints after global steps 3, 6, 9, 12.
STEPS_PER_EPOCH = 8


def _cmd(spec: Path, out: Path, *extra: str) -> list[str]:
    # Dropout, stochastic depth, augmentation, EMA and Adam state on: every piece of state must survive.
    return [sys.executable, "-m", "compscale", "train", str(spec), "--data", "digits", "--epochs", "2",
            "--threads", "1", "--deterministic", "--limit-train", "256", "--limit-test", "64", "--batch-size", "32",
            "--checkpoint-steps", "3", "--ema", "0.99", "--drop-rate", "0.2", "--drop-path-rate", "0.1",
            "--augment", "crop-flip", "--optimizer", "adamw", "--out", str(out), "--json", *extra]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    d = tmp_path_factory.mktemp("ref")
    spec = d / "tiny.json"
    spec.write_text(json.dumps(TINY.as_dict()))
    proc = subprocess.run(_cmd(spec, d / "ref"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return spec, d / "ref", json.loads(proc.stdout)


def _run_until(cmd: list[str], env: dict[str, str], needle: str, err_path: Path) -> subprocess.Popen:
    with open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **env})
    deadline = time.monotonic() + 240
    while needle not in err_path.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()[-2000:]
        time.sleep(0.05)
    return proc


#: (id, env var, value, the checkpoint on disk when the kill lands: (epoch, step_in_epoch) or None)
FAULTS = [
    # Paused after global step 1: the first checkpoint (after step 3) is not written yet.
    ("start", "COMPSCALE_TEST_PAUSE_AT_STEP", "1", None),
    # Step 5 of epoch 2 (global 13): the last checkpoint is the mid-epoch one after global step 12.
    ("mid-epoch", "COMPSCALE_TEST_PAUSE_AT_STEP", "13", (1, 4)),
    # Inside the write of the mid-epoch checkpoint of global step 9: the epoch-end one (global 8) is on disk.
    ("writing-mid-epoch-checkpoint", "COMPSCALE_TEST_PAUSE_IN_CHECKPOINT", "9", (1, 0)),
    # Inside the write of the epoch-end checkpoint (global 8): the mid-epoch one after step 6 is on disk.
    ("writing-epoch-end-checkpoint", "COMPSCALE_TEST_PAUSE_IN_CHECKPOINT", "8", (0, 6)),
]


@pytest.mark.slow
@pytest.mark.parametrize("var, value, on_disk", [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS])
def test_sigkill_then_resume_is_bit_exact(reference, tmp_path, var, value, on_disk):
    from compscale.train.checkpoint import load_checkpoint

    spec, ref_out, ref_result = reference
    out = tmp_path / "run"
    needle = "paused writing the checkpoint" if "CHECKPOINT" in var else "paused at step"
    proc = _run_until(_cmd(spec, out), {var: value}, f"{needle}", tmp_path / "killed.err")
    ckpt = out / "checkpoint.safetensors"
    before = ckpt.read_bytes() if ckpt.exists() else None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists()

    if on_disk is None:
        assert before is None
    else:  # the checkpoint on disk is the previous complete one, untouched by the killed write
        assert ckpt.read_bytes() == before
        state = load_checkpoint(ckpt)
        assert (state.meta["epoch"], state.meta["step_in_epoch"]) == on_disk
    stale = list(out.glob(".cs-*.tmp"))  # compscale.io's temporaries: .cs-TAG-RANDOM.tmp
    assert bool(stale) == ("CHECKPOINT" in var)  # the killed write left its (never renamed) temporary file

    resumed = subprocess.run(_cmd(spec, out, "--resume"), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    if on_disk is not None and on_disk != (0, 0):
        assert f"resuming at epoch {on_disk[0] + 1} step {on_disk[1]}" in resumed.stderr
    a, b = _weights(ref_out / "model.safetensors"), _weights(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    assert json.loads(resumed.stdout)["top1"] == ref_result["top1"]
    assert not list(out.glob(".*.tmp"))  # the resumed run cleared the killed write's leftover


# --- a full disk and a read-only folder -----------------------------------------------------------------


def _argv(spec: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    return ["train", str(spec), "--data", "digits", "--epochs", str(epochs), "--threads", "1", "--limit-train", "64",
            "--limit-test", "32", "--batch-size", "32", "--out", str(out), *extra]


def _train_one_epoch(tmp_path: Path, out: Path) -> Path:
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(TINY.as_dict()))
    assert main(_argv(spec, out, 1)) == 0
    return spec


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("compscale: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err
    return errors[0]


def _assert_checkpoint_intact(ckpt: Path, before: bytes) -> None:
    from compscale.train.checkpoint import load_checkpoint

    assert ckpt.read_bytes() == before
    state = load_checkpoint(ckpt)
    assert (state.meta["epoch"], state.meta["step_in_epoch"]) == (1, 0)
    assert not list(ckpt.parent.glob(".*.tmp"))


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return mount.returncode == 0


@pytest.mark.slow
def test_full_disk_real_tmpfs(tmp_path, capsys):
    """A real ENOSPC: the run's folder on a tmpfs with room for its files but not for a second checkpoint."""
    import shutil

    first = tmp_path / "first"
    spec = _train_one_epoch(tmp_path, first)
    size = sum(p.stat().st_size for p in first.iterdir())
    ckpt_size = (first / "checkpoint.safetensors").stat().st_size
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, f"size={size + ckpt_size // 2 + 64 * 1024}"):
        pytest.skip("mounting a tmpfs needs root (the simulated full disk below still runs)")
    try:
        out = disk / "run"
        shutil.copytree(first, out)
        before = (out / "checkpoint.safetensors").read_bytes()
        capsys.readouterr()
        rc = main(_argv(spec, out, 2, "--resume"))
        line = _one_error_line(capsys.readouterr().err)
        assert rc == EXIT_USER_ERROR
        assert "cannot write" in line and "checkpoint.safetensors" in line and "No space left on device" in line, line
        _assert_checkpoint_intact(out / "checkpoint.safetensors", before)
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_full_disk_simulated(tmp_path, capsys, monkeypatch):
    """ENOSPC as safetensors reports it (its own error type, not OSError), half the file written."""
    import safetensors.torch
    from safetensors import SafetensorError

    out = tmp_path / "run"
    spec = _train_one_epoch(tmp_path, out)
    ckpt = out / "checkpoint.safetensors"
    before = ckpt.read_bytes()
    real = safetensors.torch.save_file

    def full_disk(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as fh:  # what a full disk leaves: a cut-off file
            fh.truncate(os.path.getsize(filename) // 2)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    capsys.readouterr()
    rc = main(_argv(spec, out, 2, "--resume"))
    line = _one_error_line(capsys.readouterr().err)
    assert rc == EXIT_USER_ERROR
    assert line.startswith(f"compscale: error: cannot write {ckpt}: ") and "No space left on device" in line
    _assert_checkpoint_intact(ckpt, before)


@contextlib.contextmanager
def _read_only(folder: Path, monkeypatch):
    """Make ``folder`` read-only for this process: chmod (non-root), a read-only remount (root), or, where
    neither is possible, the EROFS the kernel would give, at the one place files are created."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield "chmod"
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True).returncode == 0:
        try:
            yield "remount"
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=True)
        return
    import tempfile

    real = tempfile.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    yield "simulated"


@pytest.mark.slow
def test_read_only_output_folder(tmp_path, capsys, monkeypatch):
    mounted = _mount_tmpfs(tmp_path / "disk", "size=8m")
    base = tmp_path / "disk" if mounted else tmp_path
    try:
        out = base / "run"
        spec = _train_one_epoch(tmp_path, out)
        ckpt = out / "checkpoint.safetensors"
        before = ckpt.read_bytes()
        target = base if mounted else out
        with _read_only(target, monkeypatch):
            capsys.readouterr()
            rc = main(_argv(spec, out, 2, "--resume"))
            line = _one_error_line(capsys.readouterr().err)
        assert rc == EXIT_USER_ERROR
        assert line.startswith(f"compscale: error: cannot write {out}/config.yaml: "), line
        assert "Read-only file system" in line or "Permission denied" in line, line
        _assert_checkpoint_intact(ckpt, before)
        assert not (out / "metrics.jsonl").read_text().count("\n") > 1  # nothing of epoch 2 recorded
    finally:
        if mounted:
            subprocess.run(["umount", str(tmp_path / "disk")], check=True)


def test_atomic_files_get_the_usual_permissions(tmp_path):
    """mkstemp's private 0o600 must not leak into exported models and reports: new files get 0o666 minus the
    umask, like open(); a replaced file keeps its own mode."""
    from compscale.io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.txt", "x")
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644
        (tmp_path / "kept.txt").write_text("old")
        os.chmod(tmp_path / "kept.txt", 0o640)
        atomic_write_text(tmp_path / "kept.txt", "new")
        assert (tmp_path / "kept.txt").stat().st_mode & 0o777 == 0o640
        assert (tmp_path / "kept.txt").read_text() == "new"
    finally:
        os.umask(old)
