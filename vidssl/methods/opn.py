"""Order Prediction Network: which of 12 order classes four shuffled frames are in.

Lee, Huang, Singh & Yang, "Unsupervised Representation Learning by Sorting Sequences", ICCV 2017
(https://arxiv.org/abs/1708.01246; HsinYingLee/OPN). Four frames of high motion (``ordered_tuple`` weighted by
optical flow, inside one shot) are shuffled by one of 12 permutations, the authors' list :data:`ORDERS`, and
presented forward or, on a coin flip, reversed under the same label: an order and its reverse are one class, since
the action may run either way (the 12 and their reverses are the 24 permutations of four). Cues are cut as the
authors' code does: one ``region`` px crop mirrored for all four frames, then one common ``window`` px window
shifted by up to ``jitter`` px per frame (so frames cannot be chained by their borders), and each frame's one random
RGB channel replicated to three (channel splitting, against chromatic cues). Each frame passes the trunk and a
per-frame layer (fc6), the six frame pairs (01, 12, 23, 02, 13, 03) one shared layer (fc7,
``vidssl.nn.PairwiseHead``) and their concatenation the 12-way classifier (fc8; chance ln 12 = 2.4849).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment
from vidssl.data.samplers import ordered_tuple
from vidssl.methods.temporal import TemporalConfig, TemporalTask
from vidssl.nn import PairwiseHead

# the authors' 12 classes (1-based in their code: 1234, 1324, 1342, 1243, 1423, 1432, 2134, 2143, 2314, 3124,
# 3142, 3214), 0-based: position i of the presented sequence shows frame ORDERS[k][i]
ORDERS = ((0, 1, 2, 3), (0, 2, 1, 3), (0, 2, 3, 1), (0, 1, 3, 2), (0, 3, 1, 2), (0, 3, 2, 1),
          (1, 0, 2, 3), (1, 0, 3, 2), (1, 2, 0, 3), (2, 0, 1, 3), (2, 0, 3, 1), (2, 1, 0, 3))
PAIRS = ((0, 1), (1, 2), (2, 3), (0, 2), (1, 3), (0, 3))  # the order of the authors' pairwise concatenation


def order_class(order: tuple[int, ...]) -> int:
    """The class of a permutation of four frames: the index of it or of its reverse in :data:`ORDERS`."""
    order = tuple(int(i) for i in order)
    for k, o in enumerate(ORDERS):
        if order in (o, o[::-1]):
            return k
    raise ValueError(f"order_class: {order} is not a permutation of (0, 1, 2, 3)")


@dataclass
class OPNConfig(TemporalConfig):
    """OPN hyper-parameters (the ``model:`` section). Defaults: the paper's, at 100 / 80 px."""

    max_span: int = 30  # the window the four frames come from
    crop_size: int = 100  # the region cut and mirrored for all four frames
    window: int = 80  # the common window, then shifted per frame
    jitter: int = 5  # the per-frame shift, up to this many px each way
    channel_split: bool = True
    frame_dim: int = 1024  # fc6
    pair_dim: int = 512  # fc7

    def __post_init__(self) -> None:
        self.check("opn")
        if self.window + 2 * self.jitter > self.crop_size:
            raise ValueError(f"opn: window + 2 jitter = {self.window + 2 * self.jitter} exceeds crop_size "
                             f"{self.crop_size}")
        if self.max_span < 4 or min(self.window, self.frame_dim, self.pair_dim) < 1 or self.jitter < 0:
            raise ValueError("opn: max_span >= 4, window, frame_dim, pair_dim >= 1 and jitter >= 0")


def jittered_windows(x: Tensor, size: int, jitter: int) -> Tensor:
    """One common ``size`` px window per clip, shifted by up to ``jitter`` px per frame: ``(B, C, T, R, R)`` ->
    ``(B, C, T, size, size)``. The common window leaves ``jitter`` px of margin on every side for the shifts."""
    b, _, t, h, w = x.shape
    y0 = torch.randint(jitter, h - size - jitter + 1, (b, 1))
    x0 = torch.randint(jitter, w - size - jitter + 1, (b, 1))
    ys = y0 + torch.randint(-jitter, jitter + 1, (b, t))
    xs = x0 + torch.randint(-jitter, jitter + 1, (b, t))
    out = [x[i, :, k, ys[i, k]:ys[i, k] + size, xs[i, k]:xs[i, k] + size] for i in range(b) for k in range(t)]
    return torch.stack(out).view(b, t, x.shape[1], size, size).transpose(1, 2)


def channel_split(x: Tensor) -> Tensor:
    """Each frame's one random channel replicated to three: ``(B, 3, T, H, W)`` -> the same shape."""
    b, c, t = x.shape[:3]
    pick = torch.randint(0, c, (b, 1, t, 1, 1)).to(x.device).expand(b, 1, t, *x.shape[3:])
    return x.gather(1, pick).expand_as(x)


class OPN(TemporalTask):
    """OPN (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = OPNConfig
    num_classes = len(ORDERS)
    orders: Tensor

    def __init__(self, cfg: OPNConfig) -> None:
        super().__init__(cfg)
        self.use_sampler(ordered_tuple, size=4, max_span=cfg.max_span)
        self.register_buffer("orders", torch.tensor(ORDERS), persistent=False)
        self.augment = ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, hflip=cfg.hflip)
        self.frame_layer = nn.Sequential(nn.Linear(self.backbone.num_features, cfg.frame_dim), nn.ReLU(inplace=True))
        self.head = PairwiseHead(cfg.frame_dim, cfg.pair_dim, 4, self.num_classes, PAIRS)

    def present(self, x: Tensor, target: Tensor, reverse: Tensor) -> Tensor:
        """Frames ``(B, 3, 4, ...)`` in temporal order -> in class ``target``'s order, reversed where ``reverse``."""
        order = self.orders[target]  # (B, 4)
        order = torch.where(reverse[:, None], order.flip(1), order)
        return x[torch.arange(x.shape[0], device=x.device)[:, None], :, order].transpose(1, 2)

    def task(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        video = batch["video"]
        if video.shape[2] != 4:
            raise ValueError(f"opn: needs the 4 frames of its sampler, got {video.shape[2]}")
        x = jittered_windows(self.augment(self.frames(video)), self.cfg.window, self.cfg.jitter)
        if self.cfg.channel_split:
            x = channel_split(x)
        b = x.shape[0]
        target = torch.randint(0, self.num_classes, (b,)).to(x.device)
        reverse = (torch.rand(b) < 0.5).to(x.device)
        shown = self.present(x, target, reverse).transpose(1, 2)  # (B, 4, 3, s, s)
        return self.head(self.frame_layer(self.center(self.embed(shown)))), target
