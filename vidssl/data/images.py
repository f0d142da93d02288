"""Still images: the one list of image suffixes, reading an image, and the ImageFolder layout.

An ImageFolder tree is ``root/<class>/<image>`` (class names sorted give the label indices), as
torchvision's ``ImageFolder`` and the CIFAR layout of the shared data. ``ImageFolderDataset``
(``vidssl.data.datasets``) serves it to training as 1-frame clips; :func:`load_image_folder` reads it whole
for the probes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vidssl.data.errors import VideoError

__all__ = ["IMAGE_SUFFIXES", "image_folder", "is_frame_folder", "is_image", "load_image_folder", "read_image"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # still images and the frames of frame folders


def is_image(path: str | Path) -> bool:
    """Whether ``path``'s suffix is an image's (case-insensitive); says nothing of its content."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_frame_folder(folder: Path) -> bool:
    """Whether ``folder`` directly holds at least one image file (a video stored as frames)."""
    return any(is_image(p) and p.is_file() for p in folder.iterdir())


def read_image(path: str | Path) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB; an unreadable file is a ``VideoError`` naming it."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's errors for missing, corrupt or foreign files
        raise VideoError(path, f"cannot read image ({exc})") from exc


def image_folder(root: str | Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """The ``(image path, label)`` pairs of an ImageFolder tree, by class then file name, and the class names."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder not found")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root}: no class sub-folders (expected the ImageFolder layout root/<class>/<image>)")
    samples = [(f, label) for label, name in enumerate(classes) for f in sorted((root / name).iterdir())
               if f.is_file() and is_image(f)]
    if not samples:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders")
    return samples, classes


def _resize_centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    img = Image.fromarray(image)
    scale = size / min(img.size)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.BILINEAR)
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)))


def load_image_folder(root: str | Path, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every image of an ImageFolder tree as uint8 ``(N, 3, H, W)``, labels ``(N,)`` and the class names.

    ``size=None`` needs all images the same size (CIFAR); otherwise each image is resized (shorter side to
    ``size``, bilinear) and centre-cropped to ``size x size``. An unreadable image is an error naming it.
    """
    samples, classes = image_folder(root)
    images: list[np.ndarray] = []
    for path, _ in samples:
        arr = read_image(path)
        if size is not None:
            arr = _resize_centre_crop(arr, size)
        if images and arr.shape != images[0].shape:
            raise ValueError(f"{path}: size {arr.shape[1]}x{arr.shape[0]} differs from the first image's "
                             f"{images[0].shape[1]}x{images[0].shape[0]}; pass a size to resize")
        images.append(arr)
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
    return stacked, torch.tensor([label for _, label in samples], dtype=torch.long), classes
