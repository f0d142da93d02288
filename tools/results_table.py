"""The tables of docs/results.md from the folders ``tools/cpu_results.sh`` and ``tools/image_results.sh`` write:
the score of every evaluated encoder (DAVIS: J&F, J and F from ``RUNS/eval/<name>/global_results-val.csv``;
images: kNN top-1 from ``RUNS/eval/<name>.json``), the training each one had (``RUNS/<name>/metrics.jsonl``),
and per method the mean over seeds, the seed spread and the margin over the random initialisation.

    python tools/results_table.py runs/cpu [--json runs/cpu/results.json]

A method "beats random by more than the spread" when its mean J&F exceeds the random encoders' mean by more
than the larger of the two seed spreads (max - min over seeds). It is compared with the random initialisation
of the same trunk fed the same input, where that was evaluated: ``random_lab`` (MAST-normalised Lab) for MAST,
whose encoder trains and is evaluated on Lab; ``random_reflect`` (a reflect-padded trunk) for CRW's trunk;
``random`` (zero padding, ImageNet-normalised RGB) for the others.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

BASELINES = ("identity", "pixels", "random")  # and random_<variant>: random_lab, random_reflect


def _baseline(group: str) -> bool:
    return group in BASELINES or group.startswith("random_")


def read_global(path: Path) -> dict[str, float]:
    with path.open(newline="") as fh:
        row = next(csv.DictReader(fh))
    return {key: float(value) for key, value in row.items()}


def training(run: Path) -> dict[str, Any]:
    """Steps of a run (its newest checkpoint), last logged loss and mean seconds per step (empty for baselines)."""
    log = run / "metrics.jsonl"
    if not log.is_file():
        return {}
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    if not records:
        return {}
    # the newest checkpoint is what was evaluated; the log may end a few steps before it
    saved = sorted((run / "checkpoints").glob("ckpt_*.pt"))
    steps = int(saved[-1].stem.split("_")[1]) if saved else records[-1]["step"]
    seconds = sum(r.get("time/compute_s", 0.0) + r.get("time/data_wait_s", 0.0) for r in records) / len(records)
    return {"steps": steps, "last_loss": records[-1]["loss"], "step_s": seconds}


def variant(run: Path) -> str:
    """What a run's encoder is fed and how it pads, as the suffix of its random baseline: ``""`` (RGB, zero
    padding), ``"_lab"`` (MAST: Lab input), ``"_reflect"`` (reflect padding), or both."""
    config = run / "config.yaml"
    if not config.is_file():
        return ""
    import yaml

    from vidssl.methods import METHODS  # the tool runs in vidssl's environment
    from vidssl.models import build_backbone

    data = yaml.safe_load(config.read_text()) or {}
    lab = getattr(METHODS.get(data.get("method")), "encoder_input", "rgb") == "lab"
    backbone = (data.get("model") or {}).get("backbone")
    reflect = backbone is not None and build_backbone(backbone).config["padding"] == "reflect"
    return ("_lab" if lab else "") + ("_reflect" if reflect else "")


def collect(runs: Path, eval_dir: str = "eval", score: str = "knn") -> list[dict[str, Any]]:
    """One row per evaluated encoder, ``score`` its J&F (DAVIS), kNN top-1 (images, in %) or pretext-task score
    (``vidssl eval pretext``: in %, with its ``chance``)."""
    found: list[tuple[str, dict[str, Any]]] = []
    for csv_path in sorted((runs / eval_dir).glob("*/global_results-val.csv")):
        scores = read_global(csv_path)
        found.append((csv_path.parent.name, {**scores, "score": scores["J&F-Mean"]}))
    for json_path in sorted((runs / eval_dir).glob("*.json")):
        result = json.loads(json_path.read_text())
        if "knn_top1" in result:
            row = {"kNN": 100 * result["knn_top1"], "score": 100 * result["knn_top1"]}
            if "linear_top1" in result:
                row["linear"] = 100 * result["linear_top1"]
            if score == "linear":
                if "linear" not in row:
                    continue
                row["score"] = row["linear"]
            found.append((json_path.stem, row))
        elif "chance" in result:  # a pretext task: percent for accuracies, the raw value for errors
            scale = 100.0 if result.get("higher_is_better", True) else 1.0
            found.append((json_path.stem, {"score": scale * result["score"], "chance": scale * result["chance"],
                                           "metric": result.get("metric", "score"),
                                           "higher_is_better": result.get("higher_is_better", True)}))
    rows = []
    for name, scores in found:
        match = re.fullmatch(r"(.+)_s(\d+)", name)
        group, seed = (match.group(1), int(match.group(2))) if match else (name, None)
        rows.append({"name": name, "group": group, "seed": seed, "variant": variant(runs / name), **scores,
                     **training(runs / name)})
    return rows


def summarise_pretext(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method: the mean pretext score over seeds, its spread, the mean chance level, and whether it beats
    chance by more than the spread (above it for accuracies, below it for errors)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    out = []
    for group, members in groups.items():
        values = [m["score"] for m in members]
        mean, spread = sum(values) / len(values), max(values) - min(values)
        chance = sum(m["chance"] for m in members) / len(members)
        sign = 1.0 if members[0]["higher_is_better"] else -1.0
        out.append({"group": group, "seeds": len(values), "metric": members[0]["metric"], "mean": mean,
                    "spread": spread, "chance": chance, "margin": sign * (mean - chance),
                    "beats_chance": sign * (mean - chance) > spread})
    return out


def markdown_pretext(summary: list[dict[str, Any]]) -> str:
    lines = ["| method | seeds | pretext metric | mean | spread | chance | margin over chance | beats chance by more "
             "than the spread |", "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['group']} | {s['seeds']} | {s['metric']} | {s['mean']:.4g} | {s['spread']:.3g} | "
                     f"{s['chance']:.4g} | {s['margin']:+.4g} | {'yes' if s['beats_chance'] else 'no'} |")
    return "\n".join(lines)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[str, list[float]] = {}
    variants: dict[str, str] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row["score"])
        variants[row["group"]] = row.get("variant", "")
    out = []
    for group, values in groups.items():
        # the random initialisation of the same trunk fed the same input (Lab for MAST), when it was evaluated
        reference = "random" + variants[group] if "random" + variants[group] in groups else "random"
        if group.startswith("random"):
            reference = group
        elif group in BASELINES:
            reference = "random"
        random = groups.get(reference, [])
        r_mean = sum(random) / len(random) if random else float("nan")
        r_spread = max(random) - min(random) if random else float("nan")
        mean, spread = sum(values) / len(values), max(values) - min(values)
        margin = mean - r_mean
        out.append({"group": group, "seeds": len(values), "mean": mean, "spread": spread, "reference": reference,
                    "margin": margin, "beats_random": not _baseline(group) and margin > max(spread, r_spread)})
    return out


def markdown(rows: list[dict[str, Any]], summary: list[dict[str, Any]], label: str = "kNN top-1") -> str:
    davis = "J&F-Mean" in rows[0]
    linear = not davis and all("linear" in r for r in rows)
    head = "| J&F | J-Mean | F-Mean |" if davis else ("| kNN top-1 (%) | linear top-1 (%) |" if linear
                                                       else "| kNN top-1 (%) |")
    cols = 3 if davis else (2 if linear else 1)
    lines = [f"| encoder | seed {head} steps | s/step |", "|---|---|" + "---|" * cols + "---|---|"]
    for r in rows:
        seed = "" if r["seed"] is None else str(r["seed"])
        steps = str(r.get("steps", ""))
        step_s = f"{r['step_s']:.1f}" if "step_s" in r else ""
        scores = (f"{r['J&F-Mean']:.3f} | {r['J-Mean']:.3f} | {r['F-Mean']:.3f}" if "J&F-Mean" in r
                  else f"{r['kNN']:.2f} | {r['linear']:.2f}" if linear else f"{r['score']:.2f}")
        lines.append(f"| {r['group']} | {seed} | {scores} | {steps} | {step_s} |")
    score = "J&F" if davis else label
    lines += ["", f"| encoder | seeds | mean {score} | spread | random it is compared with | minus random "
              "| beats random by more than the spread |", "|---|---|---|---|---|---|---|"]
    for s in summary:
        verdict = "" if _baseline(s["group"]) else ("yes" if s["beats_random"] else "no")
        lines.append(f"| {s['group']} | {s['seeds']} | {s['mean']:.4f} | {s['spread']:.3f} | {s['reference']} "
                     f"| {s['margin']:+.4f} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, help="the RUNS folder of tools/cpu_results.sh or tools/image_results.sh")
    p.add_argument("--json", type=Path, default=None, help="also write the rows and the summary here")
    p.add_argument("--eval", default="eval", help="the folder under RUNS with the evaluations (default: eval)")
    p.add_argument("--score", default="knn", choices=["knn", "linear"],
                   help="what the summary compares for images: kNN or linear-probe top-1")
    args = p.parse_args(argv)
    rows = collect(args.runs, args.eval, args.score)
    if not rows:
        print(f"error: {args.runs}/{args.eval}: no global_results-val.csv or evaluation JSON found", file=sys.stderr)
        return 2
    if "chance" in rows[0]:
        pretext = summarise_pretext(rows)
        print(markdown_pretext(pretext))
        if args.json is not None:
            args.json.write_text(json.dumps({"rows": rows, "summary": pretext}, indent=2))
        return 0
    summary = summarise(rows)
    print(markdown(rows, summary, "linear top-1" if args.score == "linear" else "kNN top-1"))
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
