"""``vidssl data prepare``: a training-ready copy that keeps every frame in order, resumes, and reports bad files."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests.videogen import SPECS, index_frame, write_video
from vidssl.cli import main
from vidssl.data.index import read_manifest
from vidssl.data.prepare import PrepareSettings, prepare, target_size
from vidssl.data.video import open_video, resize_frames


@pytest.fixture()
def collection(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    spec = next(s for s in SPECS if s.name == "x264_gop250_b2")  # one keyframe, B-frames: slow random access
    write_video(src / "long.mp4", spec)
    write_video(src / "sub" / "clip.avi", next(s for s in SPECS if s.name == "mpeg4_avi_b2"))
    write_video(src / "sub" / "clip.mkv", next(s for s in SPECS if s.name == "x264_mkv_b2"))  # same stem
    (src / "frames").mkdir()
    for i in range(9):
        Image.fromarray(index_frame(i)).save(src / "frames" / f"{i:05d}.png")
    (src / "sub" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    return src


def _keyframes_and_bframes(path: Path) -> tuple[list[int], bool]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size]
        rank = {pts: i for i, pts in enumerate(sorted(pts for pts, _ in packets))}  # frame index of each packet
        return sorted(rank[pts] for pts, key in packets if key), bool(stream.codec_context.has_b_frames)


def test_target_size() -> None:
    assert target_size(1080, 1920, 256) == (256, 456)
    assert target_size(720, 1280, 256) == (256, 456)
    assert target_size(100, 300, 256) == (100, 300)  # never enlarged
    assert target_size(255, 341, 128) == (128, 172)  # even


def test_prepared_copy_keeps_every_frame_in_order(collection: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    settings = PrepareSettings(short_side=32, keyint=8)
    rows = prepare(collection, out, settings, progress=False)
    ok = {Path(r.path).relative_to(out).as_posix(): r for r in rows if r.status == "ok"}
    assert set(ok) == {"long.mp4", "sub/clip.avi.mp4", "sub/clip.mkv.mp4", "frames.mp4"}
    bad = [r for r in rows if r.status != "ok"]
    assert len(bad) == 1 and bad[0].path.endswith("broken.mp4") and "broken.mp4" in bad[0].error
    for name, source in (("long.mp4", collection / "long.mp4"), ("sub/clip.avi.mp4", collection / "sub/clip.avi"),
                         ("frames.mp4", collection / "frames")):
        with open_video(source) as src, open_video(out / name) as copy:
            assert len(copy) == len(src) and copy.size == (32, 42) == target_size(*src.size, 32)
            ref = resize_frames(src.get(range(len(src))), copy.size).astype(float)
            got = copy.get(range(len(copy))).astype(float)
            psnr = 10 * np.log10(255**2 / ((got - ref) ** 2).mean(axis=(1, 2, 3)))
            assert psnr.min() > 28, (name, psnr.min())
            for i in range(0, len(copy), 7):  # frame i of the copy is frame i of the source, not a neighbour
                assert int(np.argmin(np.abs(ref - got[i]).mean(axis=(1, 2, 3)))) == i
        keys, bframes = _keyframes_and_bframes(out / name)
        assert not bframes and keys == list(range(0, len(copy), 8)), (name, keys)
    manifest = read_manifest(out / "manifest.csv")
    assert [m.path for m in manifest] == [r.path if r.status != "ok" else str(Path(r.path).resolve()) for r in rows]
    assert json.loads((out / "prepare.json").read_text())["keyint"] == 8


def test_prepare_resumes_and_refuses_other_settings(collection: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    settings = PrepareSettings(short_side=32, keyint=8)
    prepare(collection, out, settings, progress=False)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    (out / "long.mp4").unlink()  # as if killed while writing it: finished copies stay, this one is redone
    (out / "sub" / ".clip.123.tmp.mp4").write_bytes(b"half")  # a killed run's temporary file is never listed
    rows = prepare(collection, out, settings, progress=False)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4") if not p.name.startswith(".")}
    assert all(after[p] == t for p, t in before.items() if p.name != "long.mp4")  # kept, not re-encoded
    assert (out / "long.mp4").is_file() and sum(r.status == "ok" for r in rows) == 4
    with pytest.raises(ValueError, match="prepared earlier"):
        prepare(collection, out, PrepareSettings(short_side=64, keyint=8), progress=False)


def test_cli(collection: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["data", "prepare", str(collection / "sub"), "--out", str(out), "--short-side", "24",
                 "--keyint", "4", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "2 prepared, 1 skipped" in text and "broken.mp4" in text
    assert main(["data", "prepare", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().out
