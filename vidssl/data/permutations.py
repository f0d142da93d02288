"""Permutation sets for the jigsaw task: tile orders far apart in Hamming distance (Noroozi & Favaro 2016).

The jigsaw classifier predicts which of P fixed permutations shuffled the tiles. Noroozi & Favaro choose the set
greedily for a large minimal Hamming distance between its members (section 3.2; their "maximal" set): the more
two permutations differ, the less the task can be solved from a few tiles. :func:`max_hamming_permutations` makes
such a set, ``tools/jigsaw_permutations.py`` stores one next to the jigsaw configs (100 and 1000), and
:func:`load_permutations` reads and checks a stored one.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

__all__ = ["hamming_distances", "load_permutations", "max_hamming_permutations", "min_hamming"]


def hamming_distances(perms: np.ndarray) -> np.ndarray:
    """``(P, n)`` permutations -> ``(P, P)`` pairwise Hamming distances (positions that differ)."""
    perms = np.asarray(perms)
    return (perms[:, None, :] != perms[None, :, :]).sum(axis=2)


def min_hamming(perms: np.ndarray) -> int:
    """The smallest Hamming distance between two different members of the set."""
    perms = np.asarray(perms)
    if len(perms) < 2:
        return 0
    d = hamming_distances(perms)
    np.fill_diagonal(d, perms.shape[1] + 1)  # above any distance between two members
    return int(d.min())


def max_hamming_permutations(count: int, n: int = 9, seed: int = 0) -> np.ndarray:
    """``(count, n)`` permutations of ``range(n)`` chosen greedily for a maximal minimal Hamming distance: a random
    first member, then each time the candidate whose distance to its nearest chosen member is largest (ties broken
    at random). All ``n!`` permutations are candidates (9! = 362,880 for the 3 x 3 puzzle). Deterministic in
    ``seed``."""
    if n < 2 or not 1 <= count <= _factorial(n):
        raise ValueError(f"max_hamming_permutations: need n >= 2 and 1 <= count <= n! ({_factorial(n)}), got "
                         f"count={count}, n={n}")
    rng = np.random.default_rng(seed)
    every = np.array(list(itertools.permutations(range(n))), dtype=np.int8)
    chosen = [int(rng.integers(len(every)))]
    nearest = (every != every[chosen[0]]).sum(axis=1).astype(np.int16)  # distance to the nearest chosen member
    for _ in range(count - 1):
        best = np.flatnonzero(nearest == nearest.max())
        pick = int(best[rng.integers(len(best))])
        chosen.append(pick)
        nearest = np.minimum(nearest, (every != every[pick]).sum(axis=1))
    return every[chosen].astype(np.int64)


def _factorial(n: int) -> int:
    out = 1
    for i in range(2, n + 1):
        out *= i
    return out


def load_permutations(path: str | Path, n: int = 9) -> np.ndarray:
    """A stored set (``{"permutations": [[...], ...], "min_hamming": d, ...}``) as ``(P, n)`` int64, checked: every
    row a permutation of ``range(n)``, no row twice, and the minimal Hamming distance the file claims."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: permutation set not found (make one with tools/jigsaw_permutations.py)")
    try:
        data = json.loads(path.read_text())
        perms = np.asarray(data["permutations"], dtype=np.int64)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a permutation set ({exc})") from exc
    if perms.ndim != 2 or perms.shape[1] != n or not (np.sort(perms, axis=1) == np.arange(n)).all():
        raise ValueError(f"{path}: every row must be a permutation of 0..{n - 1}, got an array of shape {perms.shape}")
    if len(np.unique(perms, axis=0)) != len(perms):
        raise ValueError(f"{path}: a permutation appears twice")
    claimed = data.get("min_hamming")
    if claimed is not None and int(claimed) != min_hamming(perms):
        raise ValueError(f"{path}: claims a minimal Hamming distance of {claimed}, the set has {min_hamming(perms)}")
    return perms
