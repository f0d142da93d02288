"""DINO: self-distillation with no labels, a student matching a momentum teacher's centred, sharpened output.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021
(https://arxiv.org/abs/2104.14294; facebookresearch/dino ``main_dino.py``, ``vision_transformer.DINOHead``).
Student and teacher: backbone -> head (an MLP with GELU to a 256-d bottleneck, L2 normalisation, a
weight-normalised linear layer to K outputs, its norm fixed at 1: ``norm_last_layer``). The teacher is an
exponential moving average of the student (momentum 0.996 -> 1 on a cosine over the run) and sees only the
global crops; the student sees every crop. ``loss = mean over pairs (teacher crop i, student crop v != i) of
-sum softmax((t_i - c) / tau_t) log softmax(s_v / tau_s)``; the centre ``c`` is an EMA (0.9) of the teacher's
batch mean over all processes; ``tau_t`` warms up linearly from ``warmup_teacher_temp`` over the first epochs.
The last layer gets no gradient during the first ``freeze_last_layer_epochs`` epochs (``before_step``).

Collapse shows in ``teacher_entropy`` (the teacher's mean entropy over ln K): 1 when its outputs are uniform
(centring without sharpening), 0 when one output dominates (sharpening without centring).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import byol_augment, dino_local_augment
from vidssl.data.views import MultiCrop, Sampler
from vidssl.engine.distributed import all_reduce_sum, world_size
from vidssl.methods.base import EpochContext, Metrics, SSLMethod, positive_pair
from vidssl.models import build_image_backbone
from vidssl.nn import Branch, WeightNormLinear, ema_update_, mlp, momentum_at


@dataclass
class DINOConfig:
    """DINO hyper-parameters (the ``model:`` section). Defaults: the authors' ResNet-50 recipe (README)."""

    backbone: str = "resnet18"
    head_hidden: int = 2048
    bottleneck: int = 256
    out_dim: int = 65536  # K
    head_layers: int = 3  # linear layers before the bottleneck's normalisation
    head_bn: bool = False  # use_bn_in_head
    norm_last_layer: bool = True
    student_temp: float = 0.1
    teacher_temp: float = 0.04  # 0.04 - 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0  # 30 in the ViT recipes
    center_momentum: float = 0.9
    momentum: float = 0.996  # the teacher's EMA at step 0, rising to 1 (cosine)
    total_steps: int | None = None  # the momentum's cosine length: schedule.steps unless given (0: constant)
    freeze_last_layer_epochs: int = 1
    num_global: int = 2
    num_local: int = 6
    global_size: int = 224
    local_size: int = 96
    global_scale: tuple[float, float] = (0.14, 1.0)  # the ResNet recipe (ViT: 0.4, 1)
    local_scale: tuple[float, float] = (0.05, 0.14)  # the ResNet recipe (ViT: 0.05, 0.4)
    blur: bool = True
    input: Literal["video", "images"] = "video"
    max_gap: int = 30

    def __post_init__(self) -> None:
        if min(self.head_hidden, self.bottleneck, self.out_dim, self.head_layers) < 1 or self.max_gap < 1:
            raise ValueError("dino: head sizes, head_layers and max_gap must be positive")
        if min(self.student_temp, self.teacher_temp, self.warmup_teacher_temp) <= 0:
            raise ValueError("dino: temperatures must be positive")
        if not 0 <= self.center_momentum <= 1 or not 0 <= self.momentum <= 1:
            raise ValueError("dino: center_momentum and momentum must be in [0, 1]")
        if self.num_global < 2 and self.num_local < 1:
            raise ValueError("dino: needs a second crop (num_global >= 2 or num_local >= 1)")
        if self.warmup_teacher_temp_epochs < 0 or self.freeze_last_layer_epochs < 0:
            raise ValueError("dino: warmup_teacher_temp_epochs and freeze_last_layer_epochs must be >= 0")


class DINOHead(nn.Module):
    """``vision_transformer.DINOHead``: MLP (GELU) -> bottleneck -> L2 normalisation -> weight-normalised linear."""

    def __init__(self, in_dim: int, cfg: DINOConfig) -> None:
        super().__init__()
        dims = (in_dim, *([cfg.head_hidden] * (cfg.head_layers - 1)), cfg.bottleneck)
        self.mlp = mlp(dims, bn=cfg.head_bn, activation="gelu")
        self.last = WeightNormLinear(cfg.bottleneck, cfg.out_dim, fixed_norm=cfg.norm_last_layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.last(F.normalize(self.mlp(x), dim=-1))


def teacher_temp_at(epoch: int, cfg: DINOConfig) -> float:
    """``np.linspace(warmup_teacher_temp, teacher_temp, warmup_epochs)[epoch]``, then ``teacher_temp``."""
    n = cfg.warmup_teacher_temp_epochs
    if epoch >= n:
        return cfg.teacher_temp
    if n == 1:
        return cfg.warmup_teacher_temp
    return cfg.warmup_teacher_temp + (cfg.teacher_temp - cfg.warmup_teacher_temp) * epoch / (n - 1)


class DINO(SSLMethod):
    """DINO (see the module docstring). ``forward(batch) -> (loss, metrics)``; the EMA runs in ``after_step``."""

    Config = DINOConfig
    center: Tensor
    epoch: Tensor

    def __init__(self, cfg: DINOConfig) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        backbone = build_image_backbone(cfg.backbone)
        self.student = Branch(backbone, DINOHead(backbone.num_features, cfg))
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)  # starts equal; moved only by the EMA
        globals_ = [byol_augment(cfg.global_size, v, cfg.global_scale, cfg.blur) for v in (1, 2)]
        globals_ = [globals_[i % 2] for i in range(cfg.num_global)]
        self.views = MultiCrop(globals_, dino_local_augment(cfg.local_size, cfg.local_scale, cfg.blur),
                               cfg.num_global, cfg.num_local)
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))

    def sampler(self) -> Sampler:
        return positive_pair(self.input, self.cfg.max_gap)

    def encoder(self) -> nn.Module:
        return self.student.backbone

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        c = self.cfg
        crops = self.views(batch["video"])
        g = c.num_global
        # the backbone once per resolution, the head once on all crops (the code's MultiCropWrapper)
        parts = [self.student.backbone(torch.cat(crops[:g]))]
        if c.num_local:
            parts.append(self.student.backbone(torch.cat(crops[g:])))
        student = (self.student.head(torch.cat(parts)) / c.student_temp).chunk(len(crops))
        with torch.no_grad():
            t_out = self.teacher(torch.cat(crops[:g]))
            temp = teacher_temp_at(int(self.epoch), c)
            targets = F.softmax((t_out - self.center) / temp, dim=-1).chunk(g)
        total, n = t_out.new_zeros(()), 0
        for i, q in enumerate(targets):
            for v, s in enumerate(student):
                if v != i:
                    total = total + (-q * F.log_softmax(s, dim=-1)).sum(dim=-1).mean()
                    n += 1
        loss = total / n
        if self.training:
            self._update_center(t_out)
        entropy = -(torch.cat(targets) * torch.cat(targets).clamp_min(1e-12).log()).sum(dim=-1).mean()
        return loss, {"teacher_entropy": entropy / math.log(c.out_dim), "teacher_temp": temp,
                      "loss_over_lnK": loss.detach() / math.log(c.out_dim)}

    @torch.no_grad()
    def _update_center(self, teacher_out: Tensor) -> None:
        """``c = m c + (1 - m) mean of every process's teacher outputs`` (the code's all-reduced batch centre)."""
        batch_center = all_reduce_sum(teacher_out.sum(dim=0, keepdim=True)) / (teacher_out.shape[0] * world_size())
        self.center.mul_(self.cfg.center_momentum).add_(batch_center * (1 - self.cfg.center_momentum))

    def before_step(self, step: int) -> None:
        """The last layer gets no update during the first ``freeze_last_layer_epochs`` epochs."""
        if int(self.epoch) < self.cfg.freeze_last_layer_epochs:
            head = self.student.head
            assert isinstance(head, DINOHead)
            for p in head.last.parameters():
                p.grad = None

    def after_step(self, step: int) -> None:
        steps = self.cfg.total_steps
        tau = momentum_at(step, steps or 1, self.cfg.momentum, 1.0, "cosine" if steps else "constant")
        ema_update_(self.teacher, self.student, tau)

    def on_epoch_start(self, ctx: EpochContext) -> None:
        self.epoch.fill_(ctx.epoch)
