"""Write a jigsaw permutation set of maximal Hamming distance (Noroozi & Favaro 2016) as JSON.

    python tools/jigsaw_permutations.py --count 100 --out configs/jigsaw_permutations_100.json

The stored file records the count, the seed and the minimal Hamming distance between two members, which
``vidssl.data.permutations.load_permutations`` checks when a run reads it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vidssl.data.permutations import hamming_distances, max_hamming_permutations, min_hamming


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, required=True, help="permutations in the set (the paper: 100, 1000)")
    parser.add_argument("--tiles", type=int, default=9, help="tiles per puzzle (3 x 3: 9)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    perms = max_hamming_permutations(args.count, args.tiles, args.seed)
    d, pairs = min_hamming(perms), hamming_distances(perms)
    mean = float(pairs.sum() / max(1, len(perms) * (len(perms) - 1)))
    args.out.write_text(json.dumps({"count": args.count, "tiles": args.tiles, "seed": args.seed, "min_hamming": d,
                                    "mean_hamming": round(mean, 4),
                                    "method": "greedy maximal minimal Hamming distance over all permutations",
                                    "permutations": perms.tolist()}) + "\n")
    print(f"{args.out}: {args.count} permutations of {args.tiles} tiles, minimal Hamming distance {d}, mean {mean:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
