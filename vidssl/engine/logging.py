"""The run directory and what a run reports: stdout lines, ``metrics.jsonl``, TensorBoard and a tqdm bar.

A run directory holds ``config.yaml`` (the resolved config), ``env.json`` (git commit, library versions),
``metrics.jsonl`` (one JSON record per logged step, full precision), ``tb/`` (TensorBoard events) and
``checkpoints/``. Only rank 0 writes; other ranks get a ``RunLogger`` that does nothing.
"""

from __future__ import annotations

import importlib
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from vidssl.engine.config import save_config
from vidssl.paths import REPO_ROOT


def git_commit(root: Path = REPO_ROOT) -> str:
    """The checked-out commit of the vidssl source (``-dirty`` appended with local changes), or ``unknown``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "") if commit else "unknown"


def _version(module: str) -> str:
    try:
        return str(getattr(importlib.import_module(module), "__version__", "unknown"))
    except Exception:  # a broken optional decoder must not stop a run; record why
        return "not installed"


def environment() -> dict[str, Any]:
    """What produced a run: git commit, Python, platform and the versions of the libraries that matter."""
    return {
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "decord": _version("decord"),
        "kornia": _version("kornia"),
        "cuda": torch.version.cuda or "none",
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "argv": sys.argv,
    }


def prepare_run_dir(out_dir: str | Path, resolved_config: dict[str, Any]) -> Path:
    """Create ``out_dir`` and write ``config.yaml`` and ``env.json`` into it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(resolved_config, out / "config.yaml")
    (out / "env.json").write_text(json.dumps(environment(), indent=2) + "\n")
    return out


def scalar(value: Any) -> float:
    """A metric value (float or 0-dim tensor) as a Python float."""
    return float(value.detach().item()) if isinstance(value, torch.Tensor) else float(value)


class RunLogger:
    """Writes one record per logged step to stdout, ``metrics.jsonl`` and TensorBoard; drives a tqdm bar.

    Args:
        out_dir: the run directory (None: stdout only).
        enabled: False on ranks other than 0 (then every method does nothing).
        tensorboard: write ``out_dir/tb`` events.
        progress: show a tqdm bar over ``total`` steps starting at ``initial``.
    """

    def __init__(
        self,
        out_dir: Path | None,
        *,
        enabled: bool = True,
        tensorboard: bool = True,
        progress: bool = True,
        total: int = 0,
        initial: int = 0,
    ) -> None:
        self.enabled = enabled
        self.out_dir = out_dir
        self.writer: Any = None
        self.jsonl: Any = None
        self.bar: tqdm | None = None
        if not enabled:
            return
        if out_dir is not None:
            self.jsonl = (out_dir / "metrics.jsonl").open("a")
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter  # imported lazily: slow to import

                self.writer = SummaryWriter(str(out_dir / "tb"))
        if progress:
            self.bar = tqdm(total=total, initial=initial, dynamic_ncols=True, desc="train", file=sys.stderr)

    def print(self, message: str) -> None:
        """A line on stdout that does not break the progress bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message, file=sys.stdout)
        else:
            print(message, flush=True)

    def advance(self, steps: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(steps)

    def log(self, step: int, values: dict[str, float]) -> None:
        """Record ``values`` for ``step`` (already floats) everywhere."""
        if not self.enabled:
            return
        if self.jsonl is not None:  # the file first: a line on stdout means the record is on disk
            self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
            self.jsonl.flush()
        shown = "  ".join(f"{k} {v:.6g}" for k, v in values.items())
        self.print(f"step {step}  {shown}")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key if "/" in key else f"train/{key}", value, step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{values.get('loss', float('nan')):.4g}", refresh=False)

    def images(self, step: int, images: dict[str, torch.Tensor]) -> list[Path]:
        """Write each RGB batch in [0, 1], ``(N, 3, H, W)`` (rows of 8) or ``(rows, N, 3, H, W)``, as a grid:
        ``out_dir/visuals/<name>/<step>.png`` and a TensorBoard image (``visuals/<name>``); images under 64 px are
        enlarged by an integer factor (nearest). Returns the files written."""
        if not self.enabled or not images:
            return []
        from torchvision.utils import make_grid, save_image

        written = []
        for name, batch in images.items():
            if batch.dim() not in (4, 5) or batch.shape[-3] != 3:
                raise ValueError(f"visuals[{name!r}]: expected (N, 3, H, W) or (rows, N, 3, H, W) RGB images, got "
                                 f"{tuple(batch.shape)}")
            nrow = batch.shape[1] if batch.dim() == 5 else 8
            shown = batch.detach().float().clamp(0, 1).cpu().flatten(0, batch.dim() - 4)
            if shown.shape[-2] < 64:  # small images (CIFAR's 32 px) enlarged, pixel for pixel, to be seen
                shown = torch.nn.functional.interpolate(shown, scale_factor=-(-64 // shown.shape[-2]), mode="nearest")
            grid = make_grid(shown, nrow=nrow, padding=1)
            if self.out_dir is not None:
                path = self.out_dir / "visuals" / name / f"{step:08d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                save_image(grid, path)
                written.append(path)
            if self.writer is not None:
                self.writer.add_image(f"visuals/{name}", grid, step)
        return written

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.jsonl is not None:
            self.jsonl.close()
