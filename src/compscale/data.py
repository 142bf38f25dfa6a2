"""Datasets for training and transfer: built-in ones by name, and any folder of images.

* ``fashion-mnist`` — the Debian package ``dataset-fashion-mnist`` (60k/10k, 28×28 grayscale, 10 classes).
  The gzip'd IDX files are decoded once with numpy and kept in memory as one uint8 tensor.
* ``digits`` — scikit-learn's bundled 8×8 digits (1,797 images), split 80/20, stratified, with a fixed seed.
* a path — a folder in ImageFolder layout (``root/class/xxx.png``), or ``root/train`` + ``root/val|test``.

Two decisions keep data loading off the critical path and the models honest:

* **Channels.** Grayscale data keeps its one channel: a model trained from scratch on it is built with
  ``in_chans=1`` (the stem conv sees one plane, no wasted multiply-adds). When pretrained 3-channel weights
  are fine-tuned on grayscale data, :class:`BatchPreparer` repeats the plane three times instead.
* **Resolution is a scaling dimension.** Images are resized to the model's resolution. For the small
  in-memory datasets the resize runs per *batch* on whole tensors (on the training device), not per sample;
  folders of images are decoded and resized per sample in the loader workers.

Augmentations are torchvision ``transforms.v2`` (RandomResizedCrop, flips, AutoAugment, RandAugment). Each
sample's augmentation is seeded from (seed, epoch, sample index), so it does not depend on the number of
loader workers, on the number of processes, or on whether the run was resumed half way through an epoch.
"""

from __future__ import annotations

import functools
import gzip
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate

from compscale.errors import UserError, echo, first_line, shorten

FASHION_MNIST_DIR = Path(os.environ.get("COMPSCALE_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
AUGMENTS = ("auto", "none", "flip", "crop-flip", "autoaugment", "randaugment")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
BUILTIN = ("fashion-mnist", "digits")


# --- datasets --------------------------------------------------------------------------------------------


def _seeded(transform: Callable, x: Any, seed: int | None) -> Any:
    """Apply a random transform with the global torch RNG seeded for this one sample (then restored)."""
    if seed is None:
        return transform(x)
    with torch.random.fork_rng(devices=[]):
        # The CPU generator only (torch.manual_seed would also seed, slowly, every other backend).
        torch.default_generator.manual_seed(seed)
        return transform(x)


class TensorImages(Dataset):
    """Images held in memory as one uint8 tensor (N, C, H, W) with int64 labels.

    An index may be ``i`` or ``(i, seed)``; with a seed, the per-sample ``transform`` (an augmentation on the
    native-size uint8 image) runs seeded by it. Without a transform a whole batch is one tensor gather.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, seed = index if isinstance(index, tuple) else (index, None)
        x = self.images[i]
        if self.transform is not None and seed is not None:
            x = _seeded(self.transform, x, seed)
        return x, self.labels[i]

    def __getitems__(self, indices: Sequence[int | tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.tensor([i[0] if isinstance(i, tuple) else i for i in indices], dtype=torch.long)
        if self.transform is None or not indices or not isinstance(indices[0], tuple):
            return self.images[idx], self.labels[idx]
        if isinstance(self.transform, BatchFlip):  # the whole batch at once: no per-sample transform call
            return self.transform.batch(self.images[idx], [i[1] for i in indices]), self.labels[idx]
        return torch.stack([self[i][0] for i in indices]), self.labels[idx]


class BatchFlip:
    """A horizontal flip with probability ½ whose coin is the lowest bit of the sample's augmentation seed:
    as reproducible as the seeded per-sample transforms (a function of seed, epoch and index only), and one
    tensor operation per batch instead of a seeded transform per image."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # one image, for the per-sample path (__getitem__)
        return x.flip(-1) if self._coin(torch.default_generator.initial_seed()) else x

    @staticmethod
    def _coin(seed: int) -> bool:
        return bool(seed & 1)

    def batch(self, images: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        flip = torch.tensor([self._coin(s) for s in seeds], dtype=torch.bool)
        return torch.where(flip[:, None, None, None], images.flip(-1), images)


class FolderImages(Dataset):
    """Samples (path, label) decoded with PIL (converted to RGB) and transformed to a uint8 tensor."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable) -> None:
        self.samples, self.transform = list(samples), transform
        self.labels = torch.tensor([s[1] for s in self.samples], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        from PIL import Image

        i, seed = index if isinstance(index, tuple) else (index, None)
        path, label = self.samples[i]
        try:  # verify() at scan time does not decode: a truncated JPEG only fails here
            with Image.open(path) as img:
                img = img.convert("RGB")
        except Image.DecompressionBombError as err:  # the file changed since the scan
            raise UserError(f"{path} is too large to decode ({first_line(err)}); remove or replace it") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise UserError(f"{path} is not a readable image ({first_line(err)}); remove or replace it") from None
        return _seeded(self.transform, img, seed), label


def collate(batch: Any) -> Any:
    """Pass through a batch :class:`TensorImages` already stacked; stack anything else."""
    if isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[0], torch.Tensor):
        return batch
    return default_collate(batch)


@dataclass
class DataBundle:
    """A train/test pair with what a model needs to know about it."""

    name: str
    train: Dataset
    test: Dataset
    classes: tuple[str, ...]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    native_size: int | None  # side of the in-memory images (None: resized per sample, to the resolution)
    augment: str = "none"
    notes: list[str] = field(default_factory=list)  # skipped files, empty classes: for the log

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# --- built-in datasets -----------------------------------------------------------------------------------


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): magic (0, 0, dtype 0x08 = uint8, ndim), big-endian dims, then data.
    Read-only: callers copy it."""
    try:
        version = path.stat()
    except OSError as err:
        raise UserError(f"cannot read {path}: {err}") from None
    return _decode_idx(str(path), version.st_mtime_ns, version.st_size)


@functools.lru_cache(maxsize=8)
def _decode_idx(path: str, mtime_ns: int, size: int) -> np.ndarray:
    """:func:`_read_idx` once per file version per process: a study's worker trains job after job on the same
    files, and decompressing Fashion-MNIST takes ~0.4 s each time (``mtime_ns`` and ``size`` key a changed file)."""
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an uint8 IDX file")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UserError(f"{path} is truncated: {data.size} bytes of data for shape {dims}")
    return data.reshape(dims)  # frombuffer of bytes: read-only, so the cache cannot be changed


def _fashion_mnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    files = {f"{split}-{kind}": FASHION_MNIST_DIR / f"{split}-{kind}-ubyte.gz"
             for split in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")}
    missing = [p for p in files.values() if not p.is_file()]
    if missing:
        raise UserError(f"Fashion-MNIST not found ({missing[0]} is missing); install it with "
                        "`apt-get install dataset-fashion-mnist` (or `make setup`)")
    arrays = {k: torch.from_numpy(_read_idx(p).copy()) for k, p in files.items()}
    return (arrays["train-images-idx3"].unsqueeze(1), arrays["train-labels-idx1"].long(),
            arrays["t10k-images-idx3"].unsqueeze(1), arrays["t10k-labels-idx1"].long())


def _digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    # Pixel values are 0..16: stretch them to 0..255 so every dataset reaches the model as uint8.
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(images, d.target, test_size=0.2, random_state=0, stratify=d.target)
    return (torch.from_numpy(x_tr), torch.from_numpy(y_tr).long(), torch.from_numpy(x_te),
            torch.from_numpy(y_te).long())


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = images.double() / 255.0
    return tuple(x.mean((0, 2, 3)).tolist()), tuple(x.std((0, 2, 3)).clamp_min(1e-3).tolist())


def _tensor_augment(augment: str, size: int) -> Callable | None:
    """The per-sample augmentation of a native-size uint8 image (the batch resize comes later)."""
    if augment == "none":
        return None
    if augment == "flip":
        return BatchFlip()
    from torchvision.transforms import v2

    ops: list[Callable] = []
    if augment != "flip":
        ops.append(v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True))
    ops.append(v2.RandomHorizontalFlip())
    if augment == "autoaugment":
        ops.append(v2.AutoAugment())
    elif augment == "randaugment":
        ops.append(v2.RandAugment())
    return v2.Compose(ops)


def _limit(images: torch.Tensor, labels: torch.Tensor, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random subset of ``limit`` samples (the same for every seed, so runs stay comparable)."""
    if limit is None or limit >= len(labels):
        return images, labels
    keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:limit].sort().values
    return images[keep], labels[keep]


def _builtin(name: str, augment: str, limit_train: int | None, limit_test: int | None = None,
             holdout: int | None = None) -> DataBundle:
    if name == "fashion-mnist":
        x_tr, y_tr, x_te, y_te = _fashion_mnist()
        classes, mean, std = FASHION_MNIST_CLASSES, (0.2860,), (0.3530,)
        augment = "flip" if augment == "auto" else augment
    else:
        x_tr, y_tr, x_te, y_te = _digits()
        classes = tuple(str(i) for i in range(10))
        mean, std = _channel_stats(x_tr)
        augment = "none" if augment == "auto" else augment  # a mirrored digit is another glyph
    notes = []
    if holdout is not None:
        # Model selection (step 1 of the search) must not look at the test set: evaluate on a fixed
        # held-out part of the training set instead, and train on the rest.
        if holdout >= len(y_tr):
            raise UserError(f"--holdout {holdout} leaves no training images ({len(y_tr)} in all)")
        order = torch.randperm(len(y_tr), generator=torch.Generator().manual_seed(1))
        x_te, y_te = x_tr[order[:holdout].sort().values], y_tr[order[:holdout].sort().values]
        keep = order[holdout:].sort().values
        x_tr, y_tr = x_tr[keep], y_tr[keep]
        notes.append(f"evaluating on {holdout} images held out of the training set, not on the test set")
    x_tr, y_tr = _limit(x_tr, y_tr, limit_train)
    x_te, y_te = _limit(x_te, y_te, limit_test)
    size = x_tr.shape[-1]
    train = TensorImages(x_tr, y_tr, _tensor_augment(augment, size))
    return DataBundle(name, train, TensorImages(x_te, y_te), classes, x_tr.shape[1], mean, std, size, augment, notes)


# --- folders of images -----------------------------------------------------------------------------------


def _dir_key(path: str | os.PathLike) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the directory ``path`` resolves to, or None when it is not a readable directory."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _class_files(top: Path, seen_dirs: set[tuple[int, int]], reserved: set[tuple[int, int]]) -> list[str]:
    """The paths of the non-hidden files under ``top`` (symlinks followed), in ``os.walk`` order sorted by
    folder. Each real directory is read once (by device and inode): a symlink loop, or a link to a folder
    already read (another class's, the root), adds nothing."""
    found: list[tuple[str, list[str]]] = []
    stack = [str(top)]
    while stack:
        folder = stack.pop()
        key = _dir_key(folder)
        if key is None or key in seen_dirs or (key in reserved and folder != str(top)):
            continue
        seen_dirs.add(key)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        files, folders = [], []
        for entry in entries:
            if _is_dir_entry(entry):
                folders.append(entry.path)
            elif not entry.name.startswith("."):
                files.append(entry.name)
        found.append((folder, files))
        stack.extend(reversed(folders))  # depth first, in name order
    return [os.path.join(folder, name) for folder, files in sorted(found) for name in files]


def _is_dir_entry(entry: os.DirEntry) -> bool:
    """Whether ``entry`` is a directory, symlinks followed (a dangling or looping link is not)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _scan_folder(root: Path) -> tuple[list[str], list[tuple[str, int]], int, list[str], list[str]]:
    """(classes, valid samples, number of skipped files, empty classes, notes on what was skipped) of an
    ImageFolder-layout directory.

    Each real directory is scanned once and each real file taken once (device and inode), whatever symlinks
    lead to them; files that are not regular (a FIFO named ``x.png``, sockets, devices) are skipped without
    being opened; images over Pillow's decompression-bomb limit are skipped like unreadable ones. All three are
    counted in the skipped files, and the notes say which."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    classes = sorted(e.name for e in os.scandir(root) if _is_dir_entry(e) and not e.name.startswith("."))
    if not classes:
        raise UserError(f"{root} has no class folders (expected ImageFolder layout: {root}/CLASS/IMAGE)")
    reserved = {k for k in [_dir_key(root)] + [_dir_key(root / c) for c in classes] if k is not None}
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    samples, skipped, empty, special, bombs = [], 0, [], 0, []
    for label, cls in enumerate(classes):
        count = 0
        for path in _class_files(root / cls, seen_dirs, reserved):
            try:
                st = os.stat(path)
            except OSError:  # a dangling symlink
                skipped += 1
                continue
            if not stat.S_ISREG(st.st_mode):
                special += 1
                skipped += 1
                continue
            if (st.st_dev, st.st_ino) in seen_files:
                continue  # the same file again (a symlink or hard link to it): one sample, one split
            seen_files.add((st.st_dev, st.st_ino))
            try:  # verify() checks the header and structure without a full decode
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    with Image.open(path) as img:
                        img.verify()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                bombs.append(path)
                skipped += 1
                continue
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
                skipped += 1
                continue
            samples.append((path, label))
            count += 1
        if count == 0:
            empty.append(cls)
    notes = []
    if special:
        notes.append(f"{special} of the skipped files are not regular files (FIFOs, sockets, devices): not opened")
    if bombs:
        notes.append(f"{len(bombs)} of the skipped files exceed Pillow's decompression-bomb limit of "
                     f"{Image.MAX_IMAGE_PIXELS} pixels, e.g. {shorten(bombs[0])}")
    return classes, samples, skipped, empty, notes


def _folder_transforms(resolution: int, augment: str) -> tuple[Callable, Callable]:
    from torchvision.transforms import v2

    ops: list[Callable] = []
    if augment == "flip":
        ops += [v2.Resize(resolution, antialias=True), v2.CenterCrop(resolution), v2.RandomHorizontalFlip()]
    elif augment != "none":
        ops += [v2.RandomResizedCrop(resolution, antialias=True), v2.RandomHorizontalFlip()]
        if augment == "autoaugment":
            ops.append(v2.AutoAugment())
        elif augment == "randaugment":
            ops.append(v2.RandAugment())
    else:
        ops += [v2.Resize(resolution, antialias=True), v2.CenterCrop(resolution)]
    train = v2.Compose(ops + [v2.PILToTensor()])
    # The usual evaluation crop: resize the short side to resolution / 0.875, then centre-crop.
    test = v2.Compose([v2.Resize(int(round(resolution / 0.875)), antialias=True), v2.CenterCrop(resolution),
                       v2.PILToTensor()])
    return train, test


def _folder(root: Path, resolution: int, augment: str, limit_train: int | None) -> DataBundle:
    augment = "crop-flip" if augment == "auto" else augment
    notes: list[str] = []
    split_dirs = [root / n for n in ("val", "test", "valid", "validation") if (root / n).is_dir()]
    if (root / "train").is_dir() and split_dirs:
        classes, train_samples, skipped, empty, details = _scan_folder(root / "train")
        test_classes, test_samples, skipped_te, _, details_te = _scan_folder(split_dirs[0])
        if test_classes != classes:
            raise UserError(f"{root}/train and {split_dirs[0]} have different class folders")
        skipped += skipped_te
        details += details_te
    else:
        classes, samples, skipped, empty, details = _scan_folder(root)
        # A deterministic 80/20 split within each class (at least one training image per class).
        rng = np.random.default_rng(0)
        train_samples, test_samples = [], []
        for label in range(len(classes)):
            mine = [s for s in samples if s[1] == label]
            rng.shuffle(mine)
            n_test = len(mine) // 5
            test_samples += mine[:n_test]
            train_samples += mine[n_test:]
    if skipped:
        notes.append(f"skipped {skipped} file(s) that are not readable images")
        notes += details
    if empty:
        notes.append(f"{len(empty)} empty class folder(s): {', '.join(empty)}")
    if not train_samples:
        raise UserError(f"no readable images in {root}"
                        + (f" ({skipped} unreadable file(s) skipped)" if skipped else "")
                        + (f"; {details[0]}" if details else ""))
    if not test_samples:
        notes.append("no test images (too few per class for a split): evaluating on the training images")
        test_samples = list(train_samples)
    if limit_train is not None and limit_train < len(train_samples):
        keep = np.sort(np.random.default_rng(0).permutation(len(train_samples))[:limit_train])
        train_samples = [train_samples[i] for i in keep]
    train_tf, test_tf = _folder_transforms(resolution, augment)
    return DataBundle(root.name or str(root), FolderImages(train_samples, train_tf),
                      FolderImages(test_samples, test_tf),
                      tuple(classes), 3, IMAGENET_MEAN, IMAGENET_STD, None, augment, notes)


def load_dataset(name: str, resolution: int, augment: str = "auto", limit_train: int | None = None,
                 limit_test: int | None = None, holdout: int | None = None) -> DataBundle:
    """A built-in dataset by name (``fashion-mnist``, ``digits``) or an ImageFolder directory.

    ``resolution`` is the side the model sees; ``augment`` one of :data:`AUGMENTS` (``auto``: flips for
    Fashion-MNIST, none for digits, random-resized-crop + flip for folders); ``limit_train`` keeps a fixed
    random subset of the training set and ``limit_test`` of the test set; ``holdout`` (built-in datasets) evaluates
    on that many images held out of the training set instead of the test set (for model selection).
    """
    if augment not in AUGMENTS:
        raise UserError(f"unknown augmentation {augment!r}; use one of {', '.join(AUGMENTS)}")
    for flag, value in (("--limit-train", limit_train), ("--limit-test", limit_test), ("--holdout", holdout)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be a positive number of images, got {value}")
    if name in BUILTIN:
        return _builtin(name, augment, limit_train, limit_test, holdout)
    if holdout is not None:
        raise UserError("--holdout works with the built-in datasets; give a folder with train/ and val/ instead")
    root = Path(name).expanduser()
    try:
        found = root.exists()
    except OSError as err:  # a name too long for the file system, a permission: one line, not a traceback
        raise UserError(f"dataset {echo(name)}: {err.strerror or err}") from None
    if not found:
        raise UserError(f"dataset {echo(name)} not found: not a built-in ({', '.join(BUILTIN)}) and no such folder")
    if not root.is_dir():
        raise UserError(f"dataset path {root} is not a folder (expected ImageFolder layout: CLASS/IMAGE files)")
    return _folder(root, resolution, augment, limit_train)


# --- from uint8 batches to model inputs ------------------------------------------------------------------


class BatchPreparer:
    """uint8 (B, C, h, w) → float (B, in_chans, r, r) on the device: scale, resize, normalise, channels.

    Resizing whole batches here (bilinear; antialiased only when shrinking) is what keeps the small
    in-memory datasets from being loader-bound: one interpolate call per batch instead of B PIL resizes.
    """

    def __init__(self, bundle: DataBundle, resolution: int, in_chans: int, device: torch.device,
                 channels_last: bool = False) -> None:
        if bundle.channels not in (1, in_chans) and not (bundle.channels == 3 and in_chans == 1):
            raise UserError(f"the model takes {in_chans} input channel(s), the data has {bundle.channels}")
        self.resolution, self.in_chans, self.device = resolution, in_chans, device
        self.channels_last = channels_last
        mean, std = torch.tensor(bundle.mean), torch.tensor(bundle.std)
        self.luma = None
        if len(mean) == 1 and in_chans > 1:  # grayscale data into a 3-channel (pretrained) model: repeat the plane
            mean, std = mean.expand(in_chans), std.expand(in_chans)
        elif len(mean) == 3 and in_chans == 1:  # colour data into a grayscale model: ITU-R 601 luma, as PIL's "L"
            self.luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1).to(device)
            mean, std = ((self.luma.cpu().flatten() * mean).sum(0, keepdim=True),
                         (self.luma.cpu().flatten() * std).sum(0, keepdim=True))
        # x/255 then (x - mean)/std, folded into one multiply-add.
        self.scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1).to(device)
        self.shift = (-mean / std).view(1, -1, 1, 1).to(device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.luma is not None:
            x = (x.to(torch.get_default_dtype()) * self.luma).sum(1, keepdim=True)
        elif x.shape[1] != self.in_chans:
            x = x.expand(-1, self.in_chans, -1, -1)
        x = x.to(torch.get_default_dtype())  # float32, unless a caller asked for float64 (exactness tests)
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            shrink = x.shape[-1] > self.resolution
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False,
                              antialias=shrink)
        x = torch.addcmul(self.shift, x, self.scale)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
