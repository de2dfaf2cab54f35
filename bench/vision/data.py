"""Image data for the long-tailed suite, read directly from files (no torchvision).

- :func:`read_idx`: the IDX format of (Fashion-)MNIST, gzipped or raw.
- :func:`longtail_counts` / :func:`longtail_indices`: the exponential profile of Cao et al.
  2019 (LDAM, arXiv:1906.07413) used for CIFAR-LT: class ``i`` keeps
  ``int(n_max · imbalance^(−i / (C − 1)))`` images, the first ones of a seeded shuffle of
  that class (the same images for every run: the dataset is fixed, only training varies).
- :func:`shot_groups`: many / medium / few classes by training count. The standard split
  (> 100, 20–100, < 20 training images; Liu et al. 2019) needs many classes; with ten
  classes (Fashion-MNIST-LT: 6000 ... 60 images) it would put 8 classes in "many", 2 in
  "medium" and none in "few", so sets with fewer than 30 classes use thirds of the classes
  sorted by training count instead (10 classes: 3 many / 4 medium / 3 few).
- :func:`cifar100`: the CIFAR-100 python pickles (``train``, ``test``).
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import UsageError

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
              0x0E: ">f8"}
STANDARD_MANY, STANDARD_FEW = 100, 20


@dataclass
class ImageArrays:
    """Images as uint8 ``[N, C, H, W]`` and int64 labels ``[N]``, with item ids."""

    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    classes: list[str]

    def subset(self, indices: np.ndarray) -> ImageArrays:
        return ImageArrays(self.images[indices], self.labels[indices],
                           [self.ids[i] for i in indices], self.classes)

    def batch(self, indices: list[int]) -> np.ndarray:
        """uint8 images [b, C, H, W] (file-backed sets load them here)."""
        return self.images[indices]


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (``.gz`` or raw); one-line error if malformed."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such IDX file")
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise UsageError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise UsageError(f"{path}: IDX header says shape {shape} ({expected} bytes) but the "
                         f"file holds {len(raw) - header}; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(
        dtype.newbyteorder("="))


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]


def fashion_mnist(root: str | Path, split: str) -> ImageArrays:
    """Fashion-MNIST ``train`` (60k) or ``test`` (10k) from the IDX files in ``root``."""
    prefix = {"train": "train", "test": "t10k"}[split]
    images = read_idx(Path(root) / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(Path(root) / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise UsageError(f"{root}: {images.shape[0]} {split} images but {labels.shape[0]} labels")
    return ImageArrays(images[:, None], labels, [f"{split}-{i}" for i in range(len(labels))],
                       FASHION_CLASSES)


# What a CIFAR pickle may reference: numpy arrays and their dtypes, nothing else.
_CIFAR_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray",
                  "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}


class _CifarUnpickler(pickle.Unpickler):
    """The CIFAR format is Python pickles, which can run code when loaded; this unpickler
    refuses every global but numpy's array reconstruction, so a tampered file in a
    user-given folder is an error, not code execution."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of the CIFAR format")
        return super().find_class(module, name)


def _load_cifar_pickle(path: Path) -> object:
    try:
        with path.open("rb") as handle:
            return _CifarUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise UsageError(f"{path}: not a CIFAR-100 pickle ({exc}); --set cifar_root must be "
                         "the extracted cifar-100-python folder") from None


def cifar100(root: str | Path, split: str) -> ImageArrays:
    """CIFAR-100 ``train`` / ``test`` from the python pickles in ``root`` (fine labels),
    read with an unpickler that accepts numpy arrays only (:class:`_CifarUnpickler`)."""
    path = Path(root) / split
    if not path.is_file():
        raise UsageError(f"{path}: not found; --set cifar_root must be the extracted "
                         "cifar-100-python folder (files train, test, meta)")
    data = _load_cifar_pickle(path)
    try:
        images = np.asarray(data[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(data[b"fine_labels"], dtype=np.int64)
    except (KeyError, ValueError, TypeError) as exc:
        raise UsageError(f"{path}: not a CIFAR-100 pickle ({exc})") from None
    classes = [str(i) for i in range(100)]
    meta = Path(root) / "meta"
    if meta.is_file():
        classes = [c.decode() for c in _load_cifar_pickle(meta)[b"fine_label_names"]]
    return ImageArrays(images, labels, [f"{split}-{i}" for i in range(len(labels))], classes)


def longtail_counts(n_max: int, num_classes: int, imbalance: float) -> list[int]:
    """Images kept per class: ``int(n_max · imbalance^(−i/(C−1)))`` for class i = 0..C−1."""
    if num_classes < 2 or imbalance < 1 or n_max < 1:
        raise UsageError("long-tail profile needs >= 2 classes, imbalance >= 1, n_max >= 1")
    return [int(n_max * imbalance ** (-i / (num_classes - 1))) for i in range(num_classes)]


def longtail_indices(labels: np.ndarray, counts: list[int], seed: int = 0) -> np.ndarray:
    """Indices of a long-tailed subset: per class c, ``counts[c]`` of a seeded shuffle."""
    rng = np.random.RandomState(seed)
    chosen = []
    for cls, count in enumerate(counts):
        idx = np.flatnonzero(labels == cls)
        if len(idx) < count:
            raise UsageError(f"class {cls} has {len(idx)} images, the profile asks for {count}")
        rng.shuffle(idx)
        chosen.append(np.sort(idx[:count]))
    return np.concatenate(chosen)


def shot_groups(train_counts: list[int]) -> dict[str, list[int]]:
    """Class ids per group ``many`` / ``medium`` / ``few`` (see the module docstring)."""
    n = len(train_counts)
    if n >= 30:
        return {"many": [c for c, k in enumerate(train_counts) if k > STANDARD_MANY],
                "medium": [c for c, k in enumerate(train_counts)
                           if STANDARD_FEW <= k <= STANDARD_MANY],
                "few": [c for c, k in enumerate(train_counts) if k < STANDARD_FEW]}
    order = sorted(range(n), key=lambda c: (-train_counts[c], c))
    third = n // 3
    return {"many": sorted(order[:third]), "medium": sorted(order[third:n - third]),
            "few": sorted(order[n - third:])}


def shot_rule(num_classes: int) -> str:
    return ("standard: many > 100, medium 20-100, few < 20 training images"
            if num_classes >= 30 else
            "thirds of the classes by training count (fewer than 30 classes)")


def per_class_accuracy(correct: np.ndarray, labels: np.ndarray, num_classes: int
                       ) -> list[float | None]:
    """Top-1 per class (None for a class absent from the test set)."""
    return [float(correct[labels == c].mean()) if (labels == c).any() else None
            for c in range(num_classes)]


def group_accuracy(per_class: list[float | None], classes: list[int]) -> float | None:
    """Mean of per-class accuracies in a group (the test set is balanced, so this is also
    the group's top-1); None for an empty group."""
    values = [per_class[c] for c in classes if per_class[c] is not None]
    return float(np.mean(values)) if values else None


def describe(arrays: ImageArrays) -> dict[str, Any]:
    """Class counts of a set, for the result's config."""
    return {"images": int(len(arrays.labels)),
            "per_class": np.bincount(arrays.labels, minlength=len(arrays.classes)).tolist()}
