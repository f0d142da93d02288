"""Self-supervised methods, one file each, and the ``Method`` protocol the training loop is typed against.

``METHODS`` is the registry the CLI and tests iterate over (key = the ``method:`` of a run config). A method
is an ``nn.Module`` keeping :class:`Method`; subclassing :class:`vidssl.methods.base.SSLMethod` gives the
defaults. ``docs/architecture.md`` walks through adding one.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

from torch import Tensor, nn

from vidssl.data.views import Sampler
from vidssl.methods.arrow_of_time import ArrowOfTime
from vidssl.methods.barlow_twins import BarlowTwins
from vidssl.methods.base import EpochContext, Metrics, SSLMethod
from vidssl.methods.byol import BYOL
from vidssl.methods.cmc import CMC
from vidssl.methods.colorization import Colorization
from vidssl.methods.context_encoder import ContextEncoder
from vidssl.methods.corrflow import CorrFlow
from vidssl.methods.cpc import CPC
from vidssl.methods.cpc_v2 import CPCv2
from vidssl.methods.crw import CRW
from vidssl.methods.deepcluster import DeepCluster
from vidssl.methods.dim import DIM
from vidssl.methods.dino import DINO
from vidssl.methods.dpc import DPC
from vidssl.methods.exemplar import Exemplar
from vidssl.methods.greedy_infomax import GreedyInfoMax
from vidssl.methods.iic import IIC
from vidssl.methods.jigsaw import Jigsaw
from vidssl.methods.mast import MAST, MASTStage2
from vidssl.methods.moco import MoCo
from vidssl.methods.moco_v3 import MoCoV3
from vidssl.methods.npid import NPID
from vidssl.methods.o3n import O3N
from vidssl.methods.opn import OPN
from vidssl.methods.pcl import PCL
from vidssl.methods.pirl import PIRL
from vidssl.methods.relative_position import RelativePosition
from vidssl.methods.rotation import Rotation
from vidssl.methods.sela import SeLa
from vidssl.methods.shuffle_learn import ShuffleLearn
from vidssl.methods.simclr import SimCLR
from vidssl.methods.simsiam import SimSiam
from vidssl.methods.supcon import SupCon
from vidssl.methods.swav import SwAV
from vidssl.methods.timecycle import TimeCycle
from vidssl.methods.vcop import VCOP
from vidssl.methods.vicreg import VICReg
from vidssl.methods.vivi import VIVI
from vidssl.nn.colour import InputSpace

__all__ = ["METHODS", "EpochContext", "Method", "Metrics", "SSLMethod"]


@runtime_checkable
class Method(Protocol):
    """What the training loop needs of a method (``vidssl.train``).

    - ``Config``: the dataclass of its hyper-parameters, filled from the run config's ``model:`` section;
    - ``__call__(batch) -> (loss, metrics)``: ``batch["video"]`` is uint8 ``(B, C, T, H, W)`` on the device
      (still images: T = 1), plus ``index`` and ``label``; the method augments on the device itself;
    - ``sampler()``: the frames one sample needs from a video (``vidssl.data.views``);
    - ``encoder()``: the trunk to export and evaluate, fed ``encoder_input`` (``"rgb"`` or ``"lab"``);
    - ``before_step(step)``: after the backward passes of step ``step``, before the optimiser (dropping a
      gradient: SwAV's prototypes, DINO's last layer, frozen for the first iterations);
    - ``after_step(step)``: after each optimiser step (EMA, queues); ``on_epoch_start(ctx)``: before each
      epoch, with a pass over the dataset at hand (clustering, memory refresh, online kNN);
    - ``visuals(batch)``: images to write at each checkpoint (colourised, inpainted samples), name ->
      ``(N, 3, H, W)`` in [0, 1].
    """

    Config: ClassVar[type[Any]]
    encoder_input: InputSpace

    def __init__(self, cfg: Any) -> None: ...

    def __call__(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]: ...

    def sampler(self) -> Sampler: ...

    def encoder(self) -> nn.Module: ...

    def before_step(self, step: int) -> None: ...

    def after_step(self, step: int) -> None: ...

    def on_epoch_start(self, ctx: EpochContext) -> None: ...

    def visuals(self, batch: dict[str, Tensor]) -> dict[str, Tensor]: ...


METHODS: dict[str, type[Method]] = {
    "moco": MoCo,
    "crw": CRW,
    "mast": MAST,
    "mast_stage2": MASTStage2,
    "corrflow": CorrFlow,
    "timecycle": TimeCycle,
    "simclr": SimCLR,
    "byol": BYOL,
    "simsiam": SimSiam,
    "barlow_twins": BarlowTwins,
    "vicreg": VICReg,
    "swav": SwAV,
    "dino": DINO,
    "supcon": SupCon,
    "moco_v3": MoCoV3,
    "npid": NPID,
    "deepcluster": DeepCluster,
    "sela": SeLa,
    "iic": IIC,
    "pcl": PCL,
    "pirl": PIRL,
    "cmc": CMC,
    "rotation": Rotation,
    "jigsaw": Jigsaw,
    "relative_position": RelativePosition,
    "colorization": Colorization,
    "context_encoder": ContextEncoder,
    "exemplar": Exemplar,
    "shuffle_learn": ShuffleLearn,
    "opn": OPN,
    "arrow_of_time": ArrowOfTime,
    "o3n": O3N,
    "vcop": VCOP,
    "cpc": CPC,
    "cpc_v2": CPCv2,
    "greedy_infomax": GreedyInfoMax,
    "dpc": DPC,
    "dim": DIM,
    "vivi": VIVI,
}
