"""MAST's test-time memory: the ``mast`` propagation mode (``vidssl.eval.modes``, ``mode: mast`` in a preset).

Lai, Lu & Xie, "MAST: A Memory-Augmented Self-supervised Tracker", CVPR 2020 (https://arxiv.org/abs/2002.07793),
the authors' ``models/colorizer.py`` and ``benchmark.py``. To predict frame t the memory holds the long-term
references {0, 5} and the short-term references {t-1, t-3, t-5} (those that exist), with hard labels. Each
target position attends to a (2R+1)^2 window (R = 12 at test: 25x25 cells at stride 4) in every reference,
all windows in one softmax. For a reference more than 15 frames back the window is not centred on the
position itself but on a region of interest found by a coarse search: a 25x25 window dilated by
``min(4, distance // 15 + 1)``, whose softmax gives the expected displacement; the fine window is then read
around it with bilinear sampling.

The copy is ``vidssl.nn.local_attention`` (the one MAST trains with): tiles of targets against the windows
they see, never the dense ``(hw)^2`` matrix, so memory is bounded by the tile; only the referenced frames'
features and label maps are kept. The authors' test needs about 22 GB of GPU memory; this one runs on a CPU.

The defaults do what the released code does, checked on the same features by ``tests/test_reference_mast.py``;
four of its choices have vidssl's alternative as a named option:

- ``temperature``: the code's logits are raw dot products (1). vidssl's ``mast`` trains with logits scaled by
  ``1 / sqrt(C)`` (newer PyTorch needs it to converge), which ``temperature: null`` gives at test time.
- ``outside``: the code's windows read zero features and zero labels past the border, which still take a
  share of the softmax (``zero``: weight ``exp(0)`` each, also in the coarse search, whose mean displacement
  counts them); ``exclude`` leaves them out.
- ``memory_labels``: the code keeps every 4th pixel (``[::4, ::4]``, from the top-left) of the full-size mask
  (``pixels``): the ground truth for frame 0, the bilinearly upsampled arg-max for a prediction. Under
  ``align_corners=False`` upsampling that pixel reads 0.39 of its own cell and 0.61 of those above and to the
  left, so a convex object's top-left corner cell leaves the memory every frame (a test shows it). ``cells``
  takes frame 0's label at each cell's centre pixel and a prediction's as the arg-max of its copy per cell.
- ``roi_values``: the code reads every searched reference's labels around the ROI of the *last* one searched
  (one ``offset0`` variable, overwritten in the search loop: ``last``); when frames 0 and 5 are both more than
  ``roi_after`` frames back, frame 0's labels are read around frame 5's ROI. ``own`` reads each around its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vidssl.engine.config import ConfigError
from vidssl.nn.local_attention import Outside, Reference, local_attention, roi_dilation, roi_offsets

__all__ = ["MastMemoryConfig", "mast_propagate", "mast_references"]


# ----------------------------------------------------------------------------------------------------------
# The memory's frames


def mast_references(t: int, long_term: Sequence[int] = (0, 5), short_term: Sequence[int] = (1, 3, 5)) -> list[int]:
    """The memory for target frame ``t >= 1``: the long-term frames before t and ``t - k`` for k in
    ``short_term`` (those > 0), sorted, without repeats (the authors' ``benchmark.py``, ``--ref 0``)."""
    if t < 1:
        raise ValueError(f"mast_references: the target must be frame 1 or later, got {t}")
    return sorted({x for x in long_term if x <= t - 1} | {t - k for k in short_term if t - k > 0})


# ----------------------------------------------------------------------------------------------------------
# DAVIS propagation


@dataclass
class MastMemoryConfig:
    """MAST's test-time memory (``configs/eval/mast.yaml``); the defaults are the authors' ``benchmark.py``."""

    mode: Literal["mast"] = "mast"
    long_term: tuple[int, ...] = (0, 5)
    short_term: tuple[int, ...] = (1, 3, 5)  # every 2nd frame back
    radius: int = 12  # 25x25 window (``MAST.R = 12`` at test)
    roi_after: int = 15  # ROI search for references more than 15 frames back (``dil_int``)
    search_radius: int = 12  # coarse window 25x25 (``memory_patch_R``)
    max_dilation: int = 4
    temperature: float | None = 1.0  # logits = <f_t, f_r> / temperature (the code's raw dot product); None: sqrt(C)
    outside: Outside = "zero"  # window positions past the border: zero features and labels in the softmax
    memory_labels: Literal["pixels", "cells"] = "pixels"  # every stride-th pixel of the full-size mask
    roi_values: Literal["last", "own"] = "last"  # searched references' labels around the last one's ROI
    tile: int = 16  # target tile side in feature cells: speed and memory only, results do not depend on it

    def __post_init__(self) -> None:
        for key in ("radius", "roi_after", "search_radius", "max_dilation", "tile"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be at least 1, got {getattr(self, key)}")
        if self.temperature is not None and self.temperature <= 0:
            raise ConfigError(f"temperature: must be positive, got {self.temperature}")
        for key, allowed in (("outside", ("zero", "exclude")), ("memory_labels", ("pixels", "cells")),
                             ("roi_values", ("last", "own"))):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key}: must be one of {list(allowed)}, got {getattr(self, key)!r}")
        if min(self.long_term, default=0) < 0 or min(self.short_term, default=1) < 1 or not self.short_term:
            raise ConfigError("long_term must be >= 0 and short_term non-empty and >= 1")


def mast_propagate(
    encode_frame: Callable[[int], Tensor], first_mask: Tensor, num_frames: int, stride: int, cfg: MastMemoryConfig
) -> Iterator[Tensor]:
    """Propagate the first frame's hard labels through a video with MAST's memory, streaming.

    ``encode_frame(t)`` gives frame t's ``(C, h, w)`` features; ``first_mask`` is the ``(H, W)`` long label map
    of frame 0. Yields ``(H, W)`` long label maps for frames 0 .. num_frames - 1 (frame 0: ``first_mask``):
    the copy at feature resolution, bilinearly upsampled, arg-max (``benchmark.py``). Only the frames some later
    target references are kept (features and one-hot labels at feature resolution, ``cfg.memory_labels``).
    """
    if first_mask.dim() != 2:
        raise ValueError(f"mast_propagate: first_mask must be (H, W), got {tuple(first_mask.shape)}")
    size = (int(first_mask.shape[0]), int(first_mask.shape[1]))
    k = int(first_mask.max()) + 1
    yield first_mask
    memory: dict[int, tuple[Tensor, Tensor]] = {}  # frame -> (features (C, h, w), labels (h, w) long)

    def encode(t: int) -> Tensor:  # float32, or float64 when the encoder gives it (the reference test's precision)
        x = encode_frame(t)
        return x if x.dtype == torch.float64 else x.float()

    feat0 = encode(0)
    h, w = feat0.shape[-2:]
    if (h, w) != (-(-size[0] // stride), -(-size[1] // stride)):
        raise ValueError(f"mast_propagate: mask {size} at stride {stride} needs the features' grid "
                         f"{-(-size[0] // stride)}x{-(-size[1] // stride)}, got {h}x{w}")
    pixels = cfg.memory_labels == "pixels"  # every stride-th pixel from the top-left, else each cell's centre
    if pixels:
        lab0 = first_mask.to(feat0.device)[::stride, ::stride]
    else:  # the pixel nearest each cell's centre; a last, partial cell (ceil grid) reads its last pixel
        rows = (torch.arange(h) * stride + stride // 2).clamp(max=size[0] - 1)
        cols = (torch.arange(w) * stride + stride // 2).clamp(max=size[1] - 1)
        lab0 = first_mask[rows[:, None], cols[None, :]].to(feat0.device)
    memory[0] = (feat0, lab0)
    scale = 1.0 / (cfg.temperature if cfg.temperature is not None else math.sqrt(feat0.shape[0]))
    out = cfg.outside
    for t in range(1, num_frames):
        feat = encode(t)
        if feat.shape != feat0.shape:
            raise ValueError(f"frame {t}: features {tuple(feat.shape)} differ from frame 0's {tuple(feat0.shape)}")
        refs: list[Reference] = []
        for r in mast_references(t, cfg.long_term, cfg.short_term):
            f_r, l_r = memory[r]
            onehot = F.one_hot(l_r.long(), k).permute(2, 0, 1)[None].to(feat.dtype)  # (1, K, h, w)
            offset = None
            if t - r > cfg.roi_after:
                dil = roi_dilation(t - r, cfg.roi_after, cfg.max_dilation)
                offset = roi_offsets(feat[None], f_r[None], dil, cfg.search_radius, scale, out)
            refs.append(Reference(f_r[None], onehot, offset))
        searched = [r.offset for r in refs if r.offset is not None]
        if cfg.roi_values == "last" and len(searched) > 1:
            refs = [r if r.offset is None else r._replace(value_offset=searched[-1]) for r in refs]
        soft = local_attention(feat[None], refs, cfg.radius, scale, cfg.tile, out)  # (1, K, h, w)
        mask = F.interpolate(soft, size=size, mode="bilinear", align_corners=False)[0].argmax(0)
        yield mask
        memory[t] = (feat, mask[::stride, ::stride] if pixels else soft[0].argmax(0))  # hard labels, feature grid
        # a later target u > t references long-term frames and frames >= u - max(short_term)
        for old in [x for x in memory if x not in cfg.long_term and x < t + 1 - max(cfg.short_term)]:
            del memory[old]
