"""``vidssl demo`` end to end on a very small setting: the table and the files appear."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidssl.cli import main
from vidssl.data.synthetic import write_dataset
from vidssl.demo import DemoConfig, format_summary, pretrain_config


def test_summary_table_and_pretrain_config() -> None:
    table = {"J&F-Mean": 0.5, "J-Mean": 0.25, "F-Mean": 0.75}
    text = format_summary([("identity", table), ("crw (pretrained)", table)])
    assert text.splitlines()[0].split() == ["encoder", "J&F-Mean", "J-Mean", "F-Mean"]
    assert "crw (pretrained)    0.5000  0.2500  0.7500" in text
    cfg = pretrain_config(DemoConfig(steps=7, out=Path("x")))
    assert cfg["method"] == "crw" and cfg["schedule"]["steps"] == 7 and cfg["data"]["source"] == "synthetic"
    assert cfg["ckpt"]["resume"] == "none"  # a rerun trains afresh instead of resuming an old demo


def test_bad_paths_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--videos", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "nope: no such folder" in capsys.readouterr().err
    assert main(["demo", "--davis-root", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "not a DAVIS tree" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    # one short synthetic sequence (10 frames) as the DAVIS tree keeps the evaluation to seconds
    root = write_dataset(tmp_path / "synthetic", seed=0, num_videos=1, num_frames=10) / "davis"
    code = main(["demo", "--steps", "2", "--batch-size", "2", "--davis-root", str(root), "--out", str(out),
                 "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "encoder           J&F-Mean  J-Mean  F-Mean" in text
    for name in ("identity", "pixels", "random", "crw (pretrained)"):
        row = next(line for line in text.splitlines() if line.startswith(name + " "))
        values = [float(v) for v in row[len(name):].split()]
        assert len(values) == 3 and all(0.0 <= v <= 1.0 for v in values), row
        assert abs(values[0] - (values[1] + values[2]) / 2) < 1e-4  # J&F is the mean of J and F
    assert (out / "pretrain" / "checkpoints" / "ckpt_00000002.pt").is_file()
    for enc in ("identity", "pixels", "random", "crw"):
        overlays = sorted((out / "eval" / enc / "overlays" / "synth0-000").glob("*.png"))
        assert len(overlays) == 10, enc  # one overlay per frame of the sequence
        assert (out / "eval" / enc / "global_results-val.csv").is_file()
    assert str(out / "eval") in text
