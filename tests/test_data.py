"""Datasets: Fashion-MNIST from the Debian package, digits, ImageFolder directories, batch preparation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from compscale import data as D
from compscale.errors import UserError
from compscale.train.distributed import DistInfo, GlobalBatchSampler

needs_fashion = pytest.mark.skipif(not (D.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                                   reason="dataset-fashion-mnist not installed (make setup-test installs it)")


@needs_fashion
def test_fashion_mnist_decodes_the_idx_files():
    b = D.load_dataset("fashion-mnist", resolution=32)
    assert len(b.train) == 60000 and len(b.test) == 10000
    assert b.train.images.shape == (60000, 1, 28, 28) and b.train.images.dtype == torch.uint8
    assert b.channels == 1 and b.num_classes == 10 and b.classes[9] == "Ankle boot"
    assert torch.bincount(b.train.labels).tolist() == [6000] * 10
    assert torch.bincount(b.test.labels).tolist() == [1000] * 10
    # The published statistics of the training set (mean 0.2860, std 0.3530).
    x = b.train.images.double() / 255
    assert abs(x.mean().item() - 0.2860) < 5e-4 and abs(x.std().item() - 0.3530) < 5e-4
    small = D.load_dataset("fashion-mnist", resolution=32, limit_train=5000)
    assert len(small.train) == 5000 and len(small.test) == 10000


def test_fashion_mnist_missing_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(D, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist") as err:
        D.load_dataset("fashion-mnist", resolution=32)
    assert "\n" not in str(err.value)


def test_digits_split_is_stratified_and_deterministic():
    a, b = D.load_dataset("digits", 32), D.load_dataset("digits", 32)
    assert (len(a.train), len(a.test)) == (1437, 360)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.train.labels, b.train.labels)
    counts = torch.bincount(a.test.labels).tolist()
    assert min(counts) >= 35 and max(counts) <= 37  # 20 % of each class (~180 images per class)
    assert a.train.images.max() == 255 and a.augment == "none"


def _png(path: Path, value: int, size=(10, 12), mode="RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).convert(mode).save(path)


def test_image_folder_skips_corrupt_files_and_reports_empty_classes(tmp_path):
    for i in range(5):
        _png(tmp_path / "cat" / f"{i}.png", 10 * i)
        _png(tmp_path / "dog" / f"{i}.jpg", 200 - 10 * i, mode="L")  # grayscale files become RGB
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "dog" / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    b = D.load_dataset(str(tmp_path), resolution=16, augment="none")
    assert b.classes == ("cat", "dog", "empty") and b.channels == 3
    assert (len(b.train), len(b.test)) == (8, 2)  # 4 + 4 train, 1 + 1 test per class
    assert "skipped 2 file(s)" in " ".join(b.notes) and "empty" in " ".join(b.notes)
    x, y = b.train[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8
    # train/ + val/ layout
    for split in ("train", "val"):
        for cls in ("a", "b"):
            _png(tmp_path / "tv" / split / cls / "0.png", 50)
    tv = D.load_dataset(str(tmp_path / "tv"), resolution=8)
    assert (len(tv.train), len(tv.test)) == (2, 2)


def test_image_folder_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        D.load_dataset(str(tmp_path / "missing"), 32)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("no image")
    with pytest.raises(UserError, match="no readable images .*1 unreadable"):
        D.load_dataset(str(tmp_path), 32)
    with pytest.raises(UserError, match="no class folders"):
        D.load_dataset(str(tmp_path / "a"), 32)
    with pytest.raises(UserError, match="unknown augmentation"):
        D.load_dataset("digits", 32, augment="mixup")


def test_batch_preparer_resizes_whole_batches_and_normalises():
    b = D.load_dataset("digits", 32)
    prep = D.BatchPreparer(b, 32, 1, torch.device("cpu"))
    x, _ = b.train.__getitems__(list(range(16)))
    out = prep(x)
    assert out.shape == (16, 1, 32, 32) and out.dtype == torch.float32
    # Normalised with the training set's statistics: the whole training set has mean ~0 and std ~1 at 8 px.
    full = D.BatchPreparer(b, 8, 1, torch.device("cpu"))(b.train.images)
    assert abs(full.mean().item()) < 1e-4 and abs(full.std().item() - 1) < 1e-3
    # Grayscale into a 3-channel (pretrained) model: the plane is repeated.
    rgb = D.BatchPreparer(b, 32, 3, torch.device("cpu"), channels_last=True)(x)
    assert rgb.shape == (16, 3, 32, 32) and torch.equal(rgb[:, 0], rgb[:, 2])
    assert rgb.is_contiguous(memory_format=torch.channels_last)


def test_augmentation_is_a_function_of_the_sample_seed():
    b = D.load_dataset("digits", 32, augment="randaugment")
    a1, _ = b.train[(3, 1234)]
    a2, _ = b.train[(3, 1234)]
    a3, _ = b.train[(3, 99)]
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)
    plain, _ = b.train[3]
    assert torch.equal(plain, b.train.images[3])


def test_global_batches_do_not_depend_on_the_number_of_processes():
    one = GlobalBatchSampler(100, 8, DistInfo(), seed=3)
    two = [GlobalBatchSampler(100, 8, DistInfo(rank=r, world_size=2), seed=3) for r in range(2)]
    for s in [one, *two]:
        s.set_epoch(2)
    idx1 = [i for i, _ in one]
    shards = [[i for i, _ in s] for s in two]
    assert len(idx1) == 96 and len(set(idx1)) == 96  # 12 full batches; the last 4 images dropped
    for step in range(12):
        assert idx1[8 * step : 8 * step + 8] == shards[0][4 * step : 4 * step + 4] + shards[1][4 * step : 4 * step + 4]
    one.set_epoch(3)
    assert [i for i, _ in one] != idx1  # a new order each epoch
    one.set_epoch(2, start_step=5)
    assert [i for i, _ in one] == idx1[40:]  # resuming half way through the epoch
    with pytest.raises(UserError, match="not divisible"):
        GlobalBatchSampler(100, 7, DistInfo(world_size=2), seed=0)


def test_holdout_and_test_limit_for_model_selection():
    from compscale.data import load_dataset

    full = load_dataset("digits", 32)
    held = load_dataset("digits", 32, holdout=300, limit_test=100)
    assert len(held.train) == len(full.train) - 300 and len(held.test) == 100
    # Held-out images come out of the training set (none is trained on), not from the test set.
    train_imgs = {bytes(held.train.images[i].numpy()) for i in range(len(held.train))}
    full_train = {bytes(full.train.images[i].numpy()) for i in range(len(full.train))}
    held_imgs = [bytes(held.test.images[i].numpy()) for i in range(len(held.test))]
    assert all(h in full_train for h in held_imgs)
    assert sum(h in train_imgs for h in held_imgs) <= 2  # digits has a few identical glyphs
    assert len(load_dataset("digits", 32, limit_test=50).test) == 50
    with pytest.raises(UserError, match="leaves no training images"):
        load_dataset("digits", 32, holdout=5000)
    with pytest.raises(UserError, match="--holdout must be a positive"):
        load_dataset("digits", 32, holdout=0)
