"""The data layer's one reading error."""

from __future__ import annotations

from pathlib import Path

__all__ = ["VideoError"]


class VideoError(RuntimeError):
    """A reading failure; ``str(err) == f"{path}: {problem}"``."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
