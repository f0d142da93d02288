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


def collect(runs: Path) -> list[dict[str, Any]]:
    """One row per evaluated encoder, ``score`` its J&F (DAVIS) or kNN top-1 (images, in %)."""
    found: list[tuple[str, dict[str, float]]] = []
    for csv_path in sorted((runs / "eval").glob("*/global_results-val.csv")):
        scores = read_global(csv_path)
        found.append((csv_path.parent.name, {**scores, "score": scores["J&F-Mean"]}))
    for json_path in sorted((runs / "eval").glob("*.json")):
        knn = json.loads(json_path.read_text())
        found.append((json_path.stem, {"kNN": 100 * knn["knn_top1"], "score": 100 * knn["knn_top1"]}))
    rows = []
    for name, scores in found:
        match = re.fullmatch(r"(.+)_s(\d+)", name)
        group, seed = (match.group(1), int(match.group(2))) if match else (name, None)
        rows.append({"name": name, "group": group, "seed": seed, "variant": variant(runs / name), **scores,
                     **training(runs / name)})
    return rows


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


def markdown(rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> str:
    davis = "J&F-Mean" in rows[0]
    head = "| J&F | J-Mean | F-Mean |" if davis else "| kNN top-1 (%) |"
    lines = [f"| encoder | seed {head} steps | s/step |", "|---|---|" + "---|" * (3 if davis else 1) + "---|---|"]
    for r in rows:
        seed = "" if r["seed"] is None else str(r["seed"])
        steps = str(r.get("steps", ""))
        step_s = f"{r['step_s']:.1f}" if "step_s" in r else ""
        scores = (f"{r['J&F-Mean']:.3f} | {r['J-Mean']:.3f} | {r['F-Mean']:.3f}" if "J&F-Mean" in r
                  else f"{r['score']:.2f}")
        lines.append(f"| {r['group']} | {seed} | {scores} | {steps} | {step_s} |")
    score = "J&F" if davis else "kNN top-1"
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
    args = p.parse_args(argv)
    rows = collect(args.runs)
    if not rows:
        print(f"error: {args.runs}/eval: no global_results-val.csv or kNN JSON found", file=sys.stderr)
        return 2
    summary = summarise(rows)
    print(markdown(rows, summary))
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
