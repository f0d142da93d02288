"""Atomic checkpoints, keep-last-k, newest-complete lookup and the full RNG state.

A checkpoint is written to a temporary file in the same folder, flushed and fsynced, renamed over its
final name with ``os.replace`` (atomic on POSIX) and the folder is fsynced, so a crash at any moment leaves
either the previous set of checkpoints or the new one, never a half-written ``ckpt_*.pt``. Temporary
files left by a crash (``.ckpt_*.tmp``) are ignored and reported.

A training checkpoint (``vidssl.train``) holds: ``step`` (optimiser steps done, which is also the
schedule's position), ``data_position`` ``[epoch, batches consumed in it]``, ``model``, ``optimizer``,
``scaler`` (AMP), ``rng`` (one ``rng_state()`` per rank), ``config`` (the resolved run config), and for
export and evaluation ``encoder`` (the backbone's state dict) and ``backbone`` (``ResNet.config``, its
rebuild recipe for ``vidssl.models.backbone_from_config``).
"""

from __future__ import annotations

import os
import random
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

_NAME = re.compile(r"^ckpt_(\d{8,})\.pt$")
TMP_PREFIX = ".ckpt_"
TMP_SUFFIX = ".tmp"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or used; the message names the file."""


def checkpoint_path(directory: str | Path, step: int) -> Path:
    """``directory/ckpt_<step, 8 digits>.pt``."""
    return Path(directory) / f"ckpt_{step:08d}.pt"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temporary file, fsync, ``os.replace``, fsync folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first (by step)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def stray_temporaries(directory: str | Path) -> list[Path]:
    """Temporary files left by an interrupted write (never loaded)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.startswith(TMP_PREFIX) and p.name.endswith(TMP_SUFFIX))


def save_checkpoint(state: dict[str, Any], directory: str | Path, step: int, *, keep: int) -> Path:
    """Write ``state`` as ``ckpt_<step>.pt`` atomically, then delete all but the newest ``keep`` (0: keep all)."""
    path = atomic_save(state, checkpoint_path(directory, step))
    if keep > 0:
        for old in list_checkpoints(directory)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint dict (tensors and plain Python only: loaded with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc})") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(state).__name__}")
    return state


def load_latest(
    directory: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint in ``directory`` (None if there is none).

    Stray temporary files are reported and ignored; an unreadable checkpoint (which atomic writes should
    make impossible, but disks fail) is reported and the next older one is tried.
    """
    strays = stray_temporaries(directory)
    if strays:
        warnings.warn(
            f"{directory}: ignoring {len(strays)} temporary file(s) from an interrupted write: "
            + ", ".join(p.name for p in strays),
            stacklevel=2,
        )
    for path in reversed(list_checkpoints(directory)):
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as exc:
            warnings.warn(f"skipping unreadable checkpoint: {exc}", stacklevel=2)
    return None


def set_seed(seed: int) -> None:
    """Seed Python, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the global generator third-party code may use)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG state this process uses: Python, NumPy's global generator, torch CPU and all CUDA devices.

    Stored as tensors and plain values so checkpoints load with ``weights_only=True``.
    """
    np_state = np.random.get_state(legacy=True)  # noqa: NPY002 (saved for exact resume)
    assert isinstance(np_state, tuple)
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": np_state[0], "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned (CUDA states only where CUDA is present)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
