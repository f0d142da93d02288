"""The cross-evaluation table: every encoder, image- or video-trained, by the CIFAR-10 kNN and linear probes and
by DAVIS-2017 label propagation, one row per method (mean and seed spread), written into docs/results.md.

    python tools/cross_eval.py runs/image/simclr_s0 runs/image/simclr_s1 runs/cpu30/crw_s0 ... \\
        --baselines random:resnet18:0 random:resnet18:1 random:resnet18_s8_l3:0 random:resnet18_s8_l3:1 \\
        --cifar ../shared/data/cifar10 --davis-root ../shared/data/davis --out runs/cross [--linear] \\
        [--jobs 2] [--update docs/results.md]

An ENCODER is a run folder (its newest checkpoint; named after the folder), a checkpoint file, or
``random:BACKBONE[:SEED]`` (a random initialisation). Each goes through ``vidssl eval knn`` (k 200, t 0.1,
cosine; ``--linear``: the offline linear probe too) and ``vidssl eval davis`` with ``--davis-config``
(configs/eval/crw.yaml); ``--only knn`` (or ``davis``) runs one of the two. Label propagation reads a ResNet as
CRW reads one: layer3 at output stride 8 (``--layers 3 --stride 8``: a trunk trained at stride 32 keeps its weights
on the finer grid); a trunk whose layer3 cannot reach stride 8 (the CIFAR stem: stride 4 there) keeps its layers
and runs at stride 8; other trunks (a ViT) as they are. Every evaluation writes its result under
``--out/<name>/`` and is skipped when that is there, so a killed run resumes; one that fails (a clip trunk has no
frame features, say) leaves its log and an ``n/a`` cell. Rows group encoders by their name without the
``_s<seed>`` suffix. ``--update FILE`` replaces the part of FILE between ``<!-- cross-eval:begin -->`` and
``<!-- cross-eval:end -->`` (appended as a new section when FILE has no such part).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BEGIN, END = "<!-- cross-eval:begin -->", "<!-- cross-eval:end -->"
COLUMNS = (("knn", "CIFAR kNN"), ("linear", "CIFAR linear"), ("davis", "DAVIS J&F"))


class Encoder(NamedTuple):
    """One encoder to evaluate: its name (``simclr_s0``), the ``--encoder`` spec and the options the evaluators
    need for it (a random trunk's backbone and seed)."""

    name: str
    spec: str
    backbone: str | None = None
    seed: int | None = None

    @property
    def group(self) -> str:
        return re.sub(r"_s\d+$", "", self.name)

    def args(self) -> list[str]:
        out = ["--encoder", self.spec]
        if self.backbone is not None:
            out += ["--backbone", self.backbone]
        if self.seed is not None:
            out += ["--seed", str(self.seed)]
        return out


def parse_encoder(text: str) -> Encoder:
    """``random:BACKBONE[:SEED]``, a run folder (newest ``checkpoints/ckpt_*.pt``) or a checkpoint file."""
    if text.startswith("random:"):
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[1] or (len(parts) == 3 and not parts[2].isdigit()):
            raise ValueError(f"{text}: expected random:BACKBONE or random:BACKBONE:SEED")
        seed = int(parts[2]) if len(parts) == 3 else 0
        return Encoder(f"random_{parts[1]}_s{seed}", "random", parts[1], seed)
    path = Path(text)
    if path.is_dir():
        found = sorted((path / "checkpoints").glob("ckpt_*.pt"))
        if not found:
            raise ValueError(f"{path}: a folder without checkpoints/ckpt_*.pt (not a finished run)")
        return Encoder(path.name, str(found[-1]))
    if path.is_file():
        name = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
        return Encoder(name, str(path))
    raise ValueError(f"{text}: no such run folder or checkpoint, and not random:BACKBONE[:SEED]")


def davis_reading(encoder: Encoder) -> list[str]:
    """The ``--layers`` / ``--stride`` options label propagation reads this encoder's trunk with."""
    from vidssl.models.record import load_record
    from vidssl.models.resnet import ResNet

    net = load_record(encoder.spec, backbone=encoder.backbone or "resnet18_s8_l3", seed=encoder.seed or 0).backbone
    if not isinstance(net, ResNet):
        return []
    strides = list(net.config["strides"])
    stem = net.stride
    for s in strides:
        stem //= s
    if len(strides) >= 3 and stem * strides[0] * strides[1] * strides[2] >= 8:
        return ["--layers", "3", "--stride", "8"]
    return ["--stride", "8"] if net.stride > 8 else []


def jobs_for(encoder: Encoder, args: argparse.Namespace) -> list[tuple[str, list[str], Path, Path]]:
    """``(kind, command, result file, log)`` of the evaluations of one encoder."""
    out = args.out / encoder.name
    python = [sys.executable, "-m", "vidssl", "eval"]
    knn = [*python, "knn", "--data", str(args.cifar), *encoder.args(), "--json", str(out / "knn.json")]
    if args.linear:
        knn.append("--linear")
    davis = [*python, "davis", "--davis-root", str(args.davis_root), "--out", str(out / "davis"),
             "--config", str(args.davis_config), *encoder.args()]
    if args.sequences:
        davis += ["--sequences", *args.sequences]
    jobs = [("knn", knn, out / "knn.json", out / "knn.log"),
            ("davis", davis, out / "davis" / "global_results-val.csv", out / "davis.log")]
    return [job for job in jobs if job[0] in args.only]


def run_job(command: list[str], log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with log.open("w") as fh:
        return subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT, env=env, check=False).returncode


def read_scores(encoder: Encoder, out: Path) -> dict[str, float]:
    """The scores an encoder has so far: ``knn``, ``linear`` (top-1, 0-1) and ``davis`` (J&F)."""
    scores: dict[str, float] = {}
    knn = out / encoder.name / "knn.json"
    if knn.is_file():
        data = json.loads(knn.read_text())
        scores["knn"] = float(data["knn_top1"])
        if "linear_top1" in data:
            scores["linear"] = float(data["linear_top1"])
    davis = out / encoder.name / "davis" / "global_results-val.csv"
    if davis.is_file():
        with davis.open(newline="") as fh:
            scores["davis"] = float(next(csv.DictReader(fh))["J&F-Mean"])
    return scores


def group_rows(encoders: list[Encoder], scores: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per group: for each column the mean, the spread (max - min) and the number of encoders scored."""
    groups: dict[str, list[Encoder]] = {}
    for encoder in encoders:
        groups.setdefault(encoder.group, []).append(encoder)
    rows = []
    for group, members in groups.items():
        row: dict[str, Any] = {"encoder": group, "members": [m.name for m in members]}
        for key, _ in COLUMNS:
            values = [scores[m.name][key] for m in members if key in scores[m.name]]
            if values:
                row[key] = {"mean": statistics.fmean(values), "spread": max(values) - min(values), "n": len(values)}
        rows.append(row)
    return rows


def _cell(entry: dict[str, float] | None, percent: bool) -> str:
    if entry is None:
        return "n/a"
    scale, digits = (100.0, 1) if percent else (1.0, 3)
    text = f"{scale * entry['mean']:.{digits}f}"
    return text + (f" ({scale * entry['spread']:.{digits}f}, {entry['n']})" if entry["n"] > 1 else "")


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    """The table, with the command that made it."""
    lines = [f"`{command}`", "", "Mean over seeds (spread = max - min, number of seeds); kNN and linear top-1 in %, "
             "J&F of label propagation.", "",
             "| encoder | " + " | ".join(title for _, title in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [_cell(row.get(key), key != "davis") for key, _ in COLUMNS]
        lines.append(f"| {row['encoder']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def update_document(path: Path, table: str) -> None:
    """Put ``table`` between the markers of ``path`` (or append a section holding them)."""
    text = path.read_text() if path.is_file() else ""
    block = f"{BEGIN}\n{table}{END}"
    if BEGIN in text and END in text and text.index(BEGIN) < text.index(END):
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + (
            "## Cross-evaluation: every encoder by the CIFAR-10 probes and DAVIS label propagation\n\n" + block + "\n")
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("encoders", nargs="*", help="run folders, checkpoints or random:BACKBONE[:SEED]")
    parser.add_argument("--baselines", nargs="*", default=[], help="more encoders (random:BACKBONE:SEED ...)")
    parser.add_argument("--cifar", type=Path, required=True, help="folder with train/<class>/ and test/<class>/")
    parser.add_argument("--davis-root", type=Path, required=True)
    parser.add_argument("--davis-config", type=Path, default=Path("configs/eval/crw.yaml"))
    parser.add_argument("--sequences", nargs="*", default=None, help="default: the root's val.txt")
    parser.add_argument("--linear", action="store_true", help="also the offline linear probe")
    parser.add_argument("--only", nargs="+", choices=("knn", "davis"), default=["knn", "davis"],
                        help="run these evaluations only (the table keeps what earlier runs left)")
    parser.add_argument("--out", type=Path, default=Path("runs/cross"))
    parser.add_argument("--jobs", type=int, default=1, help="evaluations at once (one thread each)")
    parser.add_argument("--update", type=Path, default=None, help="write the table into this markdown file")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    from tqdm import tqdm

    try:
        encoders = [parse_encoder(text) for text in [*args.encoders, *args.baselines]]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not encoders:
        parser.error("give at least one encoder")
    names = [e.name for e in encoders]
    if len(set(names)) != len(names):
        print(f"error: two encoders share a name: {sorted({n for n in names if names.count(n) > 1})}", file=sys.stderr)
        return 2
    todo = []
    for encoder in encoders:
        for kind, command, result, log in jobs_for(encoder, args):
            if result.is_file():
                continue
            if kind == "davis":
                try:
                    command = [*command, *davis_reading(encoder)]
                except ValueError as exc:
                    print(f"warning: {encoder.name}: {exc}", file=sys.stderr)
            todo.append((encoder.name, kind, command, log))
    failed = []
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = {pool.submit(run_job, command, log): (name, kind, log) for name, kind, command, log in todo}
        for future in tqdm(concurrent.futures.as_completed(futures), total=len(futures), desc="evaluations",
                           unit="eval", disable=not todo):
            name, kind, log = futures[future]
            if future.result() != 0:
                failed.append(f"{name} {kind} ({log})")
    scores = {e.name: read_scores(e, args.out) for e in encoders}
    rows = group_rows(encoders, scores)
    command = "python tools/cross_eval.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = markdown(rows, command)
    print(table)
    if failed:
        print("failed (n/a in the table): " + "; ".join(failed), file=sys.stderr)
    if args.update is not None:
        update_document(args.update, table)
        print(f"table written into {args.update}")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "scores": scores, "failed": failed}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
