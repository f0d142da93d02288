"""Several image trunks read side by side as one: their embeddings and feature maps concatenated.

CMC's evaluation (Tian et al. 2020) probes the L trunk's and the ab trunk's features together; ``Concat`` keeps the
backbone contract for such a pair, so the encoder record writes and rebuilds it like any trunk (architecture key
``"concat"``, ``config["parts"]`` the parts' own configs, parameters ``parts.<i>.<name>``), and the probes and label
propagation read it unchanged. Every part reads the same input; their strides must agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vidssl.models.base import Backbone

__all__ = ["Concat"]


class Concat(nn.Module):
    """``forward(x)``: the parts' pooled embeddings concatenated ``(B, sum C_i)``; ``forward_features(x)``: their
    maps concatenated along channels ``(B, sum C_i, h, w)``."""

    def __init__(self, parts: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(parts) < 2:
            raise ValueError(f"Concat: needs at least two trunks, got {len(parts)}")
        trunks = [p for p in parts if isinstance(p, Backbone)]
        if len(trunks) != len(parts):
            raise TypeError("Concat: every part must keep the backbone contract (vidssl.models.base.Backbone)")
        strides = {int(t.stride) for t in trunks}
        if len(strides) != 1:
            raise ValueError(f"Concat: the trunks' strides differ ({sorted(strides)}): their maps would not align")
        self.parts = nn.ModuleList(parts)
        self.stride = strides.pop()
        self.num_features = sum(int(t.num_features) for t in trunks)
        self.config: dict[str, Any] = {"arch": "concat", "parts": [dict(t.config) for t in trunks]}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p.forward_features(x) for p in self.parts], dim=1)  # type: ignore[operator]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(x) for p in self.parts], dim=1)
