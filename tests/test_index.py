"""The manifest index: discovery, probing with error rows, the probe cache and the CLI."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.videogen import SPECS, index_frame, write_video
from vidssl.cli import main
from vidssl.data.index import (
    ManifestRow,
    build_manifest,
    discover,
    probe_cached,
    read_manifest,
    sources_from_csv,
    write_manifest,
)

SPEC = {s.name: s for s in SPECS}


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """good videos, a frame folder, a corrupt mp4, a text file named .mp4, and things to ignore."""
    monkeypatch.setenv("VIDSSL_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    (root / "a" / "frames").mkdir(parents=True)
    (root / "b").mkdir()
    write_video(root / "a" / "good.mp4", SPEC["x264_gop7"])
    write_video(root / "b" / "clip.webm", SPEC["vp9_webm"])
    for i in range(5):
        Image.fromarray(index_frame(i)).save(root / "a" / "frames" / f"{i:05d}.jpg")
    (root / "b" / "corrupt.mp4").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8)))
    (root / "b" / "notes.mp4").write_text("not a video\n")
    (root / "b" / "readme.txt").write_text("ignored")
    return root


def test_discover(tree: Path) -> None:
    found = discover(tree)
    rel = [p.relative_to(tree).as_posix() for p in found]
    assert rel == ["a/frames", "a/good.mp4", "b/clip.webm", "b/corrupt.mp4", "b/notes.mp4"]


def test_build_manifest_rows_and_roundtrip(tree: Path, tmp_path: Path) -> None:
    rows = build_manifest(discover(tree), workers=2, progress=False)
    by_name = {Path(r.path).name: r for r in rows}
    assert by_name["good.mp4"] == ManifestRow(str(tree / "a" / "good.mp4"), 48, 25.0, 48, 64, 48 / 25.0)
    assert (by_name["clip.webm"].frames, by_name["clip.webm"].status) == (48, "ok")
    assert (by_name["frames"].frames, by_name["frames"].height, by_name["frames"].width) == (5, 48, 64)
    for bad in ("corrupt.mp4", "notes.mp4"):
        row = by_name[bad]
        assert row.status == "error" and row.frames == 0
        assert "VideoError" in row.error and bad in row.error
    out = tmp_path / "m.csv"
    write_manifest(rows, out)
    assert read_manifest(out) == rows
    with out.open() as f:
        assert next(csv.reader(f)) == ["path", "frames", "fps", "height", "width", "duration", "status", "error"]


def test_cache_hit_and_miss_on_mtime(tree: Path, tmp_path: Path) -> None:
    video = tree / "a" / "good.mp4"
    row, hit = probe_cached(video)
    assert not hit and row.frames == 48
    cached = list((tmp_path / "cache" / "index").glob("*.json"))
    assert len(cached) == 1  # under the cache dir, nothing beside the data
    assert sorted(p.name for p in video.parent.iterdir()) == ["frames", "good.mp4"]
    # doctor the entry: a hit returns it unchanged, which proves no new probe happened
    entry = json.loads(cached[0].read_text())
    entry["row"]["frames"] = 999
    cached[0].write_text(json.dumps(entry))
    assert probe_cached(video) == (ManifestRow(**entry["row"]), True)
    assert probe_cached(video, use_cache=False)[0].frames == 48
    st = video.stat()
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "changed" file: probed again
    row, hit = probe_cached(video)
    assert not hit and row.frames == 48


def test_csv_input_relative_paths(tree: Path, tmp_path: Path) -> None:
    listing = tree / "list.csv"
    listing.write_text("path,label\na/good.mp4,1\nb/notes.mp4,0\n")
    assert sources_from_csv(listing) == [(tree / "a" / "good.mp4").resolve(), (tree / "b" / "notes.mp4").resolve()]
    bad = tmp_path / "nopath.csv"
    bad.write_text("file\nx.mp4\n")
    with pytest.raises(ValueError, match="nopath.csv: no 'path' column"):
        sources_from_csv(bad)


@pytest.mark.slow  # building the CLI parser imports every command module (torch included)
def test_cli(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "manifest.csv"
    assert main(["data", "index", str(tree), "--out", str(out), "--workers", "1", "--no-cache"]) == 0
    printed = capsys.readouterr().out
    assert "3 ok, 2 error" in printed and "notes.mp4" in printed and "corrupt.mp4" in printed
    assert not (tmp_path / "cache" / "index").exists() or not any((tmp_path / "cache" / "index").iterdir())
    assert len(read_manifest(out)) == 5
    listing = tree / "list.csv"
    listing.write_text("path\na/good.mp4\n")
    assert main(["data", "index", str(listing), "--out", str(out)]) == 0
    assert [r.frames for r in read_manifest(out)] == [48]
    assert main(["data", "index", str(tmp_path / "missing"), "--out", str(out)]) == 2
