"""A convolutional GRU (Ballas et al. 2016), DPC's aggregation of block features over time."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ConvGRU", "ConvGRUCell"]


class ConvGRUCell(nn.Module):
    """One step: input ``(B, C, H, W)`` and hidden ``(B, hidden, H, W)`` (None: zeros) -> the new hidden state.
    Update and reset gates and the candidate are ``kernel x kernel`` convolutions of the input and hidden state."""

    def __init__(self, channels: int, hidden: int, kernel: int = 1) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"ConvGRUCell: kernel must be odd and positive, got {kernel}")
        self.hidden = hidden
        self.gates = nn.Conv2d(channels + hidden, 2 * hidden, kernel, padding=kernel // 2)
        self.candidate = nn.Conv2d(channels + hidden, hidden, kernel, padding=kernel // 2)

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        if h is None:
            h = torch.zeros(x.shape[0], self.hidden, *x.shape[2:], dtype=x.dtype, device=x.device)
        update, reset = torch.sigmoid(self.gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        candidate = torch.tanh(self.candidate(torch.cat([x, reset * h], dim=1)))
        return (1 - update) * h + update * candidate


class ConvGRU(nn.Module):
    """``layers`` stacked cells over a sequence ``(B, T, C, H, W)`` -> the last layer's states ``(B, T, hidden, H, W)``
    and the final state of every layer (a list, to continue from)."""

    def __init__(self, channels: int, hidden: int, layers: int = 1, kernel: int = 1) -> None:
        super().__init__()
        self.cells = nn.ModuleList(ConvGRUCell(channels if i == 0 else hidden, hidden, kernel) for i in range(layers))

    def forward(self, x: Tensor, state: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
        hs: list[Tensor | None] = list(state) if state is not None else [None] * len(self.cells)
        outs = []
        for t in range(x.shape[1]):
            inp = x[:, t]
            for i, cell in enumerate(self.cells):
                hs[i] = cell(inp, hs[i])
                inp = hs[i]  # type: ignore[assignment]
            outs.append(inp)
        return torch.stack(outs, dim=1), [h for h in hs if h is not None]
