"""Video-object propagation modes: a preset's ``mode:`` key selects one, one driver runs it for DAVIS and VIP.

- ``topk`` (CRW, VFS, DINO; ``PropagationConfig``): each position attends to the top-k affinities in a local
  window of the first and the most recent frames; trunk ``resnet18_s8_l3`` unless ``--backbone`` says otherwise,
  fed the input the encoder was trained on.
- ``mast`` (MAST's memory; ``MastMemoryConfig``): long- and short-term references with a ROI search for the far
  ones; trunk ``resnet18_mast``, always fed Lab.

A mode's ``propagate(encode_frame, first_mask, num_frames, stride, cfg)`` yields the ``(H, W)`` long label map
of every frame, frame 0 first; :func:`propagate_video` reads and checks the frames, encodes each once, and
handles the identity baseline, so a benchmark (``davis.py``, ``vip.py``) only says where frames and labels are.
A preset without ``mode:`` is top-k (``configs/eval/crw.yaml``, ``vfs.yaml`` and ``dino.yaml`` say it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vidssl.engine.config import ConfigError, apply_overrides, did_you_mean, from_dict, read_yaml
from vidssl.eval.encoders import DEFAULT_BACKBONE, FrameEncoder, build_encoder
from vidssl.eval.mast_memory import MastMemoryConfig, mast_propagate
from vidssl.eval.propagation import PropagationConfig, propagate_labels, resize_frame
from vidssl.nn.colour import InputSpace
from vidssl.paths import REPO_ROOT

__all__ = ["MODES", "EvalConfig", "FrameInputError", "Mode", "load_preset", "mode_of", "preset_encoder",
           "preset_path", "propagate_video"]

EvalConfig = PropagationConfig | MastMemoryConfig
Propagate = Callable[[Callable[[int], Tensor], Tensor, int, int, Any], Iterator[Tensor]]


@dataclass(frozen=True)
class Mode:
    """One propagation mode: its config type, the trunk ``random`` / torchvision weights get unless
    ``--backbone`` says otherwise, the input it feeds (None: the encoder's own) and its propagation."""

    name: str
    title: str
    config: type[EvalConfig]
    backbone: str
    input: InputSpace | None
    propagate: Propagate


MODES: dict[str, Mode] = {
    "topk": Mode("topk", "local top-k propagation", PropagationConfig, DEFAULT_BACKBONE, None, propagate_labels),
    "mast": Mode("mast", "MAST's memory", MastMemoryConfig, "resnet18_mast", "lab", mast_propagate),
}


class FrameInputError(ValueError):
    """A frame that cannot be propagated; ``str()`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


def preset_path(path: str | Path) -> Path:
    """``path``, or the repository's preset of that relative name (``configs/eval/crw.yaml`` from anywhere)."""
    path = Path(path)
    if not path.is_file() and not path.is_absolute() and (REPO_ROOT / path).is_file():
        return REPO_ROOT / path
    return path


def load_preset(path: str | Path | None, overrides: Sequence[str] = ()) -> EvalConfig:
    """The config of the preset at ``path`` (None: CRW's defaults) with ``key=value`` overrides, typed by its
    ``mode:`` (default ``topk``); an unknown mode or key is a ConfigError naming the nearest valid one."""
    data = apply_overrides(read_yaml(preset_path(path)) if path is not None else {}, overrides)
    name = data.get("mode", "topk")
    if name not in MODES:
        hint = did_you_mean(str(name), list(MODES))
        raise ConfigError(f"{path}: mode: {name!r} is not one of {list(MODES)}{hint}")
    return from_dict(MODES[name].config, data)


def mode_of(cfg: EvalConfig) -> Mode:
    """The mode a config belongs to."""
    return MODES[cfg.mode]


def preset_encoder(
    cfg: EvalConfig, spec: str, device: torch.device | str = "cpu", backbone: str | None = None, seed: int = 0,
    layers: int | None = None, input: str = "auto", where: str | Path = "the preset", stride: int | None = None,
) -> FrameEncoder:
    """``--encoder spec`` as the mode of ``cfg`` needs it: its default trunk unless ``backbone`` is given, and
    its input (MAST's memory feeds Lab; asking for another is a ValueError naming ``where``, the preset)."""
    mode = mode_of(cfg)
    if mode.input is not None and input not in ("auto", mode.input):
        raise ValueError(f"--input {input}: {where} is {mode.title} (mode: {mode.name}), which feeds its encoder "
                         f"{mode.input}; use a top-k preset such as configs/eval/crw.yaml for {input}")
    return build_encoder(spec, device, backbone or mode.backbone, seed, layers, mode.input or input, stride)


def propagate_video(
    encoder: FrameEncoder, frames: Sequence[Path], first_mask: np.ndarray, cfg: EvalConfig,
    read_frame: Callable[[Path], np.ndarray],
) -> Iterator[np.ndarray]:
    """Yield the ``(H, W)`` uint8 label map of every frame with the mode of ``cfg`` (frame 0: ``first_mask``),
    streaming. ``read_frame(path)`` gives ``(H, W, 3)`` uint8 RGB; every frame is read and encoded once, in
    order, and must have the mask's size (else :class:`FrameInputError`). The identity baseline
    (``encoder.encode is None``) copies the first mask."""
    if first_mask.ndim != 2:
        raise ValueError(f"propagate_video: first_mask must be (H, W), got {first_mask.shape}")
    size = first_mask.shape
    encode = encoder.encode
    if encode is None:
        yield from (first_mask for _ in frames)
        return

    def encode_frame(t: int) -> Tensor:
        image = read_frame(frames[t])
        if image.shape[:2] != size:
            problem = f"frame is {image.shape[1]}x{image.shape[0]}, the first mask {size[1]}x{size[0]}"
            raise FrameInputError(frames[t], problem)
        return encode(resize_frame(image, cfg.frame_resize) if isinstance(cfg, PropagationConfig) else image)

    mask = torch.from_numpy(first_mask.astype(np.int64))
    for labels in mode_of(cfg).propagate(encode_frame, mask, len(frames), encoder.stride, cfg):
        yield labels.to("cpu", torch.uint8).numpy()
