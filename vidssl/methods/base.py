"""What every method shares: the defaults of the ``Method`` protocol and the context of the epoch hook.

A method subclasses :class:`SSLMethod` (an ``nn.Module``) and overrides what its paper needs; the protocol
itself, ``vidssl.methods.Method``, is what the training loop is typed against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import centre_crop_clip, to_float
from vidssl.data.samplers import frame_pair, random_clip
from vidssl.data.views import FrameSampler, Sampler, StillFrame
from vidssl.engine.distributed import all_reduce_sum
from vidssl.losses import nce
from vidssl.nn import Branch, MemoryBank
from vidssl.nn.colour import InputSpace, normalize_input

__all__ = [
    "BankNCE", "EpochContext", "Metrics", "SSLMethod", "TwoViewMethod", "centre_view",
    "check_clusters", "fill_banks",
    "follow_saved_shapes", "instance_frame", "positive_pair", "sample_index",
]

Metrics = dict[str, Tensor | float]  # scalars to log: floats or 0-dim tensors


@dataclass
class EpochContext:
    """What the training loop hands :meth:`SSLMethod.on_epoch_start`.

    ``batches(batch_size)`` is one pass over the whole training dataset in index order (this process's share
    of it: indices ``rank, rank + world, ...``), each batch on ``device`` with the dataset's keys (``video``,
    ``index``, ``label``); the frames are the ones this epoch's training batches draw. Gather what a pass
    computes with ``vidssl.engine.distributed`` when every process needs all of it.

    A resumed run calls the hook again for the epoch it resumes in, with ``start > 0`` (batches of the epoch
    already trained): keep what the hook computes in buffers, which the checkpoint restores, and skip the
    recomputation then. Draw the hook's randomness from ``generator`` (seeded by the run's seed and the
    epoch), never the global generators, so a resumed run repeats it.
    """

    epoch: int
    step: int  # optimiser steps done
    start: int  # batches of this epoch already consumed
    num_samples: int  # len(dataset)
    device: torch.device
    generator: torch.Generator
    batches: Callable[[int], Iterator[dict[str, Any]]]
    # drops the optimiser's state (momentum, Adam moments) of parameters the hook re-initialises
    forget: Callable[[Iterable[nn.Parameter]], None] = lambda params: None

    @torch.no_grad()
    def collect(self, fn: Callable[[dict[str, Any]], Tensor], batch_size: int) -> Tensor:
        """``fn`` over one pass of the whole dataset -> ``(num_samples, ...)`` in dataset order, the same on every
        process (each computes its share of the rows; a sum over processes joins them). Raises if a sample was
        not seen or seen twice."""
        out: Tensor | None = None
        seen = torch.zeros(self.num_samples, device=self.device)
        for batch in self.batches(batch_size):
            index = batch["index"].long().to(self.device)
            value = fn(batch).detach().float()
            if out is None:
                out = torch.zeros(self.num_samples, *value.shape[1:], device=self.device)
            out[index] = value
            seen.index_add_(0, index, torch.ones_like(index, dtype=seen.dtype))
        if out is None:  # (every process has a share when the dataset has at least one sample per process)
            raise ValueError("EpochContext.collect: the dataset pass gave this process no batch")
        out, seen = all_reduce_sum(out), all_reduce_sum(seen)
        if not bool((seen == 1).all()):
            raise ValueError(f"EpochContext.collect: {int((seen != 1).sum())} of {self.num_samples} samples were "
                             "not seen exactly once in the dataset pass")
        return out


class SSLMethod(nn.Module):
    """The defaults of ``vidssl.methods.Method``: still-image frames, RGB input, no-op hooks.

    A method sets ``Config`` (its hyper-parameter dataclass, the ``model:`` section of a run config),
    implements ``forward(batch) -> (loss, metrics)`` and ``encoder()``, and overrides ``sampler()`` for video,
    ``encoder_input`` for a non-RGB encoder, ``after_step`` for work after each optimiser step (momentum,
    queues) and ``on_epoch_start`` for work over a whole epoch or dataset (clustering, memory refresh).
    """

    Config: ClassVar[type[Any]]
    encoder_input: InputSpace = "rgb"  # what the encoder is fed; checkpoints record it for the evaluation
    # what :meth:`pretext_scores` measures, and whether more is better (``vidssl eval pretext`` prints it)
    pretext_metric: ClassVar[str] = "accuracy"
    pretext_higher_is_better: ClassVar[bool] = True

    def sampler(self) -> Sampler:
        """The frames one sample needs from a video (still images are 1-frame clips whatever it says)."""
        return StillFrame()

    def encoder(self) -> nn.Module:
        """The trunk to export and evaluate (keeps ``vidssl.models.Backbone``)."""
        raise NotImplementedError(f"{type(self).__name__} must say which module is its encoder")

    def before_step(self, step: int) -> None:
        """Called after the backward passes of step ``step`` (0-based), before the optimiser, on every process."""

    def after_step(self, step: int) -> None:
        """Called after optimiser step ``step`` (0-based), on every process."""

    def on_epoch_start(self, ctx: EpochContext) -> None:
        """Called before the first batch of every epoch, on every process (see :class:`EpochContext`)."""

    def pretext_scores(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The method's own task on held-out samples (``vidssl eval pretext``), in eval mode: per sample, ``score``
        ``(B,)`` (1/0 correct for a classification task) and ``chance`` ``(B,)``, what guessing scores on it
        (1 / classes, or a trivial predictor's score); optionally ``target`` ``(B,)`` long, the class, for per-class
        accuracy; optionally, for a measure balanced over classes of units inside the samples (colourisation's
        pixels by colour bin), the sums ``score_by_class``, ``chance_by_class`` and ``count_by_class`` ``(B, K)``
        (``vidssl.pretext.score`` then reports the class-balanced means). Methods without a task of their own
        raise."""
        raise NotImplementedError(f"{type(self).__name__} has no pretext task of its own to score")

    def visuals(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Images worth looking at, from a training batch: name -> ``(N, 3, H, W)`` or ``(rows, N, 3, H, W)`` RGB
        in [0, 1] (colourised or inpainted samples). Called on the main process at every checkpoint, in eval mode,
        without gradients; the training loop writes them to ``out_dir/visuals/<name>/`` and TensorBoard.
        Default: none."""
        return {}


class BankNCE(nn.Module):
    """A memory bank scored by noise-contrastive estimation: the authors' ``NCEAverage`` and ``NCECriterion``
    (zhirongw/lemniscate.pytorch), shared by NPID and PIRL.

    ``bank``: one entry per dataset sample (``vidssl.nn.MemoryBank``). :meth:`scores` gives each feature's score
    against its own entry and ``negatives`` entries drawn uniformly, ``v . f / temperature`` ``(B, 1 + K)``;
    :meth:`loss` is NCE with ``exp(s) / Z``, the constant Z estimated once, from the first scores it sees
    (``Z = mean(exp(s)) N``) and then kept (a buffer, so checkpoints carry it), or ``infonce``: the softmax
    cross-entropy over the same K + 1 scores.

    ``init``: ``random`` (the authors' code: entries uniform random vectors until each sample's first visit, so the
    whole first epoch pulls every image towards a random target of its own) or ``features`` (:func:`fill_banks`
    sets every entry to the initial network's feature of its sample before the first step).
    """

    z: Tensor

    def __init__(self, size: int, dim: int, negatives: int, temperature: float, momentum: float = 0.5,
                 loss: str = "nce", init: str = "random") -> None:
        super().__init__()
        if loss not in ("nce", "infonce") or negatives < 1 or temperature <= 0:
            raise ValueError(f"BankNCE: loss 'nce' or 'infonce', negatives >= 1, temperature > 0; got {loss!r}, "
                             f"{negatives}, {temperature}")
        if init not in ("random", "features"):
            raise ValueError(f"BankNCE: init must be 'random' or 'features', got {init!r}")
        self.bank = MemoryBank(size, dim, momentum)
        self.negatives, self.temperature, self.kind, self.init = negatives, temperature, loss, init
        self.register_buffer("z", torch.tensor(-1.0, dtype=torch.float64))  # < 0: not estimated yet

    @property
    def size(self) -> int:
        return int(self.bank.bank.shape[0])

    def check_dataset(self, num_samples: int, where: str) -> None:
        """An error naming ``model.bank_size`` when the bank does not hold one entry per dataset sample."""
        if num_samples != self.size:
            raise ValueError(f"{where}: the dataset has {num_samples} samples but model.bank_size is {self.size}: "
                             f"set model.bank_size={num_samples}")

    def check(self, index: Tensor, where: str) -> None:
        """A clear error when a sample index falls outside the bank (``model.bank_size`` too small)."""
        if int(index.max()) >= self.size or int(index.min()) < 0:
            raise ValueError(f"{where}: sample index {int(index.max())} outside the memory bank of "
                             f"model.bank_size={self.size} (set it to the dataset's size)")

    def scores(self, index: Tensor, f: Tensor) -> Tensor:
        """``(B, 1 + K)``: normalised features ``f`` ``(B, dim)`` against their own entries and K drawn ones."""
        idx = torch.cat([index[:, None], self.bank.negatives(f.shape[0], self.negatives)], dim=1)
        return torch.einsum("bkd,bd->bk", self.bank(idx), f) / self.temperature

    @torch.no_grad()
    def estimate_z(self, scores: Tensor) -> None:
        """Fix Z from ``scores`` unless it is fixed already (the code's first batch)."""
        if float(self.z) < 0:
            self.z.fill_(float(scores.detach().double().exp().mean()) * self.size)

    def loss(self, scores: Tensor) -> Tensor:
        if self.kind == "infonce":
            return F.cross_entropy(scores, torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device))
        self.estimate_z(scores)
        return nce(scores.exp() / float(self.z), self.size)


def fill_banks(ctx: EpochContext, embed: Callable[[dict[str, Any]], Tensor], *banks: BankNCE,
               batch_size: int = 256) -> bool:
    """Before a run's first step, set the entries of the ``banks`` whose ``init`` is ``features`` to ``embed`` of
    their samples, over one pass of the dataset (:meth:`EpochContext.collect`): ``embed(batch)`` gives
    ``(B, len(banks) * dim)``, each bank's features side by side in the order given (normalised here). The
    network's mode is the caller's (the training loop's: train, so BatchNorm sees batch statistics as in the
    steps that follow). Nothing happens after the first step (a resumed run keeps its checkpoint's bank) or when no
    bank asks for it. Returns whether a pass was made."""
    if ctx.step > 0 or ctx.start > 0 or all(bank.init == "random" for bank in banks):
        return False
    features = ctx.collect(embed, batch_size)
    dims = [int(bank.bank.bank.shape[1]) for bank in banks]
    if features.dim() != 2 or features.shape[1] != sum(dims):
        raise ValueError(f"fill_banks: embed gave {tuple(features.shape[1:])} per sample, expected the banks' "
                         f"dimensions side by side ({dims})")
    for bank, part in zip(banks, features.split(dims, dim=1), strict=True):
        if bank.init == "features":
            bank.bank.bank.copy_(F.normalize(part, dim=1).to(bank.bank.bank.dtype))
    return True


def follow_saved_shapes(module: nn.Module, *patterns: str) -> None:
    """Let ``module.load_state_dict`` resize the buffers whose names match ``patterns`` (``fnmatch``) to the saved
    shapes: buffers sized by the dataset (cluster labels, memories), which a method learns only at its first
    epoch, so that a checkpoint loads into a freshly built method."""

    def hook(mod: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
        for name, buf in list(mod.named_buffers()):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != buf.shape and any(fnmatch(name, p) for p in patterns):
                owner_name, _dot, leaf = name.rpartition(".")
                owner = mod.get_submodule(owner_name) if owner_name else mod
                owner._buffers[leaf] = torch.empty(saved.shape, dtype=buf.dtype, device=buf.device)

    module.register_load_state_dict_pre_hook(hook)


def instance_frame(input: str) -> Sampler:
    """The frame of an instance-level method's sample (NPID, CMC, PIRL, DeepCluster v1, SeLa): frame 0 of a still
    image, or one random frame of a video (the video is the instance)."""
    return StillFrame() if input == "images" else FrameSampler(random_clip, {"length": 1})


def sample_index(batch: dict[str, Tensor], where: str, what: str) -> Tensor:
    """``batch["index"]`` as long, or an error saying that ``where`` needs it for ``what``."""
    if "index" not in batch:
        raise ValueError(f"{where}: needs batch['index'], the samples' dataset indices ({what})")
    return batch["index"].long()


def check_clusters(num_clusters: Sequence[int], num_samples: int, where: str) -> None:
    """An error naming ``model.num_clusters`` when a clustering asks for more clusters than the dataset has."""
    if max(num_clusters) > num_samples:
        raise ValueError(f"{where}: model.num_clusters={list(num_clusters)} asks for more clusters than the "
                         f"dataset's {num_samples} samples")


def centre_view(video: Tensor, size: int, input: InputSpace = "rgb") -> Tensor:
    """The un-augmented view of frame 0 of a uint8 batch, normalised for the encoder: the clustering passes'
    input (DeepCluster's ``compute_features``, PCL's), ``(B, 3, size, size)``."""
    return normalize_input(centre_crop_clip(to_float(video[:, :, :1]), size)[:, :, 0], input)


def positive_pair(input: str, max_gap: int) -> Sampler:
    """The frames of a two-view method's sample: frame 0 of a still image (its two views are two augmentations
    of it), or two frames of one video at most ``max_gap`` apart (frame-level positives)."""
    return StillFrame() if input == "images" else FrameSampler(frame_pair, {"max_gap": max_gap})


class TwoViewMethod(SSLMethod):
    """A method whose sample is two views or frames (:func:`positive_pair`) embedded by one backbone-and-head
    ``net`` (SimCLR, SimSiam, Barlow Twins, VICReg, SupCon; SwAV's multi-crop); ``net.backbone`` is the encoder."""

    net: Branch
    views: nn.Module

    def __init__(self, net: Branch, views: nn.Module, input: str, max_gap: int) -> None:
        super().__init__()
        self.net, self.views, self.input, self.max_gap = net, views, input, max_gap

    def sampler(self) -> Sampler:
        return positive_pair(self.input, self.max_gap)

    def encoder(self) -> nn.Module:
        return self.net.backbone

    def embed_views(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x1, x2, z1, z2)``: the two augmented views and ``net``'s embeddings of them, in one pass (the head's
        BN sees both views together, as the authors' code)."""
        x1, x2 = self.views(batch["video"])
        z1, z2 = self.net(torch.cat([x1, x2])).chunk(2)
        return x1, x2, z1, z2
