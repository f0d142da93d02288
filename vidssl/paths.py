"""Where vidssl finds shared data and keeps its caches.

One setting each: ``VIDSSL_DATA`` for the real data used by tests and benchmarks (default:
``../shared/data`` beside the repository, when it exists) and ``VIDSSL_CACHE`` for caches (default:
the user cache directory). Nothing is ever written next to the user's data.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path | None:
    """The shared real-data folder, or None when it is not there."""
    env = os.environ.get("VIDSSL_DATA")
    if env:
        return Path(env)
    for candidate in (REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return None


def cache_dir(*parts: str) -> Path:
    """A folder under the user cache directory (``$VIDSSL_CACHE`` or ``~/.cache/vidssl``), created."""
    base = os.environ.get("VIDSSL_CACHE")
    if base:
        root = Path(base)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "vidssl"
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
