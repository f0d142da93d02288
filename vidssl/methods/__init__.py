"""Self-supervised methods, one file each. ``METHODS`` is the registry the CLI and tests iterate over.

A method is an ``nn.Module`` with:
- ``Config``: a dataclass of its hyper-parameters (filled from the ``model:`` section of a run config);
- ``input``: ``"video"`` (clips from raw videos) or ``"images"`` (still images, delivered as 1-frame clips);
- ``__init__(cfg: Config)``;
- ``sampler() -> Callable[[int, np.random.Generator], np.ndarray]``: frame indices for one sample (video);
- ``forward(batch) -> (loss, metrics)``: ``batch["video"]`` is uint8 ``(B, C, T, H, W)`` on the device; the
  method augments on the device itself; ``metrics`` is a dict of floats or 0-dim tensors for logging;
- ``after_step(step)``: optional work after the optimiser step (EMA, queue), never branched on by the loop;
- ``encoder() -> vidssl.models.ResNet``: the backbone to export and evaluate;
- ``encoder_input``: optional, the input the encoder was trained on: ``"rgb"`` (ImageNet-normalised RGB, the
  default) or ``"lab"`` (MAST-normalised Lab). Checkpoints record it and ``vidssl eval`` feeds frames that way.
"""

from __future__ import annotations

from typing import Any

from vidssl.methods.corrflow import CorrFlow
from vidssl.methods.crw import CRW
from vidssl.methods.mast import MAST, MASTStage2
from vidssl.methods.moco import MoCo
from vidssl.methods.timecycle import TimeCycle

METHODS: dict[str, Any] = {
    "moco": MoCo,
    "crw": CRW,
    "mast": MAST,
    "mast_stage2": MASTStage2,
    "corrflow": CorrFlow,
    "timecycle": TimeCycle,
}
