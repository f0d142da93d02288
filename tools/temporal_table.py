"""The temporal-order table of docs/results.md from the folder ``tools/temporal_results.sh`` writes.

    python tools/temporal_table.py runs/temporal [--json runs/temporal/table.json]

Per method (mean over seeds, seed spread = max - min): the own task on the DAVIS frames against its chance level
(``eval/pretext_<method>_s<seed>.json``), the synthetic-action linear probe against the random trunk
(``eval/action_<name>.json``) and, where it was run, DAVIS J&F against the random trunk
(``eval/davis_<name>/global_results-val.csv``). Each downstream row has two random references where both were
evaluated: the random trunk as initialised (``random``) and the same weights with batch-norm statistics recomputed
on the training videos (``random_bn``, ``tools/random_encoder.py --bn-from``), which any short training run gets for
free. A method passes its pretext row when its mean beats chance by more than its spread, and a downstream row when
its mean beats every reference evaluated for that row by more than the larger of the two spreads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from results_table import read_global, training


def _seeds(eval_dir: Path, prefix: str, name: str) -> dict[int, Path]:
    return {int(p.stem.rsplit("_s", 1)[1]): p for p in sorted(eval_dir.glob(f"{prefix}_{name}_s*.json"))}


def _stats(values: list[float]) -> tuple[float, float]:
    return (statistics.fmean(values), max(values) - min(values)) if values else (float("nan"), float("nan"))


REFERENCES = ("random", "random_bn")  # the random trunks, as initialised and with recalibrated batch norm


def collect(runs: Path) -> dict[str, Any]:
    eval_dir = runs / "eval"
    methods = sorted({p.stem.rsplit("_s", 1)[0].removeprefix("pretext_") for p in eval_dir.glob("pretext_*_s*.json")}
                     | {p.stem.rsplit("_s", 1)[0].removeprefix("action_") for p in eval_dir.glob("action_*_s*.json")}
                     - set(REFERENCES))

    def action(name: str) -> list[float]:
        return [json.loads(p.read_text())["linear"]["video_top1"] for p in _seeds(eval_dir, "action", name).values()]

    def davis(name: str) -> list[float]:
        paths = sorted(eval_dir.glob(f"davis_{name}_s*/global_results-val.csv"))
        return [read_global(p)["J&F-Mean"] for p in paths]

    out: dict[str, Any] = {ref: {"action": _stats(action(ref)), "davis": _stats(davis(ref))} for ref in REFERENCES}
    out["methods"] = {}
    for m in methods:
        pretext = [json.loads(p.read_text()) for p in _seeds(eval_dir, "pretext", m).values()]
        runs_m = sorted(p for p in runs.glob(f"{m}_s*") if p.is_dir())
        out["methods"][m] = {
            "pretext": _stats([r["score"] for r in pretext]),
            "chance": pretext[0]["chance"] if pretext else float("nan"),
            "pretext_count": pretext[0]["count"] if pretext else 0,
            "action": _stats(action(m)), "davis": _stats(davis(m)),
            "steps": [training(r).get("steps") for r in runs_m],
        }
    return out


def _cell(stats: tuple[float, float], pct: bool = True) -> str:
    mean, spread = stats
    if mean != mean:  # nan: not evaluated
        return "-"
    k = 100 if pct else 1
    return f"{k * mean:.1f} ({k * spread:.1f})" if pct else f"{mean:.4f} ({spread:.4f})"


def _passes(mean: float, spread: float, *references: tuple[float, float]) -> str:
    """"yes" when ``mean`` beats every evaluated reference ``(mean, spread)`` by more than the larger spread."""
    present = [r for r in references if r[0] == r[0]]
    if mean != mean or not present:
        return ""
    return "yes" if all(mean - r_mean > max(spread, r_spread) for r_mean, r_spread in present) else "no"


def markdown(table: dict[str, Any]) -> str:
    ra, rd, rba, rbd = (table[ref][row] for ref in REFERENCES for row in ("action", "davis"))
    lines = ["| method | steps | own task on DAVIS frames | chance | passes | synthetic actions, linear | "
             "random trunk | random trunk, BN recalibrated | passes | DAVIS J&F | random trunk | "
             "random trunk, BN recalibrated | passes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m, row in table["methods"].items():
        p, a, d = row["pretext"], row["action"], row["davis"]
        steps = "/".join(str(s) for s in row["steps"] if s is not None)
        own = _passes(*p, (row["chance"], 0.0))
        lines.append(f"| {m} | {steps} | {_cell(p)} | {100 * row['chance']:.1f} | {own} | "
                     f"{_cell(a)} | {_cell(ra)} | {_cell(rba)} | {_passes(*a, ra, rba)} | {_cell(d, False)} | "
                     f"{_cell(rd, False)} | {_cell(rbd, False)} | {_passes(*d, rd, rbd)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not (args.runs / "eval").is_dir():
        print(f"{args.runs}: no eval/ folder (run tools/temporal_results.sh first)", file=sys.stderr)
        return 1
    table = collect(args.runs)
    print(markdown(table))
    if args.json is not None:
        args.json.write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
