"""Reading and writing DAVIS-style indexed (palette) PNG label maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map: ``(256, 3)`` uint8, label i -> RGB by bit interleaving."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label in range(256):
        c, r, g, b = label, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[label] = (r, g, b)
    return palette


class LabelFileError(ValueError):
    """A label PNG that cannot be used; ``str()`` names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def read_indexed_png(path: str | Path) -> np.ndarray:
    """An indexed PNG as ``(H, W)`` uint8 label ids. RGB or other modes are refused with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise LabelFileError(path, "file not found")
    try:
        with Image.open(path) as image:
            mode = image.mode
            array = np.array(image)
    except (OSError, SyntaxError) as exc:  # PIL raises both for corrupt files
        raise LabelFileError(path, f"cannot read PNG ({exc})") from exc
    if mode not in ("P", "L", "1"):
        raise LabelFileError(path, f"expected an indexed (palette) PNG of label ids, got mode {mode!r}")
    return array.astype(np.uint8)


def write_indexed_png(path: str | Path, labels: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write ``(H, W)`` integer labels (0..255) as an indexed PNG with the DAVIS palette."""
    if labels.ndim != 2:
        raise ValueError(f"{path}: labels must be (H, W), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"{path}: label ids must lie in 0..255")
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette((davis_palette() if palette is None else palette).reshape(-1).tolist())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
