"""Optimisers (SGD, Adam, AdamW, LARS) and learning-rate schedules (cosine, step, constant; linear warmup).

Schedules are pure functions of the optimiser step, so "the scheduler's position" in a checkpoint is just
the step number and a resumed run gets exactly the same learning rates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

OPTIMIZERS = ("sgd", "adam", "adamw", "lars")
SCHEDULES = ("cosine", "step", "constant")


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratios (You et al. 2017), as used by SimCLR and BYOL.

    Per parameter ``p`` with gradient ``g`` in a group with ``lars=True``::

        d = g + weight_decay * p
        trust = eta * ||p|| / ||d||   (1 when either norm is 0)
        v = momentum * v + trust * d
        p = p - lr * v

    Groups with ``lars=False`` (biases and normalisation parameters, see ``param_groups``) skip both the
    weight decay and the trust ratio, as in SimCLR and BYOL: plain momentum SGD.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        *,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError(f"LARS: invalid lr={lr}, momentum={momentum}, weight_decay={weight_decay}, eta={eta}")
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta, "lars": True}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if group["lars"]:
                    d = d.add(p, alpha=group["weight_decay"])
                    p_norm, d_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    one = torch.ones_like(p_norm)
                    trust = torch.where(
                        (p_norm > 0) & (d_norm > 0), group["eta"] * p_norm / d_norm.clamp_min(1e-30), one
                    )
                    d = d.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                v = state["momentum_buffer"]
                v.mul_(group["momentum"]).add_(d)
                p.add_(v, alpha=-group["lr"])
        return loss


def _is_norm_or_bias(module: nn.Module, name: str, p: nn.Parameter) -> bool:
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    return name.endswith("bias") or isinstance(module, norms) or p.ndim <= 1


def param_groups(model: nn.Module, *, weight_decay: float, exclude_norm_bias: bool) -> list[dict[str, Any]]:
    """Trainable parameters (``requires_grad=True`` only: momentum encoders are left out) as groups.

    With ``exclude_norm_bias`` the biases and normalisation parameters form a second group with no weight
    decay and ``lars=False`` (no trust-ratio adaptation), as in SimCLR and BYOL.
    """
    decay: list[nn.Parameter] = []
    plain: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (plain if exclude_norm_bias and _is_norm_or_bias(module, name, p) else decay).append(p)
    if not decay and not plain:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    groups = [{"params": decay, "weight_decay": weight_decay, "lars": True}]
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0, "lars": False})
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    name: str,
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    betas: Sequence[float] = (0.9, 0.999),
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """One of ``OPTIMIZERS`` over ``model``'s trainable parameters (``nesterov``: SGD's Nesterov momentum, as
    RotNet's recipe).

    SGD, Adam and AdamW decay every trainable parameter (as MoCo, CRW and MAST do); LARS excludes biases
    and normalisation parameters from decay and adaptation.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimiser {name!r}; choose from {list(OPTIMIZERS)}")
    if nesterov and (name != "sgd" or momentum <= 0):
        raise ValueError(f"optim.nesterov needs optim.name sgd with momentum > 0, got {name!r} with {momentum}")
    groups = param_groups(model, weight_decay=weight_decay, exclude_norm_bias=name == "lars")
    if name == "lars":
        return LARS(groups, lr, momentum=momentum, weight_decay=weight_decay)
    for g in groups:
        g.pop("lars")
    b = (float(betas[0]), float(betas[1]))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=b, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=b, weight_decay=weight_decay)


def lr_at(
    step: int,
    base_lr: float,
    *,
    name: str,
    steps: int,
    warmup_steps: int = 0,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> float:
    """Learning rate for optimiser step ``step`` (0-based).

    Warmup: ``base_lr * (step + 1) / warmup_steps`` for ``step < warmup_steps`` (never exactly 0, so the
    first step moves). Then ``cosine``: ``base_lr * (1 + cos(pi * (step - warmup) / (steps - warmup))) / 2``;
    ``step``: ``base_lr * gamma ** (number of milestones <= step)``; ``constant``: ``base_lr``.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose from {list(SCHEDULES)}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if name == "cosine":
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if name == "step":
        return base_lr * gamma ** sum(1 for m in milestones if step >= m)
    return base_lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr
