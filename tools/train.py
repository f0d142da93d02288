"""``python tools/train.py --config configs/X.yaml [key=value ...]``: the same as ``vidssl train``.

Also under torchrun: ``torchrun --nproc_per_node=N tools/train.py --config ...``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vidssl import train


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/train.py", description=train.HELP)
    train.add_arguments(parser)
    return train.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
