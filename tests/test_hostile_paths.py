"""Hostile paths and files (issue 17): special output targets, two runs into one folder, image folders with
loops, FIFOs and decompression bombs, messages that could grow without bound, and another program's database.

Every CLI case checks the same promise: exit status 2, exactly one line on stderr starting
``compscale: error:``, no traceback, nothing lost (what was there before is unchanged byte for byte) and
nothing half-written (no temporary file left behind).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import stat
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from compscale.cli import EXIT_USER_ERROR, MESSAGE_LIMIT, error_line, main
from compscale.errors import UserError
from conftest import time_limit, tiny_spec_file

TRAIN = ["--data", "digits", "--epochs", "1", "--threads", "1", "--limit-train", "64", "--limit-test", "32",
         "--batch-size", "32"]


# --- helpers ---------------------------------------------------------------------------------------------


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code: int, err: str) -> str:
    """The one ``compscale: error:`` line of a refused command (exit 2, one line, no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == EXIT_USER_ERROR, err
    assert len(lines) == 1 and lines[0].startswith("compscale: error: "), err[-3000:]
    assert "Traceback" not in err
    return lines[0]


def snapshot(folder: Path) -> dict[str, object]:
    """Every entry under ``folder``: file bytes, folder marks, FIFOs and links by kind."""
    seen: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        mode = path.lstat().st_mode
        rel = str(path.relative_to(folder))
        if stat.S_ISREG(mode):
            seen[rel] = path.read_bytes()
        elif stat.S_ISLNK(mode):
            seen[rel] = ("link", os.readlink(path))
        else:
            seen[rel] = ("dir" if stat.S_ISDIR(mode) else "special", stat.S_IFMT(mode))
    return seen


def temporaries(folder: Path) -> list[str]:
    """Temporary files or folders anywhere under ``folder`` (compscale's ``.cs-*.tmp``, safetensors'
    ``.tmpXXXXXX``, mkstemp's)."""
    return [str(p) for p in folder.rglob("*") if ".tmp" in p.name]


HOLD = """
import signal, sys, time
from compscale.locks import output_lock
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # leave the with block: the lock is released and removed
with output_lock(sys.argv[1], sys.argv[2], target=sys.argv[3] or None):
    print("held", flush=True)
    time.sleep(300)
"""


@contextlib.contextmanager
def lock_held_elsewhere(folder: Path, what: str, target: Path | None = None):
    """Another process holding ``folder``'s lock (or ``target``'s); yields its PID."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), what, str(target or "")],
                            stdout=subprocess.PIPE, text=True)
    try:
        with time_limit(60):
            assert proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait()
        proc.stdout.close()


def bomb_png(path: Path, side: int = 100_000) -> None:
    """A valid PNG header claiming side × side pixels (10¹⁰: over Pillow's decompression-bomb limit), in a
    few dozen bytes: Pillow refuses it when opening."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def png(path: Path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((10, 12, 3), value, np.uint8)).save(path)


@pytest.fixture
def spec(tmp_path) -> str:
    return tiny_spec_file(tmp_path / "tiny.json", stages=2, head_channels=32)


# --- 1. outputs that are not regular files; names near 255 bytes; stale temporaries; modes -------------------


def test_export_never_replaces_a_fifo_or_a_folder(capsys, tmp_path, spec):
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "model.onnx")  # stands for /dev/null: a node a rename would replace
    (out / "folder.onnx").mkdir()
    before = snapshot(out)
    with time_limit(120):
        code, _, err = run_cli(capsys, "export", spec, "--format", "onnx", "--out", out / "model.onnx")
    assert "FIFO, not a regular file" in one_error_line(code, err)
    code, _, err = run_cli(capsys, "export", spec, "--format", "torchscript", "--out", out / "folder.onnx")
    assert "directory" in one_error_line(code, err)
    assert snapshot(out) == before and stat.S_ISFIFO((out / "model.onnx").lstat().st_mode)


@pytest.mark.parametrize("kind", ["fifo", "socket", "folder", "symlink-to-fifo"])
def test_atomic_writes_refuse_special_targets(kind):
    from compscale.io import atomic_write_text

    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # a socket's path must stay under 108 bytes
        folder = Path(short)
        target = folder / "t"
        if kind == "fifo":
            os.mkfifo(target)
        elif kind == "socket":
            sock = socket.socket(socket.AF_UNIX)
            sock.bind(str(target))
        elif kind == "folder":
            target.mkdir()
        else:
            os.mkfifo(folder / "real")
            target.symlink_to(folder / "real")
        before = snapshot(folder)
        with time_limit(20), pytest.raises(UserError, match="cannot write .*(not a regular file|is a folder)"):
            atomic_write_text(target, "x")
        assert snapshot(folder) == before
        if kind == "socket":
            sock.close()


def test_train_out_that_is_not_a_folder_is_refused(capsys, tmp_path, spec):
    os.mkfifo(tmp_path / "fifo")
    before = snapshot(tmp_path)
    with time_limit(120):
        code, _, err = run_cli(capsys, "train", spec, *TRAIN, "--out", tmp_path / "fifo")
    assert "not a folder" in one_error_line(code, err)
    assert snapshot(tmp_path) == before


def test_a_250_byte_name_exports_and_leaves_no_temporary(capsys, tmp_path, spec):
    name = "m" * 245 + ".onnx"
    assert len(name.encode()) == 250
    code, out, err = run_cli(capsys, "export", spec, "--format", "onnx", "--out", tmp_path / "x" / name)
    assert code == 0, err
    assert (tmp_path / "x" / name).stat().st_size > 1000
    assert os.listdir(tmp_path / "x") == [name]  # no temporary, no lock file


def test_a_failed_write_leaves_no_folder_it_created(capsys, tmp_path, spec):
    from compscale.io import atomic_path

    with pytest.raises(UserError, match="boom"), atomic_path(tmp_path / "new" / "deeper" / "f.txt") as tmp:
        tmp.write_text("half")
        raise UserError("boom")
    code, _, err = run_cli(capsys, "train", spec, *TRAIN[2:], "--data", tmp_path / "nowhere",
                           "--out", tmp_path / "runs" / "one")
    assert "not found" in one_error_line(code, err)
    assert sorted(os.listdir(tmp_path)) == ["tiny.json"]


KILLED_WRITER = """
import sys, time
from compscale.io import atomic_path, staging_folder
with staging_folder(sys.argv[1]) as stage, atomic_path(sys.argv[1]) as tmp:
    (stage / "part").write_text("half")
    tmp.write_text("half of the new file")
    print("writing", flush=True)
    time.sleep(300)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_stale_temporaries_of_a_killed_export_are_cleaned(capsys, tmp_path, spec, sig):
    target = tmp_path / "out" / "model.onnx"
    target.parent.mkdir()
    target.write_bytes(b"the previous export")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    with time_limit(60):
        assert proc.stdout.readline().strip() == "writing"
    # While the writer lives, its temporaries are locked: a write beside them leaves them alone.
    from compscale.io import atomic_write_text

    atomic_write_text(tmp_path / "out" / "other.txt", "x")
    assert len(temporaries(tmp_path / "out")) == 2
    proc.send_signal(sig)
    proc.wait()
    proc.stdout.close()
    assert target.read_bytes() == b"the previous export"  # the killed write changed nothing
    assert len(temporaries(tmp_path / "out")) == 2  # ... but left its temporary file and staging folder
    code, _, err = run_cli(capsys, "export", spec, "--format", "onnx", "--out", target)
    assert code == 0, err
    assert temporaries(tmp_path / "out") == []
    assert sorted(os.listdir(tmp_path / "out")) == ["model.onnx", "other.txt"]


def test_weights_and_checkpoints_get_the_usual_mode(tmp_path):
    import torch

    from compscale.models.weights import save_weights

    old = os.umask(0o027)
    try:
        save_weights({"w": torch.zeros(3)}, tmp_path / "new.safetensors")
        assert (tmp_path / "new.safetensors").stat().st_mode & 0o777 == 0o640
        os.umask(0o022)
        save_weights({"w": torch.zeros(3)}, tmp_path / "other.safetensors")
        assert (tmp_path / "other.safetensors").stat().st_mode & 0o777 == 0o644
        os.chmod(tmp_path / "new.safetensors", 0o600)  # a replaced file keeps its own mode
        save_weights({"w": torch.ones(3)}, tmp_path / "new.safetensors")
        assert (tmp_path / "new.safetensors").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert sorted(os.listdir(tmp_path)) == ["new.safetensors", "other.safetensors"]  # no safetensors .tmpXXXXXX


# --- 2. two runs into one folder -------------------------------------------------------------------------


def test_two_trainings_into_one_folder(capsys, tmp_path, spec):
    out = tmp_path / "run"
    env = {**os.environ, "COMPSCALE_TEST_PAUSE_AT_STEP": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "compscale", "train", spec, *TRAIN, "--checkpoint-steps", "1",
                             "--out", str(out)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        with time_limit(240):
            for line in proc.stderr:
                if "paused at step 0" in line:
                    break
            else:
                pytest.fail(f"the first run ended: {proc.wait()}")
        before = snapshot(out)
        for extra in (["--resume"], [], ["--overwrite"]):
            code, _, err = run_cli(capsys, "train", spec, *TRAIN, "--out", out, *extra)
            line = one_error_line(code, err)
            assert f"pid {proc.pid}" in line and "in use" in line, line
        assert snapshot(out) == before  # the first run's checkpoint and config untouched
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    # The holder died: its lock went with it, and its run resumes.
    code, out_text, err = run_cli(capsys, "train", spec, *TRAIN, "--out", out, "--resume", "--json")
    assert code == 0, err
    assert json.loads(out_text)["epochs"] == 1 and not temporaries(out)
    assert not (out / ".compscale.lock").exists()


def test_rerun_without_resume_is_refused_and_overwrite_replaces(capsys, tmp_path, spec):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", spec, *TRAIN, "--out", out)
    assert code == 0, err
    before = snapshot(out)
    code, _, err = run_cli(capsys, "train", spec, *TRAIN, "--seed", "3", "--out", out)
    line = one_error_line(code, err)
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    assert snapshot(out) == before
    code, _, err = run_cli(capsys, "train", spec, *TRAIN, "--seed", "3", "--out", out, "--overwrite")
    assert code == 0, err
    assert "seed: 3" in (out / "config.yaml").read_text()
    assert (out / "model.safetensors").read_bytes() != before["model.safetensors"]
    assert sorted(os.listdir(out)) == sorted(before)


@pytest.mark.parametrize("command", ["search", "sweep", "demo", "export"])
def test_a_locked_output_refuses_every_writer(capsys, tmp_path, spec, command):
    out = tmp_path / "out"
    argv = {
        "search": ["search", "--base", spec, "--data", "digits", "--grid-step", "0.5", "--epochs", "1",
                   "--limit-train", "64", "--out", out],
        "sweep": ["sweep", "--base", spec, "--data", "digits", "--phis", "0", "--seeds", "1", "--strategies",
                  "compound", "--epochs", "1", "--limit-train", "64", "--out", out],
        "demo": ["demo", "--quick", "--data", "digits", "--out", out],
        "export": ["export", spec, "--format", "onnx", "--out", out / "m.onnx"],
    }[command]
    target = out / "m.onnx" if command == "export" else None
    with lock_held_elsewhere(out, "holder-test", target) as pid:
        before = snapshot(out)
        with time_limit(120):
            code, _, err = run_cli(capsys, *argv)
        line = one_error_line(code, err)
        assert f"compscale holder-test (pid {pid})" in line, line
        assert snapshot(out) == before
    assert not out.exists()  # the holder made the folder for its lock and removed both


def test_locks_nest_in_one_process_and_free_their_folder(tmp_path):
    from compscale.locks import output_lock

    with output_lock(tmp_path / "a" / "b", "outer"):
        with output_lock(tmp_path / "a" / "b", "inner"):
            assert (tmp_path / "a" / "b" / ".compscale.lock").read_text().startswith(f"{os.getpid()} outer")
        assert (tmp_path / "a" / "b" / ".compscale.lock").exists()
    assert not (tmp_path / "a").exists()


# --- 6. image folders ------------------------------------------------------------------------------------


def _image_folder(root: Path) -> None:
    for cls in ("cat", "dog"):
        for i in range(6):
            png(root / cls / f"{i}.png", 20 * i + (cls == "dog"))


def test_symlink_loops_add_no_image_and_never_cross_the_split(tmp_path):
    from compscale.data import load_dataset

    root = tmp_path / "images"
    _image_folder(root)
    os.symlink("..", root / "cat" / "up")  # to the root: every class again
    os.symlink(".", root / "dog" / "self")  # to itself
    os.symlink("../cat", root / "dog" / "cats")  # another class's folder
    (root / "dog" / "deep").mkdir()
    os.symlink("../..", root / "dog" / "deep" / "loop")  # a second loop, further down
    os.symlink("0.png", root / "cat" / "again.png")  # the same file under two names
    with time_limit(60):
        bundle = load_dataset(str(root), 16, "none")
    assert len(bundle.train) + len(bundle.test) == 12
    assert sorted(int(y) for _, y in bundle.train.samples + bundle.test.samples) == [0] * 6 + [1] * 6
    real = [{os.path.realpath(p) for p, _ in part.samples} for part in (bundle.train, bundle.test)]
    assert not real[0] & real[1] and len(real[0]) + len(real[1]) == 12


def test_a_fifo_named_png_is_skipped_unopened_and_counted(capsys, tmp_path, spec):
    from compscale.data import load_dataset

    root = tmp_path / "images"
    _image_folder(root)
    os.mkfifo(root / "cat" / "x.png")
    with time_limit(60):
        bundle = load_dataset(str(root), 16, "none")
    assert len(bundle.train) + len(bundle.test) == 12
    notes = " ".join(bundle.notes)
    assert "skipped 1 file(s)" in notes and "not regular files" in notes


def test_decompression_bombs_are_skipped_or_one_line(capsys, tmp_path):
    import torch

    from compscale.data import load_dataset
    from compscale.models.registry import build_model, resolve_spec
    from compscale.models.weights import save_weights
    from conftest import tiny_spec

    root = tmp_path / "images"
    _image_folder(root)
    bomb_png(root / "dog" / "bomb.png")
    bundle = load_dataset(str(root), 16, "none")
    assert len(bundle.train) + len(bundle.test) == 12
    assert "decompression-bomb" in " ".join(bundle.notes) and "bomb.png" in " ".join(bundle.notes)

    only = tmp_path / "bombs"
    for cls in ("a", "b"):
        (only / cls).mkdir(parents=True)
        bomb_png(only / cls / "huge.png")
    before = snapshot(tmp_path)
    with time_limit(120):
        code, _, err = run_cli(capsys, "train", tiny_spec_file(tmp_path / "t.json", stages=2), *TRAIN[2:],
                               "--data", only, "--out", tmp_path / "run")
    line = one_error_line(code, err)
    assert "no readable images" in line and "huge.png" in line and "decompression-bomb" in line

    torch.manual_seed(0)
    save_weights(build_model(resolve_spec(tiny_spec(stages=2), 10, 1)), tmp_path / "w.safetensors")
    code, _, err = run_cli(capsys, "predict", tmp_path / "t.json", "--weights", tmp_path / "w.safetensors",
                           "--image", only / "a" / "huge.png")
    line = one_error_line(code, err)
    assert "huge.png is too large to decode" in line
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k not in ("t.json", "w.safetensors")} == before


# --- 8. one line always ----------------------------------------------------------------------------------


def _config(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _alias_bomb() -> bytes:
    """The "billion laughs": ten levels of ten aliases, 10¹⁰ strings once expanded, a few kB of YAML."""
    lines = ['lol: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    body = "\n  ".join(f"- {line.split(': ', 1)[1]}" for line in lines)
    return f"epochs:\n  {body}\n".encode()


@pytest.mark.parametrize("name, data, expected", [
    ("nested.yaml", b"epochs: " + b"[" * 50_000 + b"]" * 50_000 + b"\n", "nested too deeply"),
    ("latin1.yaml", "model: caf\xe9\n".encode("latin-1"), "not UTF-8"),
    ("bomb.yaml", _alias_bomb(), "config key 'epochs' must be int"),
    ("5mb.yaml", b"epochs: '" + b"x" * 5_000_000 + b"'\n", "larger than 1024 kB"),
    ("long-string.yaml", b"epochs: '" + b"x" * 900_000 + b"'\n", "config key 'epochs' must be int"),
    ("long-list.yaml", b"epochs: [" + b"1, " * 100_000 + b"1]\n", "config key 'epochs' must be int"),
    ("long-name.yaml", b"data: " + b"y" * 900_000 + b"\n", "File name too long|1 to 4096 characters"),
])
def test_hostile_configs_give_one_short_line(capsys, tmp_path, name, data, expected):
    path = _config(tmp_path, name, data)
    with time_limit(120):
        code, _, err = run_cli(capsys, "train", "--config", path, "--out", tmp_path / "run")
    line = one_error_line(code, err)
    assert re.search(expected, line) and len(line) < 1100, line[:300]
    assert sorted(os.listdir(tmp_path)) == [name]


@pytest.mark.parametrize("name, data", [
    ("nested.json", b'{"family": "efficientnet", "stages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("nested.yaml", b"family: efficientnet\nstages: " + b"[" * 50_000 + b"]" * 50_000 + b"\n"),
    ("latin1.json", b'{"family": "efficientnet\xe9"}'),
    ("5mb.yaml", b"family: efficientnet\nstages: [" + b"1, " * 1_700_000 + b"1]\n"),
])
def test_hostile_spec_files_give_one_line(capsys, tmp_path, name, data):
    path = _config(tmp_path, name, data)
    with time_limit(120):
        code, _, err = run_cli(capsys, "profile", path)
    line = one_error_line(code, err)
    assert "model spec" in line and len(line) < 1100, line[:300]


def test_from_search_files_give_one_line(capsys, tmp_path, spec):
    for data in (b"\xff\xfe not utf-8", b"[" * 100_000 + b"]" * 100_000):
        path = _config(tmp_path, "search.json", data)
        code, _, err = run_cli(capsys, "sweep", "--base", spec, "--data", "digits", "--from-search", path,
                               "--out", tmp_path / "out")
        assert "is not a search.json" in one_error_line(code, err)
    assert not (tmp_path / "out").exists()


def test_a_data_loader_workers_error_is_its_last_line(capsys, tmp_path, spec):
    root = tmp_path / "images"
    _image_folder(root)
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        root / "cat" / "cut.jpg", quality=90)
    data = (root / "cat" / "cut.jpg").read_bytes()
    (root / "cat" / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])  # passes verify(), fails decoding
    with time_limit(240):
        code, _, err = run_cli(capsys, "train", spec, *TRAIN[2:], "--data", root, "--workers", "1", "--augment",
                               "none", "--batch-size", "4", "--out", tmp_path / "run")
    # Training had started (its progress lines come first): the error is the one last line.
    lines = [line.strip() for line in re.split(r"[\r\n]+", err) if line.strip()]
    errors = [line for line in lines if line.startswith("compscale: error:")]
    assert code == EXIT_USER_ERROR and len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err
    line = errors[0]
    assert "cut.jpg is not a readable image" in line and "DataLoader" not in line and "File " not in line, line


def test_error_line_caps_and_unwraps():
    wrapped = ("Caught UserError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\n    raise UserError("y")\ncompscale.errors.UserError: x.png is bad\n')
    assert error_line(UserError(wrapped)) == "x.png is bad"
    assert error_line(UserError("a\nb")) == "a\\nb"
    long = error_line(UserError("z" * 10_000_000))
    assert len(long) == MESSAGE_LIMIT and long.endswith("…")


def test_the_last_resort_guard_is_precise(capsys, monkeypatch, tmp_path):
    import compscale.commands.core as core

    def deep_yaml(args):
        import yaml

        return yaml.safe_load("[" * 50_000 + "]" * 50_000)

    def a_bug(args):
        def recurse(n):
            return recurse(n + 1)

        return recurse(0)

    monkeypatch.setattr(core, "cmd_models", deep_yaml)
    code, _, err = run_cli(capsys, "models")
    assert "nested too deeply" in one_error_line(code, err)
    monkeypatch.setattr(core, "cmd_models", a_bug)
    with pytest.raises(RecursionError):  # a genuine bug keeps its traceback
        main(["models"])


# --- 9. another program's database -----------------------------------------------------------------------


def _foreign_db(path: Path) -> bytes:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada'), ('grace')")
        conn.commit()
    return path.read_bytes()


@pytest.mark.parametrize("command", ["worker", "sweep"])
def test_a_foreign_sqlite_database_is_refused_untouched(capsys, tmp_path, spec, command):
    db = tmp_path / "app.db"
    before = _foreign_db(db)
    url = f"sqlite:///{db}"
    argv = {"worker": ["worker", "--storage", url, "--study", "sweep", "--out", tmp_path / "w"],
            "sweep": ["sweep", "--base", spec, "--data", "digits", "--phis", "0", "--seeds", "1", "--strategies",
                      "compound", "--epochs", "1", "--limit-train", "64", "--storage", url, "--out", tmp_path / "s"]}
    code, _, err = run_cli(capsys, *argv[command])
    line = one_error_line(code, err)
    assert "another program's database" in line and "untouched" in line, line
    assert db.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["app.db", "tiny.json"]  # no journal, no output folder


def test_a_file_that_is_not_a_database_is_refused_untouched(capsys, tmp_path):
    db = tmp_path / "notes.db"
    db.write_text("my notes, not a database\n" * 100)
    code, _, err = run_cli(capsys, "worker", "--storage", f"sqlite:///{db}", "--study", "x", "--out", tmp_path / "w")
    assert "is not a SQLite database" in one_error_line(code, err)
    assert db.read_text() == "my notes, not a database\n" * 100


def test_an_optuna_database_is_still_accepted(tmp_path):
    """The check refuses other programs' tables only: a storage made by compscale opens as before."""
    from compscale.jobs.queue import open_storage

    url = f"sqlite:///{tmp_path / 'study.db'}"
    open_storage(url)
    assert open_storage(url) is not None
