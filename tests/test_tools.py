"""The result tools: effective rank (closed forms) and the results table (verdicts on made-up CSVs)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_effective_rank_closed_forms() -> None:
    fr = _tool("feature_rank")
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(16, 16, generator=g))[0]
    # k orthogonal directions with equal energy, zero mean: effective rank k
    for k in (1, 3, 8):
        coeff = torch.zeros(16, 2 * k)
        for i in range(k):
            coeff[i, 2 * i], coeff[i, 2 * i + 1] = 1.0, -1.0
        assert fr.effective_rank(basis @ coeff) == pytest.approx(k, rel=1e-6)
    # energies 4:1 on two directions: exp(H(0.8, 0.2))
    x = basis[:, :2] @ torch.tensor([[2.0, -2.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]])
    h = -(0.8 * torch.log(torch.tensor(0.8)) + 0.2 * torch.log(torch.tensor(0.2)))
    assert fr.effective_rank(x) == pytest.approx(float(torch.exp(h)), rel=1e-6)
    same = torch.ones(4, 3, 5)  # every position identical: cosines 1
    s = fr.stats(same)
    assert s["mean_cosine"] == pytest.approx(1.0) and s["neighbour_cosine"] == pytest.approx(1.0)


def _write(runs: Path, name: str, jf: float, steps: int | None = None) -> None:
    out = runs / "eval" / name
    out.mkdir(parents=True)
    (out / "global_results-val.csv").write_text(
        "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\n"
        f"{jf},{jf + 0.01},0.5,0.1,{jf - 0.01},0.5,0.1\n")
    if steps is not None:
        (runs / name).mkdir()
        (runs / name / "metrics.jsonl").write_text(
            json.dumps({"step": steps, "loss": 1.5, "time/compute_s": 2.0, "time/data_wait_s": 0.5}) + "\n")


def test_results_table_verdicts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rt = _tool("results_table")
    _write(tmp_path, "identity", 0.27)
    _write(tmp_path, "random_s0", 0.47)
    _write(tmp_path, "random_s1", 0.50)  # random: mean 0.485, spread 0.03
    _write(tmp_path, "good_s0", 0.55, 100)
    _write(tmp_path, "good_s1", 0.56, 100)  # +0.07 > 0.03
    _write(tmp_path, "close_s0", 0.50, 100)
    _write(tmp_path, "close_s1", 0.51, 100)  # +0.02 < 0.03
    _write(tmp_path, "noisy_s0", 0.50, 100)
    _write(tmp_path, "noisy_s1", 0.62, 100)  # +0.075 but spread 0.12
    _write(tmp_path, "random_lab_s0", 0.40)
    _write(tmp_path, "random_lab_s1", 0.42)  # random on Lab input: mean 0.41, spread 0.02
    for seed, jf in ((0, 0.46), (1, 0.47)):  # a MAST run (Lab input): +0.055 over random_lab, -0.02 over random
        _write(tmp_path, f"labby_s{seed}", jf, 100)
        (tmp_path / f"labby_s{seed}" / "config.yaml").write_text("method: mast\n")
    _write(tmp_path, "random_reflect_s0", 0.52)
    _write(tmp_path, "random_reflect_s1", 0.53)  # a reflect-padded random trunk: mean 0.525
    for seed in (0, 1):  # CRW on the reflect-padded trunk: +0.045 over random (would beat it), +0.005 over its own
        _write(tmp_path, f"walker_s{seed}", 0.53, 100)
        (tmp_path / f"walker_s{seed}" / "config.yaml").write_text(
            "method: crw\nmodel: {backbone: resnet18_s8_l3_reflect}\n")
    assert rt.main([str(tmp_path), "--json", str(tmp_path / "r.json")]) == 0
    summary = {s["group"]: s for s in json.loads((tmp_path / "r.json").read_text())["summary"]}
    assert summary["labby"]["reference"] == "random_lab" and summary["labby"]["beats_random"]
    assert summary["labby"]["margin"] == pytest.approx(0.055)
    assert summary["good"]["reference"] == "random" and summary["random_lab"]["reference"] == "random_lab"
    assert summary["walker"]["reference"] == "random_reflect" and not summary["walker"]["beats_random"]
    assert summary["walker"]["margin"] == pytest.approx(0.005)
    assert summary["random_reflect"]["beats_random"] is False
    assert summary["good"]["beats_random"] and summary["good"]["margin"] == pytest.approx(0.07)
    assert not summary["close"]["beats_random"] and not summary["noisy"]["beats_random"]
    assert not summary["random"]["beats_random"] and summary["random"]["spread"] == pytest.approx(0.03)
    out = capsys.readouterr().out
    assert "| good | 0 | 0.550 | 0.560 | 0.540 | 100 | 2.5 |" in out
    assert rt.main([str(tmp_path / "nothing")]) == 2


def test_results_table_reads_knn_probes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """tools/image_results.sh's folders: kNN JSON per encoder, the same verdict (mean over seeds beats random by
    more than the larger spread)."""
    rt = _tool("results_table")
    (tmp_path / "eval").mkdir()
    for name, top1 in (("random_s0", 0.30), ("random_s1", 0.31), ("simclr_s0", 0.40), ("simclr_s1", 0.42),
                       ("byol_s0", 0.305), ("byol_s1", 0.33)):
        (tmp_path / "eval" / f"{name}.json").write_text(json.dumps({"knn_top1": top1}))
    assert rt.main([str(tmp_path), "--json", str(tmp_path / "r.json")]) == 0
    summary = {s["group"]: s for s in json.loads((tmp_path / "r.json").read_text())["summary"]}
    assert summary["simclr"]["beats_random"] and summary["simclr"]["margin"] == pytest.approx(10.5)
    assert not summary["byol"]["beats_random"]  # +1.25 points, but its seeds spread 2.5
    assert "| simclr | 0 | 40.00 |  |  |" in capsys.readouterr().out


def test_temporal_table_verdicts(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    tt = _tool("temporal_table")
    ev = tmp_path / "eval"
    ev.mkdir()

    def put(name: str, **value: object) -> None:
        (ev / f"{name}.json").write_text(json.dumps(value))

    for seed, acc in ((0, 0.30), (1, 0.26)):  # opn: own task 0.28 +- 0.04 against chance 1/12: passes
        put(f"pretext_opn_s{seed}", score=acc, chance=1 / 12, count=200)
    for seed, acc in ((0, 0.78), (1, 0.72)):  # shuffle_learn: 0.75 against the majority rate 0.75: fails
        put(f"pretext_shuffle_learn_s{seed}", score=acc, chance=0.75, count=200)
    # synthetic actions: random 0.21 +- 0.02, random with recalibrated batch norm 0.265 +- 0.01; opn 0.305 +- 0.01
    # beats both by more than the spreads; shuffle_learn 0.28 +- 0.02 beats the first only: fails
    for name, top1 in (("random_s0", 0.20), ("random_s1", 0.22), ("random_bn_s0", 0.26), ("random_bn_s1", 0.27),
                       ("opn_s0", 0.30), ("opn_s1", 0.31), ("shuffle_learn_s0", 0.27), ("shuffle_learn_s1", 0.29)):
        put(f"action_{name}", linear={"video_top1": top1})
    assert tt.main([str(tmp_path), "--json", str(tmp_path / "t.json")]) == 0
    table = json.loads((tmp_path / "t.json").read_text())
    assert sorted(table["methods"]) == ["opn", "shuffle_learn"]
    assert table["methods"]["opn"]["pretext"] == pytest.approx([0.28, 0.04])
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines()[2:]}
    assert rows["opn"][4] == "yes" and rows["opn"][8] == "yes"  # own task and synthetic actions pass
    assert rows["shuffle_learn"][4] == "no" and rows["shuffle_learn"][8] == "no"
    assert rows["opn"][6:8] == ["21.0 (2.0)", "26.5 (1.0)"]  # both references shown
    assert rows["opn"][9] == "-" and rows["opn"][12] == ""  # DAVIS not evaluated
    assert tt._passes(0.28, 0.02, (0.21, 0.02)) == "yes"  # against the initialised trunk alone it would pass


def test_propagation_floor_counts_the_work_by_brute_force() -> None:
    # The benchmark's floor FLOPs against counting every (target, context cell) pair by hand on small grids,
    # for the circle and the square, with the first frame unrestricted (CRW) or restricted (VFS, DINO).
    import argparse

    from vidssl.eval.propagation import PropagationConfig

    bench = _tool("bench_propagation")
    for window, radius, restrict_first in (("circle", 3.0, False), ("square", 2.0, True), ("circle", 2.5, True)):
        args = argparse.Namespace(height=7, width=9, channels=4, context=2)
        cfg = PropagationConfig(radius=radius, window=window, restrict_first=restrict_first, tile=4)  # type: ignore[arg-type]
        pairs = 0
        for y in range(7):
            for x in range(9):
                for ky in range(7):
                    for kx in range(9):
                        dy, dx = ky - y, kx - x
                        circle = dy * dy + dx * dx < radius**2
                        pairs += circle if window == "circle" else max(abs(dy), abs(dx)) <= radius
        restricted = 3 if restrict_first else 2
        expected = 2 * 4 * (pairs * restricted + (3 - restricted) * 63 * 63)
        flop = bench.work_flop(args, cfg)
        assert flop["useful"] == expected
        # the tiled matmuls: each of the 3 x 3 tiles of side 4 against its clipped rectangle
        half = int(radius) if window == "square" else math.ceil(radius) - 1
        tiled = 0
        for y0 in range(0, 7, 4):
            for x0 in range(0, 9, 4):
                y1, x1 = min(7, y0 + 4), min(9, x0 + 4)
                rect = (min(7, y1 + half) - max(0, y0 - half)) * (min(9, x1 + half) - max(0, x0 - half))
                tiled += (y1 - y0) * (x1 - x0) * rect
        assert flop["tiled"] == 2 * 4 * (tiled * restricted + (3 - restricted) * 63 * 63)
        assert flop["tiled"] >= flop["useful"]


@pytest.mark.slow
def test_demo_curve_scores_every_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vidssl.data.synthetic import write_dataset

    root = write_dataset(tmp_path / "synthetic", seed=0, num_videos=1, num_frames=8) / "davis"
    out, report = tmp_path / "curve", tmp_path / "curve.json"
    stale = out / "pretrain" / "checkpoints" / "ckpt_00000007.pt"  # an earlier run's, in the same folder
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"not this run's")
    code = _tool("demo_curve").main(["--method", "crw", "--steps", "2", "--every", "1", "--davis-root", str(root),
                                     "--sequences", "1", "--baselines", "--set", "clip_len=3", "--out", str(out),
                                     "--json", str(report)])
    assert code == 0
    rows = json.loads(report.read_text())["rows"]
    assert [r["encoder"] for r in rows] == ["pixels", "random", "ckpt_00000001", "ckpt_00000002"]
    for row in rows:
        assert 0.0 <= row["J&F-Mean"] <= 1.0 and abs(row["J&F-Mean"] - (row["J-Mean"] + row["F-Mean"]) / 2) < 1e-6
    assert "| ckpt_00000002 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        _tool("demo_curve").main(["--set", "no_equals_sign"])
    with pytest.raises(SystemExit):  # --realistic writes its own data: a --videos beside it would be ignored
        _tool("demo_curve").main(["--realistic", "--videos", str(tmp_path)])


def test_demo_curve_oracle_scores_the_protocols_ceiling(tmp_path: Path) -> None:
    """Ground-truth object maps as features: above every baseline on the same sequence (what a perfect
    encoder of the objects gets from the protocol), and a frame outside the sequences is refused."""
    import numpy as np

    from vidssl.data.synthetic import write_dataset

    root = write_dataset(tmp_path / "synthetic", seed=0, num_videos=1, num_frames=8) / "davis"
    report = tmp_path / "curve.json"
    code = _tool("demo_curve").main(["--steps", "0", "--davis-root", str(root), "--sequences", "1", "--baselines",
                                     "--oracle", "--out", str(tmp_path / "curve"), "--json", str(report)])
    assert code == 0
    rows = {r["encoder"]: r["J&F-Mean"] for r in json.loads(report.read_text())["rows"]}
    assert list(rows) == ["pixels", "random", "oracle"]
    assert rows["oracle"] > 0.9 and rows["oracle"] > max(rows["pixels"], rows["random"]) + 0.1
    from vidssl.eval.davis_metrics import read_sequence_list

    oracle = _tool("demo_curve").oracle_encoder(root, read_sequence_list(root)[:1])
    with pytest.raises(ValueError, match="not in the evaluated sequences"):
        oracle.encode(np.zeros((16, 16, 3), np.uint8))


def test_cross_eval_encoders_readings_rows_and_the_document(tmp_path: Path) -> None:
    tool = _tool("cross_eval")
    enc = tool.parse_encoder("random:resnet18:1")
    assert (enc.name, enc.spec, enc.backbone, enc.seed, enc.group) == ("random_resnet18_s1", "random", "resnet18", 1,
                                                                       "random_resnet18")
    run = tmp_path / "simclr_s0" / "checkpoints"
    run.mkdir(parents=True)
    for step in (5, 10):
        (run / f"ckpt_{step:08d}.pt").write_bytes(b"")
    assert tool.parse_encoder(str(tmp_path / "simclr_s0")).spec.endswith("ckpt_00000010.pt")  # the newest
    assert tool.parse_encoder(str(run / "ckpt_00000005.pt")).name == "simclr_s0"
    for bad in ("random:", "random:resnet18:x", str(tmp_path / "missing")):
        with pytest.raises(ValueError):
            tool.parse_encoder(bad)
    # how label propagation reads each trunk: CRW's layer3 at stride 8 where layer3 reaches it
    assert tool.davis_reading(tool.parse_encoder("random:resnet18")) == ["--layers", "3", "--stride", "8"]
    assert tool.davis_reading(tool.parse_encoder("random:resnet18_s8_l3")) == ["--layers", "3", "--stride", "8"]
    assert tool.davis_reading(tool.parse_encoder("random:resnet18_cifar")) == []  # layer3 at stride 4: keep layer4
    assert tool.davis_reading(tool.parse_encoder("random:vit_tiny_cifar")) == []
    parser_args = argparse.Namespace(out=tmp_path / "x", cifar=tmp_path, davis_root=tmp_path, linear=True,
                                     davis_config=Path("c.yaml"), sequences=None, only=["knn", "davis"])
    both = tool.jobs_for(enc, parser_args)
    assert [j[0] for j in both] == ["knn", "davis"] and "--linear" in both[0][1]
    parser_args.only = ["knn"]  # --only knn: the kNN alone
    assert [j[0] for j in tool.jobs_for(enc, parser_args)] == ["knn"]
    encoders = [tool.Encoder("simclr_s0", "a"), tool.Encoder("simclr_s1", "b"), tool.Encoder("crw_s0", "c")]
    scores = {"simclr_s0": {"knn": 0.30, "linear": 0.35, "davis": 0.40}, "simclr_s1": {"knn": 0.34, "davis": 0.44},
              "crw_s0": {"davis": 0.5}}
    rows = tool.group_rows(encoders, scores)
    assert [r["encoder"] for r in rows] == ["simclr", "crw"]
    assert rows[0]["knn"]["mean"] == pytest.approx(0.32) and rows[0]["knn"]["spread"] == pytest.approx(0.04)
    assert rows[0]["linear"]["n"] == 1 and "knn" not in rows[1]
    table = tool.markdown(rows, "python tools/cross_eval.py x")
    assert "| simclr | 32.0 (4.0, 2) | 35.0 | 0.420 (0.040, 2) |" in table and "| crw | n/a | n/a | 0.500 |" in table
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\ntext\n")
    tool.update_document(doc, table)
    tool.update_document(doc, table.replace("0.500", "0.600"))  # replaced in place, not appended twice
    text = doc.read_text()
    assert text.startswith("# Results\n\ntext\n") and text.count(tool.BEGIN) == 1 and "0.600" in text
    assert "0.500 |" not in text


@pytest.mark.slow
def test_cross_eval_runs_every_evaluation_and_resumes(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from vidssl.data.synthetic import write_dataset

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(2):
            (tmp_path / "cifar" / split / f"c{c}").mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    tmp_path / "cifar" / split / f"c{c}" / f"{i}.png")
    root = write_dataset(tmp_path / "synthetic", seed=0, num_videos=1, num_frames=4) / "davis"
    tool = _tool("cross_eval")
    argv = ["random:resnet18_s8_l3:0", "random:resnet18_s8_l3:1", "--cifar", str(tmp_path / "cifar"),
            "--davis-root", str(root), "--out", str(tmp_path / "out"), "--jobs", "2", "--json",
            str(tmp_path / "cross.json"), "--update", str(tmp_path / "doc.md")]
    assert tool.main(argv) == 0
    report = json.loads((tmp_path / "cross.json").read_text())
    assert not report["failed"]
    for name in ("random_resnet18_s8_l3_s0", "random_resnet18_s8_l3_s1"):  # the evaluators' own outputs
        knn = json.loads((tmp_path / "out" / name / "knn.json").read_text())["knn_top1"]
        assert report["scores"][name]["knn"] == knn and 0.0 <= report["scores"][name]["davis"] <= 1.0
    assert report["rows"][0]["davis"]["n"] == 2
    stamp = (tmp_path / "out" / "random_resnet18_s8_l3_s0" / "knn.json").stat().st_mtime_ns
    assert tool.main(argv) == 0  # resumes: nothing is evaluated again
    assert (tmp_path / "out" / "random_resnet18_s8_l3_s0" / "knn.json").stat().st_mtime_ns == stamp
    assert "| random_resnet18_s8_l3 |" in (tmp_path / "doc.md").read_text()


def test_random_encoder_is_the_seeded_random_trunk_and_bn_from_changes_only_statistics(tmp_path: Path) -> None:
    """``tools/random_encoder.py`` writes the weights ``--encoder random --seed S`` builds; ``--bn-from`` keeps them
    and recomputes only the batch-norm running statistics (the random_bn reference of the temporal table)."""
    import numpy as np

    from vidssl.data.synthetic import write_mp4
    from vidssl.models.record import load_encoder, random_backbone

    re_ = _tool("random_encoder")
    rng = np.random.default_rng(0)
    (tmp_path / "videos").mkdir()
    write_mp4(tmp_path / "videos" / "a.mp4", rng.integers(0, 256, (6, 48, 64, 3), dtype=np.uint8))
    plain, bn = tmp_path / "plain.pt", tmp_path / "bn.pt"
    assert re_.main(["--backbone", "resnet18_s8_l3", "--seed", "3", "--out", str(plain)]) == 0
    assert re_.main(["--backbone", "resnet18_s8_l3", "--seed", "3", "--out", str(bn), "--bn-from",
                     str(tmp_path / "videos"), "--bn-frames", "8", "--bn-size", "32"]) == 0
    want = random_backbone("resnet18_s8_l3", 3).state_dict()
    other = random_backbone("resnet18_s8_l3", 4).state_dict()
    got, recal = load_encoder(plain).state_dict(), load_encoder(bn).state_dict()
    assert set(got) == set(want)
    for key, value in want.items():
        assert torch.equal(got[key], value), key
        if key.endswith(("running_mean", "running_var")):
            assert not torch.allclose(recal[key], value), key  # recomputed
        elif not key.endswith("num_batches_tracked"):
            assert torch.equal(recal[key], value), key  # the weights untouched
    assert not torch.equal(want["conv1.weight"], other["conv1.weight"])  # the seed decides the weights


def test_fixed_clips_fits_a_learnable_order_and_freezes_the_trunk(tmp_path: Path) -> None:
    """``tools/fixed_clips.py`` on OPN with frames that tell their time (frame k has brightness 20 + 50 k, plus
    noise): the loss leaves ln 12; with ``--freeze-trunk`` the backbone's weights and statistics stay as initialised."""
    fc = _tool("fixed_clips")
    config = tmp_path / "opn.yaml"
    config.write_text("method: opn\nmodel: {crop_size: 24, window: 16, jitter: 2, max_span: 8, frame_dim: 16, "
                      "pair_dim: 16, channel_split: false, crop_borders: false}\n"
                      "data: {batch_size: 8}\noptim: {name: adam, lr: 0.003, weight_decay: 0.0}\n")
    g = torch.Generator().manual_seed(0)
    ramp = (20 + 50 * torch.arange(4)).view(1, 4, 1, 1)
    items = [{"video": (torch.randint(0, 30, (3, 1, 24, 24), generator=g) + ramp).to(torch.uint8)}
             for _ in range(12)]
    records, _ = fc.run(str(config), [], samples=12, steps=30, every=10, freeze_trunk=False, dataset=items)
    assert [r["step"] for r in records] == [10, 20, 30]
    assert records[0]["loss"] > 0.9 * math.log(12) and records[-1]["loss"] < 0.8 * math.log(12)
    with pytest.raises(ValueError, match="only 12 items"):
        fc.run(str(config), [], samples=13, steps=1, every=1, freeze_trunk=False, dataset=items)

    import vidssl.methods.opn as opn

    _, trained = fc.run(str(config), [], samples=12, steps=3, every=3, freeze_trunk=True, dataset=items)
    torch.manual_seed(0)
    fresh = opn.OPN(trained.cfg)  # type: ignore[arg-type]
    for key, value in fresh.backbone.state_dict().items():
        assert torch.equal(trained.backbone.state_dict()[key], value), key
    assert any(not torch.equal(a, b) for a, b in zip(trained.head.parameters(), fresh.head.parameters(), strict=True))


def test_bench_train_configs_keep_the_recipe_and_replace_the_schedule(tmp_path: Path) -> None:
    """``tools/bench_train.py --configs``: a row per config file, the config's model, data and optimiser kept, the
    schedule, logging and checkpoints the benchmark's, and only the data options given on the command line."""
    tool = _tool("bench_train")
    cfg = tmp_path / "simclr_tiny.yaml"
    cfg.write_text("method: simclr\nmodel: {temperature: 0.3}\nschedule: {name: cosine, steps: 3900}\n"
                   "data: {kind: images, source: some/dir, size: [32, 32], batch_size: 512, workers: 4}\n"
                   "optim: {name: lars, lr: 0.3}\n")
    p = argparse.Namespace(configs=[cfg], source=None, size=None, batch=None, workers=0, steps=2, warmup=1)
    data = tool.run_data("simclr_tiny", "cpu", p, "out")
    assert data["model"] == {"temperature": 0.3} and data["optim"] == {"name": "lars", "lr": 0.3}
    assert data["data"] == {"kind": "images", "source": "some/dir", "size": [32, 32], "batch_size": 512, "workers": 0}
    assert data["schedule"] == {"name": "constant", "steps": 3} and data["out_dir"] == "out"
    assert data["ckpt"]["resume"] == "none" and data["device"] == "cpu"
    p = argparse.Namespace(configs=[], source="shared", size=[64, 64], batch=None, workers=None, steps=2, warmup=1)
    data = tool.run_data("simclr", "cpu", p, "out")  # a registered method with its defaults: images, as it says
    assert data["method"] == "simclr" and data["data"]["size"] == [64, 64] and data["data"]["batch_size"] == 16


_FAKE_DECORD = '''
import numpy as np
from vidssl.data.video import open_video


class _Batch:
    def __init__(self, a):
        self.a = a

    def asnumpy(self):
        return self.a


class VideoReader:  # decord's API over vidssl's reader, one frame late: never exact
    def __init__(self, path, num_threads=0, height=-1, width=-1):
        self.reader = open_video(path, backend="pyav")
        self.size = None if height == -1 else (height, width)

    def get_batch(self, index):
        n = len(self.reader)
        return _Batch(self.reader.get([min(n - 1, i + 1) for i in index], size=self.size))
'''


def test_bench_data_measures_another_decoder_in_a_subprocess(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--decoder NAME=decord:DIR``: a second package named decord, from its own folder, in its own process, on
    the same clips; its frames are checked against the sequential decode (this fake one is a frame late)."""
    from tests.videogen import SPECS, write_video

    bench = _tool("bench_data")
    monkeypatch.setitem(sys.modules, "decord", None)  # the installed decord's column is not this test's
    video = write_video(tmp_path / f"v{SPECS[0].suffix}", SPECS[0])
    site = tmp_path / "site"
    (site / "decord").mkdir(parents=True)
    (site / "decord" / "__init__.py").write_text(_FAKE_DECORD)
    rows = bench.decoder_rows([video], clips=2, repeats=1, others={"fake": ("decord", site)})
    assert rows[0]["exact"] is True and rows[0]["fake_exact"] is False and rows[0]["fake_right_frames"] is False
    for label in ("native", "train"):
        fps = rows[0][f"fake_fps_{label}"]
        assert fps > 0 and rows[0][f"vs_fake_{label}"] == pytest.approx(rows[0][f"vidssl_fps_{label}"] / fps)
    (site / "decord" / "__init__.py").write_text("raise ImportError('no libdecord here')")
    with pytest.raises(RuntimeError, match="no libdecord here"):
        bench.decoder_rows([video], clips=1, repeats=1, others={"fake": ("decord", site)})
    # the right frames with another rounding of the colours are right, a neighbour is not
    from vidssl.data.video import open_video

    with open_video(video, backend="pyav") as reader:
        reference = reader.get(range(len(reader)))
    clip = [3, 7, 11]
    rounded = np.clip(reference[clip].astype(np.int16) + 1, 0, 255).astype(np.uint8)
    assert bench.right_frames(rounded, clip, reference) and not bench.right_frames(reference[[3, 8, 11]], clip,
                                                                                     reference)
    assert not bench.right_frames(reference[clip][:, :-2], clip, reference)  # another size: not these frames
