"""The ``vidssl`` command: one sub-command per job, each defined next to the code it runs.

Every command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# (command words, module). A module listed here owns its arguments and its behaviour.
COMMANDS: list[tuple[tuple[str, ...], str]] = [
    (("demo",), "vidssl.demo"),
    (("train",), "vidssl.train"),
    (("export",), "vidssl.models.export"),
    (("data", "index"), "vidssl.data.index"),
    (("data", "prepare"), "vidssl.data.prepare"),
    (("data", "synth-actions"), "vidssl.data.synthetic_actions"),
    (("eval", "davis"), "vidssl.eval.davis"),
    (("eval", "davis-score"), "vidssl.eval.davis_metrics"),
    (("eval", "jhmdb"), "vidssl.eval.jhmdb"),
    (("eval", "vip"), "vidssl.eval.vip"),
    (("eval", "knn"), "vidssl.eval.probes"),
    (("eval", "pretext"), "vidssl.pretext"),
    (("eval", "action"), "vidssl.eval.action"),
]

GROUP_HELP = {
    "data": "index and prepare video data",
    "eval": "evaluate encoders: label propagation, official metrics, probes",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidssl",
        description="Self-supervised learning from raw video and visual correspondence.",
    )
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for words, module_name in COMMANDS:
        module = importlib.import_module(module_name)
        if len(words) == 1:
            sub = top.add_parser(words[0], help=module.HELP, description=module.HELP)
        else:
            group, name = words
            if group not in groups:
                gp = top.add_parser(group, help=GROUP_HELP[group], description=GROUP_HELP[group])
                groups[group] = gp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
            sub = groups[group].add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
