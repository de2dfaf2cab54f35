"""ImageNet-LT (Liu et al. 2019, arXiv:1904.05160) from an ImageNet folder and its split lists.

``--set imagenet_root=DIR --set lt_lists=DIR``: ``DIR/ImageNet_LT_{train,val,test}.txt``
hold lines ``train/n01440764/n01440764_10026.JPEG 0`` (path relative to the ImageNet root,
class id). Images are decoded with Pillow when a batch is drawn (the training set is 115.8k
images, too large to hold), resized so the short side is ``resize`` (256) and centre-cropped
to ``crop`` (224); training-time flips and shifts are done on tensors by the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.errors import UsageError

SPLITS = {"train": "ImageNet_LT_train.txt", "val": "ImageNet_LT_val.txt",
          "test": "ImageNet_LT_test.txt"}


@dataclass
class ImageList:
    """A file-backed image set with the :class:`bench.vision.data.ImageArrays` interface."""

    root: Path
    paths: list[str]
    labels: np.ndarray
    classes: list[str]
    resize: int = 256
    crop: int = 224
    ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ids = self.ids or list(self.paths)

    def subset(self, indices: np.ndarray) -> ImageList:
        return ImageList(self.root, [self.paths[i] for i in indices], self.labels[indices],
                         self.classes, self.resize, self.crop)

    def batch(self, indices: list[int]) -> np.ndarray:
        return np.stack([self._load(self.paths[i]) for i in indices])

    def _load(self, rel: str) -> np.ndarray:
        from PIL import Image

        path = self.root / rel
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                w, h = img.size
                scale = self.resize / min(w, h)
                img = img.resize((max(self.crop, round(w * scale)),
                                  max(self.crop, round(h * scale))), Image.BILINEAR)
                w, h = img.size
                left, top = (w - self.crop) // 2, (h - self.crop) // 2
                img = img.crop((left, top, left + self.crop, top + self.crop))
                return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
        except OSError as exc:
            raise UsageError(f"{path}: cannot read image ({exc}); check --set imagenet_root"
                             ) from None


def imagenet_lt(root: str | Path, lists: str | Path, split: str, *, resize: int = 256,
                crop: int = 224) -> ImageList:
    """One split of ImageNet-LT; one-line errors naming the list file and line."""
    list_file = Path(lists) / SPLITS[split]
    if not list_file.is_file():
        raise UsageError(f"{list_file}: not found; --set lt_lists must be the folder with "
                         f"{', '.join(SPLITS.values())}")
    paths, labels = [], []
    for n, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise UsageError(f"{list_file}:{n}: expected '<relative path> <class id>', got "
                             f"{line[:80]!r}")
        paths.append(parts[0])
        labels.append(int(parts[1]))
    if not paths:
        raise UsageError(f"{list_file}: no images listed")
    labels_arr = np.asarray(labels, dtype=np.int64)
    classes = [str(c) for c in range(int(labels_arr.max()) + 1)]
    return ImageList(Path(root), paths, labels_arr, classes, resize, crop)
