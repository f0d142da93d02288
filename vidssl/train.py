"""The training loop every method runs through, its run config, and the ``vidssl train`` command.

One process (CPU or GPU) or many with ``torchrun --nproc_per_node=N -m vidssl train --config X.yaml``.
Each optimiser step: set the learning rate, then for each of ``accum_steps`` micro-batches forward
(``loss, metrics = model(batch)``; the method augments on the device) and backward, then clip, step, the
method's ``after_step`` (EMA, queue), logging and checkpointing; before each epoch the method's
``on_epoch_start`` (clustering, memory refresh), with a pass over the dataset at hand. The loop is typed
against ``vidssl.methods.Method`` and never branches on the method.

``data.batch_size`` is the global batch of one forward pass, split evenly over processes, so a recipe
means the same thing on 1 or 8 GPUs; an optimiser step sees ``batch_size * accum_steps`` samples.

A second data stream (``cotrain:``, labelled still images in the ImageFolder layout) is optional: with it every
micro-batch carries ``batch["cotrain"]`` (``video`` ``(B, 3, 1, H, W)``, ``label``), drawn from its own seeded
order with its own batch size and resumed at its own position; the method's ``cotrain_classes`` and
``cotrain_weight`` follow the section (VIVI-Co: a video method co-trained with labelled images).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from vidssl.engine import checkpoint as ckpt
from vidssl.engine import distributed as dist
from vidssl.engine.config import ConfigError, apply_overrides, did_you_mean, from_dict, read_yaml, to_dict
from vidssl.engine.logging import RunLogger, prepare_run_dir, scalar
from vidssl.engine.optim import build_optimizer, lr_at, set_lr
from vidssl.methods import METHODS, EpochContext, Method
from vidssl.models.record import encoder_entries

HELP = "pretrain an encoder with a self-supervised method (one process, or many under torchrun)"


@dataclass
class DataConfig:
    kind: Literal["video", "images"] = "video"  # what a sample is; a method's model.input follows it
    # a folder, a manifest, a list of folders / files / manifests, or "synthetic" (the built-in generated videos)
    source: str | list[str] = "synthetic"
    size: tuple[int, int] = (224, 224)  # (H, W) of each decoded frame: a window of the resized video
    short_side: int | None = None  # resize videos to this short side first (the scale); None: just cover size
    batch_size: int = 32  # global batch of one forward pass, split over processes
    workers: int = 2  # DataLoader workers per process
    backend: str = "auto"  # video decoder
    # scale frames to the covering size inside the decoder's colour conversion (libswscale's area filter):
    # no full-size RGB frame is made, 1.3-2x faster on 720p-1080p files (docs/benchmarks.md, "Data");
    # false: convert at full size, then cv2.resize (INTER_AREA), as vidssl did before
    resize_in_decoder: bool = True
    short: Literal["loop", "repeat", "skip"] = "loop"  # videos shorter than the sampler needs


@dataclass
class CotrainConfig:
    """A second data stream of labelled still images (``root/<class>/<image>``) beside ``data``."""

    source: str  # the ImageFolder root
    batch_size: int = 32  # its global batch per micro-batch, split over processes like data.batch_size
    size: tuple[int, int] = (224, 224)  # (H, W) window of each image (a random crop covering it)
    weight: float = 1.0  # the supervised loss's weight in the method's total (the method's cotrain_weight)
    workers: int = 2


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam", "adamw", "lars"] = "sgd"
    lr: float = 0.03
    # 0: ``lr`` as given. N: ``lr`` is the rate at a global batch of N, scaled linearly to the run's
    # ``data.batch_size * accum_steps`` (the linear scaling rule; lightly's ``lr_factor``, solo-learn's base lr)
    lr_batch: int = 0
    weight_decay: float = 1.0e-4
    momentum: float = 0.9  # SGD and LARS
    nesterov: bool = False  # SGD's Nesterov momentum
    betas: tuple[float, float] = (0.9, 0.999)  # Adam and AdamW
    clip_grad: float = 0.0  # max global gradient norm; 0 disables clipping
    accum_steps: int = 1  # micro-batches per optimiser step
    amp: bool = False  # fp16 + GradScaler on CUDA, bf16 autocast on CPU
    channels_last: bool = False  # 4-D weights (convolutions) in channels-last memory order
    compile: bool = False  # torch.compile the method's forward (in place: checkpoints keep their keys)


@dataclass
class ScheduleConfig:
    name: Literal["cosine", "step", "constant"] = "cosine"
    steps: int = 1000  # optimiser steps in the whole run
    warmup_steps: int = 0
    milestones: list[int] = field(default_factory=list)  # "step": multiply by gamma at these steps
    gamma: float = 0.1
    # stop early (with a checkpoint) once this invocation has trained for this many minutes; 0: no limit.
    # The learning-rate schedule still follows ``steps``, so a stopped run has not reached its end.
    max_minutes: float = 0.0


@dataclass
class LogConfig:
    every: int = 10  # steps between log records
    tensorboard: bool = True
    progress: bool = True  # tqdm bar (rank 0)


@dataclass
class CkptConfig:
    every: int = 200  # steps between checkpoints (and one at the end)
    keep: int = 3  # newest checkpoints kept; 0 keeps all
    resume: str = "auto"  # auto (newest in out_dir/checkpoints) | none | a checkpoint path


@dataclass
class DistConfig:
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    sync_bn: bool = False


@dataclass
class RunConfig:
    method: str  # a key of vidssl.methods.METHODS
    seed: int = 0
    out_dir: str = "runs/default"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model: dict[str, Any] = field(default_factory=dict)  # the method's own Config, checked against it
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    log: LogConfig = field(default_factory=LogConfig)
    ckpt: CkptConfig = field(default_factory=CkptConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    cotrain: CotrainConfig | None = None  # an optional second stream of labelled images


class NonFiniteLoss(RuntimeError):
    """The loss (or the weights) became NaN or infinite; the last good checkpoint is kept."""


def scaled_lr(optim: OptimConfig, batch_size: int) -> float:
    """The run's peak learning rate: ``optim.lr``, times ``batch_size * accum_steps / lr_batch`` when
    ``optim.lr_batch`` is set (``batch_size``: the global ``data.batch_size``)."""
    if not optim.lr_batch:
        return optim.lr
    return optim.lr * batch_size * optim.accum_steps / optim.lr_batch


def resolve_config(data: dict[str, Any]) -> tuple[RunConfig, Any]:
    """A checked ``RunConfig`` and the method's Config; ``RunConfig.model`` is filled with every default."""
    cfg = from_dict(RunConfig, data)
    if cfg.method not in METHODS:
        raise ConfigError(f"method: unknown method {cfg.method!r}{did_you_mean(cfg.method, list(METHODS))}")
    cfg = replace(cfg, model=_steps_follow_schedule(replace(cfg, model=_input_follows_data(cfg))))
    cfg = replace(cfg, model=_cotrain_follows(cfg))
    try:
        model_cfg = from_dict(METHODS[cfg.method].Config, cfg.model, "model")
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # a method Config's own checks (__post_init__)
        raise ConfigError(f"model: {exc}") from exc
    positive = {"data.batch_size": cfg.data.batch_size, "optim.accum_steps": cfg.optim.accum_steps,
                "schedule.steps": cfg.schedule.steps, "log.every": cfg.log.every, "ckpt.every": cfg.ckpt.every}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}: must be at least 1, got {value}")
    if cfg.optim.lr_batch < 0:
        raise ConfigError(f"optim.lr_batch: must be 0 (no scaling) or a batch size, got {cfg.optim.lr_batch}")
    if cfg.data.workers < 0 or cfg.ckpt.keep < 0 or cfg.schedule.warmup_steps < 0 or cfg.schedule.max_minutes < 0:
        raise ConfigError("data.workers, ckpt.keep, schedule.warmup_steps and schedule.max_minutes must not be "
                          "negative")
    return replace(cfg, model=to_dict(model_cfg)), model_cfg


def _input_follows_data(cfg: RunConfig) -> dict[str, Any]:
    """The method's section with ``input`` set from ``data.kind`` (one intent, one setting): a method whose
    Config has an ``input`` field trains on what the data is; an explicit ``model.input`` must agree."""
    names = {f.name for f in fields(METHODS[cfg.method].Config)}
    if "input" not in names:
        return cfg.model
    given = cfg.model.get("input")
    if given is not None and given != cfg.data.kind:
        raise ConfigError(f"model.input: {given!r} disagrees with data.kind: {cfg.data.kind!r} (they state one "
                          f"intent: drop model.input, it follows data.kind)")
    return {**cfg.model, "input": cfg.data.kind}


def _steps_follow_schedule(cfg: RunConfig) -> dict[str, Any]:
    """The method's section with ``total_steps`` (the length of a method's own schedule: BYOL's momentum, DINO's
    teacher) set to ``schedule.steps`` unless given."""
    names = {f.name for f in fields(METHODS[cfg.method].Config)}
    if "total_steps" not in names or cfg.model.get("total_steps") is not None:
        return cfg.model
    return {**cfg.model, "total_steps": cfg.schedule.steps}


def _cotrain_follows(cfg: RunConfig) -> dict[str, Any]:
    """The method's section with ``cotrain_classes`` (the class folders of ``cotrain.source``) and
    ``cotrain_weight`` (``cotrain.weight``) set from the ``cotrain`` section; a method without those fields
    cannot co-train, and explicit values must agree with the section."""
    names = {f.name for f in fields(METHODS[cfg.method].Config)}
    if cfg.cotrain is None:
        return cfg.model
    able = sorted(k for k, m in METHODS.items() if "cotrain_classes" in {f.name for f in fields(m.Config)})
    if "cotrain_classes" not in names:
        raise ConfigError(f"cotrain: method {cfg.method!r} does not co-train with labelled images (methods that "
                          f"do: {', '.join(able) or 'none'}); drop the cotrain section")
    c = cfg.cotrain
    if c.batch_size < 1:
        raise ConfigError(f"cotrain.batch_size: must be at least 1, got {c.batch_size}")
    if c.weight < 0 or c.workers < 0:
        raise ConfigError(f"cotrain.weight and cotrain.workers must not be negative, got {c.weight}, {c.workers}")
    from vidssl.data.images import image_folder  # the class list exactly as the dataset reads it

    try:
        classes = len(image_folder(c.source)[1])
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"cotrain.source: {exc}") from exc
    follow: dict[str, Any] = {"cotrain_classes": classes, "cotrain_weight": c.weight}
    for key, value in follow.items():
        given = cfg.model.get(key)
        if given is not None and given != value:
            raise ConfigError(f"model.{key}: {given!r} disagrees with the cotrain section ({value!r}); drop "
                              f"model.{key}, it follows cotrain")
    return {**cfg.model, **follow}


def load_run_config(path: str | Path | None, overrides: Sequence[str] = ()) -> tuple[RunConfig, Any]:
    """``resolve_config`` of the YAML at ``path`` (or nothing) with ``key=value`` overrides applied."""
    data = read_yaml(path) if path is not None else {}
    return resolve_config(apply_overrides(data, overrides))


def epoch_indices(n: int, *, seed: int, epoch: int, rank: int, world: int, stream: int = 0) -> np.ndarray:
    """This rank's sample indices for ``epoch``: a seeded permutation of ``range(n)``, padded by wrapping
    to a multiple of ``world`` and strided over ranks (DistributedSampler semantics). ``(ceil(n / world),)``.
    ``stream`` > 0 draws an independent order (the co-training stream's) from the same seed.
    """
    perm = np.random.default_rng([seed, epoch, *([stream] if stream else [])]).permutation(n)
    total = math.ceil(n / world) * world
    return np.resize(perm, total)[rank:total:world]


def _batches(
    dataset: Any, *, seed: int, local_batch: int, workers: int, pin: bool, epoch: int, start: int,
    log: RunLogger, on_epoch: Callable[[int, int], None], stream: int = 0, where: str = "data",
) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Yield ``(epoch, batches consumed in that epoch, batch)`` forever, starting at batch ``start``;
    ``on_epoch(epoch, start)`` runs before each epoch's first batch. ``stream`` > 0: an independent order and
    worker seeds from the same seed (a second data stream, named ``where`` in messages)."""
    while True:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        on_epoch(epoch, start)
        idx = epoch_indices(len(dataset), seed=seed, epoch=epoch, rank=dist.rank(), world=dist.world_size(),
                            stream=stream)
        n_batches = len(idx) // local_batch
        if n_batches == 0:
            raise ValueError(f"{where}: the dataset has {len(dataset)} samples, fewer than one batch of {local_batch} "
                             f"per process (of {dist.world_size()}); lower {where}.batch_size or add data")
        # A private generator: worker seeds must not consume the global torch RNG, or a resumed run's
        # augmentations would differ from an uninterrupted run's.
        seq = np.random.SeedSequence([seed, epoch, dist.rank(), *([stream] if stream else [])])
        gen = torch.Generator().manual_seed(int(seq.generate_state(1)[0]))
        todo = idx[start * local_batch:n_batches * local_batch].tolist()  # resume mid-epoch: skip done batches
        loader = DataLoader(dataset, batch_size=local_batch, sampler=todo, num_workers=workers, pin_memory=pin,
                            drop_last=True, generator=gen)
        # Files skipped in this process, and (with workers) those reported in the items' "skipped" field.
        skipped: set[str] = set()
        for i, batch in enumerate(loader, start=start + 1):
            skipped.update(line for text in batch.get("skipped", ()) for line in str(text).splitlines())
            yield epoch, i, batch
        skipped.update(f"{path}: {reason}" for path, reason in getattr(dataset, "skipped", list)())
        for line in sorted(skipped):
            log.print(f"{'' if where == 'data' else where + ' '}epoch {epoch}: skipped {line}")
        epoch, start = epoch + 1, 0


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch's tensors (and those of a nested batch, the co-training one) on ``device``."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor)
            else _to_device(v, device) if isinstance(v, dict) else v for k, v in batch.items()}


def _dataset_pass(dataset: Any, batch_size: int, workers: int, device: torch.device) -> Iterator[dict[str, Any]]:
    """This process's share of the whole dataset in index order, batch by batch, on ``device``."""
    if batch_size < 1:
        raise ValueError(f"a pass over the dataset needs a positive batch size, got {batch_size}")
    mine = list(range(dist.rank(), len(dataset), dist.world_size()))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=mine, num_workers=workers,
                        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0))
    for batch in loader:
        yield _to_device(batch, device)


def build_dataset_for(cfg: RunConfig, method: Method) -> Dataset:
    """The dataset named by ``cfg.data`` with the method's frame sampler."""
    from vidssl.data.datasets import build_dataset  # imported here: decoders are slow to import

    d = cfg.data
    return build_dataset(d.kind, d.source, sampler=method.sampler(), size=(d.size[0], d.size[1]), seed=cfg.seed,
                         backend=d.backend, short=d.short, short_side=d.short_side,
                         resize_in_decoder=d.resize_in_decoder)


def build_cotrain_dataset(cfg: RunConfig) -> Dataset:
    """The labelled still images of ``cfg.cotrain`` (an ImageFolder root)."""
    from vidssl.data.datasets import ImageFolderDataset

    assert cfg.cotrain is not None
    c = cfg.cotrain
    return ImageFolderDataset(c.source, size=(c.size[0], c.size[1]), seed=cfg.seed)


@dataclass
class TrainResult:
    step: int  # optimiser steps done
    out_dir: Path
    step_seconds: list[float]  # wall time of each step run in this process
    wait_seconds: list[float]  # time of each step spent waiting for data
    samples_per_step: int  # global samples per optimiser step
    last_loss: float


def _forward(model: nn.Module, batch: Any, device: torch.device, method: str, compiled: bool) -> Any:
    """The method's forward; a method that torch.compile cannot trace is named with the option to turn off."""
    if not compiled:
        return model(_to_device(batch, device))
    try:
        return model(_to_device(batch, device))
    except Exception as exc:
        import torch._dynamo.exc as dynamo_exc

        if isinstance(exc, (dynamo_exc.TorchDynamoException, dynamo_exc.BackendCompilerFailed)):
            raise ConfigError(f"optim.compile: method {method!r} does not compile ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300]}); train it with optim.compile=false") from exc
        raise


def train(cfg: RunConfig, *, dataset: Dataset | None = None, cotrain_dataset: Dataset | None = None) -> TrainResult:
    """Run (or resume) training as ``cfg`` says. ``dataset`` replaces the one ``cfg.data`` describes,
    ``cotrain_dataset`` the one of ``cfg.cotrain``."""
    device = dist.setup(cfg.device, cfg.dist.backend)
    rank, world, main = dist.rank(), dist.world_size(), dist.is_main()
    ckpt.set_seed(cfg.seed + rank)
    cfg, model_cfg = resolve_config(to_dict(cfg))  # also fills the model section with its defaults
    raw = METHODS[cfg.method](model_cfg)
    if not isinstance(raw, nn.Module):
        raise TypeError(f"method {cfg.method!r}: {type(raw).__name__} is not an nn.Module")
    raw.to(device)
    o, s = cfg.optim, cfg.schedule
    if o.channels_last:
        raw.to(memory_format=torch.channels_last)
    if o.compile:
        raw.compile()
    base_lr = scaled_lr(o, cfg.data.batch_size)
    optimizer = build_optimizer(raw, o.name, lr=base_lr, weight_decay=o.weight_decay, momentum=o.momentum,
                                betas=o.betas, nesterov=o.nesterov)
    scaler = torch.amp.GradScaler(device.type, enabled=o.amp and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16,
                              enabled=o.amp)
    if cfg.data.batch_size % world:
        raise ConfigError(f"data.batch_size: {cfg.data.batch_size} does not split over {world} processes")
    if cfg.cotrain is not None and cfg.cotrain.batch_size % world:
        raise ConfigError(f"cotrain.batch_size: {cfg.cotrain.batch_size} does not split over {world} processes")
    out, ckpt_dir = Path(cfg.out_dir), Path(cfg.out_dir) / "checkpoints"
    step, epoch, start, rng = 0, 0, 0, None
    co_pos = (0, 0)  # the co-training stream's (epoch, batches consumed)
    found = _find_resume(cfg, ckpt_dir)
    if found is not None:
        path, state = found
        if state["config"]["method"] != cfg.method:
            raise ckpt.CheckpointError(f"{path}: written by method {state['config']['method']!r}, not {cfg.method!r}")
        if cfg.cotrain is not None and "cotrain_position" not in state:
            raise ckpt.CheckpointError(f"{path}: written without the cotrain stream; resume it without the cotrain "
                                       f"section, or start a new run (ckpt.resume=none)")
        raw.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, (epoch, start), rng = state["step"], state["data_position"], state["rng"]
        if cfg.cotrain is not None:
            co_pos = (int(state["cotrain_position"][0]), int(state["cotrain_position"][1]))
    if main:
        prepare_run_dir(out, to_dict(cfg))
    model = dist.wrap_model(raw, device, sync_bn=cfg.dist.sync_bn)
    data_set: Any = dataset if dataset is not None else build_dataset_for(cfg, raw)
    log = RunLogger(out, enabled=main, tensorboard=cfg.log.tensorboard, progress=cfg.log.progress,
                    total=s.steps, initial=step)
    if found is not None:
        log.print(f"resumed from {found[0]} at step {step} (epoch {epoch}, batch {start})")
        changed = _changed(found[1]["config"], to_dict(cfg))
        if changed:
            log.print("config differs from the checkpoint's: " + ", ".join(changed))
    samples = cfg.data.batch_size * o.accum_steps
    result = TrainResult(step, out, [], [], samples, math.nan)

    def forget(params: Iterable[nn.Parameter]) -> None:  # the hook re-initialised these: their state is stale
        for p in params:
            optimizer.state.pop(p, None)

    def on_epoch(epoch: int, start: int) -> None:
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([cfg.seed, epoch, 1]).generate_state(1)[0]))
        ctx = EpochContext(epoch=epoch, step=result.step, start=start, num_samples=len(data_set), device=device,
                           generator=gen, batches=lambda b: _dataset_pass(data_set, b, cfg.data.workers, device),
                           forget=forget)
        was_training = raw.training
        raw.on_epoch_start(ctx)
        raw.train(was_training)

    data = _batches(data_set, seed=cfg.seed, local_batch=cfg.data.batch_size // world, workers=cfg.data.workers,
                    pin=device.type == "cuda", epoch=epoch, start=start, log=log, on_epoch=on_epoch)
    co_data: Iterator[tuple[int, int, dict[str, Any]]] | None = None
    if cfg.cotrain is not None:
        co_set: Any = cotrain_dataset if cotrain_dataset is not None else build_cotrain_dataset(cfg)
        co_data = _batches(co_set, seed=cfg.seed, local_batch=cfg.cotrain.batch_size // world,
                           workers=cfg.cotrain.workers, pin=device.type == "cuda", epoch=co_pos[0],
                           start=co_pos[1], log=log, on_epoch=lambda e, s: None, stream=1, where="cotrain")
    if rng is not None:  # last: building the model and the data must not move the restored generators
        ckpt.set_rng_state(rng[rank % len(rng)])
    interval: list[float] = []
    deadline = time.monotonic() + 60 * s.max_minutes if s.max_minutes > 0 else math.inf
    try:
        while step < s.steps:
            t_start = time.perf_counter()
            wait = 0.0
            lr = lr_at(step, base_lr, name=s.name, steps=s.steps, warmup_steps=s.warmup_steps,
                       milestones=s.milestones, gamma=s.gamma)
            set_lr(optimizer, lr)
            losses = []
            for micro in range(o.accum_steps):
                t0 = time.perf_counter()
                epoch, pos, batch = next(data)
                if co_data is not None:
                    co_epoch, co_i, co_batch = next(co_data)
                    batch, co_pos = {**batch, "cotrain": co_batch}, (co_epoch, co_i)
                wait += time.perf_counter() - t0
                last = micro == o.accum_steps - 1
                # DDP all-reduces gradients on the last micro-batch only
                sync = model.no_sync() if isinstance(model, DistributedDataParallel) and not last else nullcontext()
                with sync:
                    with autocast:
                        loss, metrics = _forward(model, batch, device, cfg.method, o.compile)
                    losses.append(float(dist.all_reduce_mean(loss.detach().float()).item()))
                    if not math.isfinite(losses[-1]):
                        raise NonFiniteLoss(f"loss is {losses[-1]} at step {step + 1} (epoch {epoch}); stopping, "
                                            f"the last good checkpoint in {ckpt_dir} is kept")
                    scaler.scale(loss / o.accum_steps).backward()
            raw.before_step(step)  # gradients of this step are complete (freezing a layer for a while)
            if o.clip_grad > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_([p for p in raw.parameters() if p.requires_grad], o.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            raw.after_step(step)  # the 0-based index of the step just taken
            step += 1
            result.step, result.last_loss = step, sum(losses) / len(losses)
            interval.append(result.last_loss)
            result.wait_seconds.append(wait)
            result.step_seconds.append(time.perf_counter() - t_start)
            log.advance()
            if step % cfg.log.every == 0 or step == s.steps:
                k = len(interval)
                sec, w = sum(result.step_seconds[-k:]), sum(result.wait_seconds[-k:])
                log.log(step, {"loss": sum(interval) / k, "lr": lr, "samples_per_s": samples * k / sec,
                               "time/data_wait_s": w / k, "time/compute_s": (sec - w) / k,
                               "time/data_fraction": w / sec, **{f"method/{n}": scalar(v) for n, v in metrics.items()}})
                interval = []
            # every process must stop at the same step: rank 0's clock decides
            out_of_time = deadline < math.inf and dist.broadcast_flag(time.monotonic() >= deadline, device)
            if step % cfg.ckpt.every == 0 or step == s.steps or out_of_time:
                _save(cfg, raw.state_dict(), encoder_entries(raw.encoder(), raw.encoder_input), optimizer, scaler,
                      step, (epoch, pos), ckpt_dir, log, cotrain_position=co_pos if co_data is not None else None)
                if main:
                    _visuals(raw, _to_device(batch, device), cfg.seed, step, log)
            if out_of_time and step < s.steps:
                log.print(f"stopping at step {step} of {s.steps}: schedule.max_minutes={s.max_minutes:g} reached "
                          f"(the checkpoint resumes the run)")
                break
    finally:
        log.close()
    return result


def _changed(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts, as ``key: old -> new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [c for k in keys for c in _changed(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new or prefix == "ckpt.resume." else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def _find_resume(cfg: RunConfig, ckpt_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    if cfg.ckpt.resume == "none":
        return None
    if cfg.ckpt.resume == "auto":
        return ckpt.load_latest(ckpt_dir)
    path = Path(cfg.ckpt.resume)
    return path, ckpt.load_checkpoint(path)


def _visuals(raw: Method, batch: dict[str, Any], seed: int, step: int, log: RunLogger) -> None:
    """The method's images of the last batch (``Method.visuals``) into the run folder and TensorBoard: in eval mode,
    without gradients, with its randomness drawn from a forked generator so that the run's own is untouched (a
    resumed run repeats an uninterrupted one)."""
    if not isinstance(raw, nn.Module):
        return
    was_training = raw.training
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        raw.eval()
        try:
            images = raw.visuals(batch)
        finally:
            raw.train(was_training)
    for path in log.images(step, images)[:1]:
        log.print(f"step {step}  visuals in {path.parent.parent}")


def _save(cfg: RunConfig, model_state: dict[str, Any], encoder: dict[str, Any], optimizer: torch.optim.Optimizer,
          scaler: torch.amp.GradScaler, step: int, position: tuple[int, int], ckpt_dir: Path, log: RunLogger,
          cotrain_position: tuple[int, int] | None = None) -> None:
    """Write a checkpoint of the state after ``step`` steps (rank 0), refusing to save non-finite weights.
    ``encoder`` holds the entries of the encoder record (``vidssl.models.record.encoder_entries``);
    ``cotrain_position`` the co-training stream's ``(epoch, batches consumed)``."""
    named = [(n, t.detach()) for n, t in model_state.items() if t.is_floating_point()]
    # One fused norm per tensor: NaN or inf anywhere makes it non-finite (and it is ~1000x faster than
    # torch.isfinite(t).all() per tensor on CPU).
    norms = torch.stack(torch._foreach_norm([t for _, t in named])).float().cpu().tolist() if named else []
    bad = [n for (n, _), v in zip(named, norms, strict=True) if not math.isfinite(v)]
    if bad:
        raise NonFiniteLoss(f"{bad[0]} is not finite after step {step}; stopping without writing a checkpoint, "
                            f"the last good one in {ckpt_dir} is kept")
    rngs = dist.gather_objects(ckpt.rng_state())  # every rank's generators, so all resume exactly
    if not dist.is_main():
        return
    state = {"step": step, "data_position": list(position), "model": model_state,
             "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": rngs,
             "config": to_dict(cfg), **encoder}
    if cotrain_position is not None:
        state["cotrain_position"] = list(cotrain_position)
    path = ckpt.save_checkpoint(state, ckpt_dir, step, keep=cfg.ckpt.keep)
    log.print(f"step {step}  saved {path}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="run config YAML (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="type-checked overrides, e.g. optim.lr=0.06 data.batch_size=64 ckpt.resume=none")


def run(args: argparse.Namespace) -> int:
    try:
        cfg, _ = load_run_config(args.config, args.overrides)
        result = train(cfg)
        if dist.is_main():
            print(f"done: {result.step} steps, last loss {result.last_loss:.6g}, run directory {result.out_dir}")
    except (ConfigError, NonFiniteLoss, ckpt.CheckpointError, ValueError) as exc:  # a message, no traceback
        print(f"vidssl train: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    finally:
        dist.cleanup()
    return 0
