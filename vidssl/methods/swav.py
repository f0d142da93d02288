"""SwAV: predict the online cluster codes of one crop from the other crops, codes equipartitioned by Sinkhorn.

Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments", NeurIPS 2020
(https://arxiv.org/abs/2006.09882; facebookresearch/swav ``main_swav.py``). Backbone -> projector (BN, ReLU) ->
L2 normalisation -> scores against K prototypes kept on the unit sphere. For each crop in ``crops_for_assign``
its codes are Sinkhorn-Knopp's equipartition of the scores over the global batch (``vidssl.losses.sinkhorn``,
float32 also under autocast), with a queue of this process's recent embeddings in front of the batch from
epoch ``queue_start_epoch`` on, used once full (the authors' advice at small batches); the loss is the swapped
prediction of those codes from every other crop (``swapped_prediction``). Multi-crop
(``vidssl.data.views.MultiCrop``): 2 global and 6 local crops; on video, crop i comes from frame ``i mod 2`` of a
pair of frames at most ``max_gap`` apart. The prototypes get no gradient during the first
``freeze_prototypes_steps`` steps (``before_step``), as the code's ``freeze_prototypes_niters``.

Collapse shows in ``embedding_std`` (near 0) and ``loss_over_lnK`` (pinned at 1): under SGD at lightly's 0.06 the
CIFAR embedding collapses within 20 steps, under lightly's Adam at 1e-3 it does not (``docs/results.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import simclr_augment
from vidssl.data.views import MultiCrop
from vidssl.engine.distributed import world_size
from vidssl.losses import sinkhorn, swapped_prediction
from vidssl.methods.base import EpochContext, Metrics, TwoViewMethod
from vidssl.models import build_backbone
from vidssl.nn import Branch, Prototypes, Queue, embedding_std, mlp


@dataclass
class SwAVConfig:
    """SwAV hyper-parameters (the ``model:`` section). Defaults: the paper's 800-epoch ImageNet recipe."""

    backbone: str = "resnet18"
    projector: tuple[int, ...] = (2048, 128)  # hidden (BN, ReLU), output
    num_prototypes: int = 3000
    temperature: float = 0.1
    epsilon: float = 0.05  # Sinkhorn's entropy weight
    sinkhorn_iterations: int = 3
    crops_for_assign: tuple[int, ...] = (0, 1)  # the crops that get codes (global ones)
    queue_length: int = 3840  # over all processes (each keeps queue_length / world); 0: no queue
    queue_start_epoch: int = 15
    freeze_prototypes_steps: int = 313  # the code's freeze_prototypes_niters
    num_global: int = 2
    num_local: int = 6
    global_size: int = 224
    local_size: int = 96
    global_scale: tuple[float, float] = (0.14, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.14)
    blur_p: float = 0.5
    strength: float = 1.0  # colour-jitter strength of the SimCLR augmentation (lightly's CIFAR benchmark: 0.5)
    input: Literal["video", "images"] = "video"
    max_gap: int = 30

    def __post_init__(self) -> None:
        if not self.projector or min(self.projector) < 1 or self.num_prototypes < 2:
            raise ValueError("swav: projector sizes must be positive and num_prototypes at least 2")
        if self.temperature <= 0 or self.epsilon <= 0 or self.sinkhorn_iterations < 1:
            raise ValueError("swav: temperature and epsilon must be positive, sinkhorn_iterations >= 1")
        crops = self.num_global + self.num_local
        if not self.crops_for_assign or any(not 0 <= c < crops for c in self.crops_for_assign) or crops < 2:
            raise ValueError(f"swav: crops_for_assign must name some of the {crops} crops (and there must be >= 2), "
                             f"got {self.crops_for_assign}")
        if self.strength < 0:
            raise ValueError(f"swav: strength must be >= 0, got {self.strength}")
        if self.queue_length < 0 or self.freeze_prototypes_steps < 0 or self.max_gap < 1:
            raise ValueError("swav: queue_length and freeze_prototypes_steps must be >= 0, max_gap >= 1")


class SwAV(TwoViewMethod):
    """SwAV (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = SwAVConfig
    epoch: Tensor

    def __init__(self, cfg: SwAVConfig) -> None:
        backbone = build_backbone(cfg.backbone)
        views = MultiCrop(simclr_augment(cfg.global_size, cfg.global_scale, cfg.strength, cfg.blur_p),
                          simclr_augment(cfg.local_size, cfg.local_scale, cfg.strength, cfg.blur_p), cfg.num_global,
                          cfg.num_local)
        super().__init__(Branch(backbone, mlp((backbone.num_features, *cfg.projector), bn=True)), views, cfg.input,
                         cfg.max_gap)
        self.cfg = cfg
        self.prototypes = Prototypes(cfg.projector[-1], cfg.num_prototypes)
        local = max(1, cfg.queue_length // world_size())
        self.queues = nn.ModuleList([Queue(local, cfg.projector[-1]) for _ in cfg.crops_for_assign])
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))


    def _queue_on(self) -> bool:
        return self.cfg.queue_length > 0 and int(self.epoch) >= self.cfg.queue_start_epoch

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        c = self.cfg
        crops = self.views(batch["video"])
        b = crops[0].shape[0]
        # the backbone once per resolution, the head once on all crops (its BN sees them together), as the code
        parts = [self.net.backbone(torch.cat(crops[:c.num_global]))]
        if c.num_local:
            parts.append(self.net.backbone(torch.cat(crops[c.num_global:])))
        z = F.normalize(self.net.head(torch.cat(parts)), dim=1)
        if self.training:
            self.prototypes.normalize_()
        scores = z @ self.prototypes.weight.t()  # (crops B, K)
        per_crop = list(scores.split(b))
        codes: dict[int, Tensor] = {}
        used = 0.0
        for queue, crop in zip(self.queues, c.crops_for_assign, strict=True):
            assert isinstance(queue, Queue)
            out = per_crop[crop].detach()
            if self._queue_on():
                if queue.fill >= 1.0:  # the code uses the queue once it is full
                    out = torch.cat([queue.keys.to(out.dtype) @ self.prototypes.weight.detach().t(), out])
                    used = 1.0
                if self.training:
                    queue.push(z[crop * b:(crop + 1) * b].detach())
            codes[crop] = sinkhorn(out, c.epsilon, c.sinkhorn_iterations)[-b:]
        loss = swapped_prediction(per_crop, codes, c.temperature)
        mean_code = torch.cat(list(codes.values())).mean(dim=0)
        spread = -(mean_code * mean_code.clamp_min(1e-12).log()).sum() / math.log(c.num_prototypes)
        return loss, {"embedding_std": embedding_std(z[:b]), "code_entropy": spread, "queue_used": used,
                      "loss_over_lnK": loss.detach() / math.log(c.num_prototypes)}

    def before_step(self, step: int) -> None:
        """No prototype update (not even weight decay) during the first ``freeze_prototypes_steps`` steps."""
        if step < self.cfg.freeze_prototypes_steps:
            self.prototypes.weight.grad = None

    def on_epoch_start(self, ctx: EpochContext) -> None:
        self.epoch.fill_(ctx.epoch)
