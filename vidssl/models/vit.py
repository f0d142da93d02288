"""Vision Transformer trunks from torchvision with the backbone contract, at any input size.

``ViT`` holds torchvision's ``VisionTransformer`` parts under torchvision's names (``conv_proj``,
``class_token``, ``encoder.pos_embedding``, ``encoder.layers.encoder_layer_i``, ``encoder.ln``; no ``heads``), so
its weights load into ``torchvision.models.VisionTransformer`` of the same shape. Unlike torchvision's forward,
which accepts only ``image_size`` squares, any size runs: the patch part of the position embedding is resized
bicubically to the input's patch grid (as DINO's ``interpolate_pos_encoding``; exact at the trained grid), and an
input whose sides are not multiples of the patch size is zero-padded on the right and bottom, so the patch grid is
``ceil(H / patch)`` x ``ceil(W / patch)`` as the contract says.

- ``forward(x) -> (B, hidden_dim)``: the class token after the final layer norm (the embedding DINO's kNN and
  linear evaluations read);
- ``forward_features(x) -> (B, hidden_dim, h, w)``: the patch tokens of the last layer after the final layer norm
  on their grid (the features DINO's video-segmentation evaluation propagates labels with), ``stride`` = the patch
  size.

torchvision's encoder blocks have dropout but no stochastic depth (DINO's ViTs train with drop-path 0.1): said in
the configs that use them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

__all__ = ["ViT"]


class ViT(nn.Module):
    """A torchvision Vision Transformer trunk (no classifier head); see the module docstring.

    Args:
        image_size: the square size the position embedding is learned at (other sizes interpolate it).
        patch_size: pixels per patch side, the trunk's stride.
        num_layers, num_heads, hidden_dim, mlp_dim: torchvision's ``VisionTransformer`` arguments (ViT-S/16:
            12, 6, 384, 1536 at 224 px, DINO's small model).
    """

    def __init__(self, *, image_size: int = 224, patch_size: int = 16, num_layers: int = 12, num_heads: int = 6,
                 hidden_dim: int = 384, mlp_dim: int = 1536) -> None:
        super().__init__()
        if image_size % patch_size or min(image_size, patch_size, num_layers, num_heads, mlp_dim) < 1:
            raise ValueError(f"ViT: image_size must be a positive multiple of patch_size, got {image_size} and "
                             f"{patch_size}")
        if hidden_dim % num_heads:
            raise ValueError(f"ViT: hidden_dim {hidden_dim} must split over num_heads {num_heads}")
        net = torchvision.models.VisionTransformer(image_size=image_size, patch_size=patch_size,
                                                   num_layers=num_layers, num_heads=num_heads,
                                                   hidden_dim=hidden_dim, mlp_dim=mlp_dim)
        self.conv_proj, self.class_token, self.encoder = net.conv_proj, net.class_token, net.encoder
        self.patch_size = self.stride = patch_size
        self.grid = image_size // patch_size
        self.num_features = hidden_dim
        self.config: dict[str, Any] = {
            "arch": "vit", "image_size": image_size, "patch_size": patch_size, "num_layers": num_layers,
            "num_heads": num_heads, "hidden_dim": hidden_dim, "mlp_dim": mlp_dim,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ViT:
        """Rebuild a trunk from its ``config`` (as checkpoints record it)."""
        keys = ("image_size", "patch_size", "num_layers", "num_heads", "hidden_dim", "mlp_dim")
        return cls(**{k: int(config[k]) for k in keys})

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """``(1, 1 + h w, D)``: the class token's entry and the patch entries resized to an ``h`` x ``w`` grid."""
        pos = self.encoder.pos_embedding
        if (h, w) == (self.grid, self.grid):
            return pos
        cls_pos, patches = pos[:, :1], pos[:, 1:]
        d = patches.shape[-1]
        grid = patches.reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, h * w, d)], dim=1)

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(B, 3, H, W)`` -> the last layer's tokens after the final norm ``(B, 1 + h w, D)`` (class token
        first) and the patch grid ``(h, w)``."""
        if x.dim() != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
        p = self.patch_size
        pad_h, pad_w = -x.shape[-2] % p, -x.shape[-1] % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        patches = self.conv_proj(x)  # (B, D, h, w)
        b, _, h, w = patches.shape
        seq = torch.cat([self.class_token.expand(b, -1, -1), patches.flatten(2).transpose(1, 2)], dim=1)
        seq = seq + self.position_embedding(h, w)
        enc = self.encoder
        out: torch.Tensor = enc.ln(enc.layers(enc.dropout(seq)))
        return out, (h, w)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> the patch tokens on their grid ``(B, hidden_dim, ceil(H / p), ceil(W / p))``."""
        out, (h, w) = self.tokens(x)
        return out[:, 1:].transpose(1, 2).reshape(out.shape[0], -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> the class token ``(B, hidden_dim)``."""
        return self.tokens(x)[0][:, 0]
