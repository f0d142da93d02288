"""The ``datasets/`` scripts on archives built in the test: checksums, extraction, traversal, file lists.

No network: every archive is made here and passed with ``--archive`` (or to ``prepare``).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "datasets"


@pytest.fixture()
def scripts(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, ModuleType]]:
    """The three scripts and their helpers, imported as the scripts import each other (by folder)."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    names = ["_common", "davis2017", "jhmdb", "vip", "ucf101", "hmdb51"]
    for name in names:
        sys.modules.pop(name, None)  # the vidssl package is not shadowed: these are top-level names
    mods = {name: importlib.import_module(name) for name in names}
    yield mods
    for name in names:
        sys.modules.pop(name, None)


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_checksum_pass_and_fail(tmp_path: Path, scripts: dict[str, ModuleType]) -> None:
    common = scripts["_common"]
    f = tmp_path / "a.bin"
    f.write_bytes(b"vidssl")
    assert common.verify(f, hashlib.sha256(b"vidssl").hexdigest(), "sha256") is True
    assert common.verify(f, hashlib.md5(b"vidssl").hexdigest().upper(), "md5") is True
    with pytest.raises(common.DatasetError, match=r"a.bin: sha256 mismatch: expected 00+, got [0-9a-f]{64}"):
        common.verify(f, "0" * 64, "sha256")
    assert common.verify(f, None, "sha256") is False  # unpublished: warns, does not fail
    with pytest.raises(common.DatasetError, match="nope.zip: archive not found"):
        common.verify(tmp_path / "nope.zip", None)


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_extraction(tmp_path: Path, scripts: dict[str, ModuleType], kind: str) -> None:
    common = scripts["_common"]
    files = {"top/a.txt": b"A", "top/sub/b.txt": b"BB"}
    archive = (_zip if kind == "zip" else _tar)(tmp_path / f"x.{kind}", files)
    names = common.safe_extract(archive, tmp_path / "out")
    assert sorted(names) == sorted(files)
    assert (tmp_path / "out/top/sub/b.txt").read_bytes() == b"BB"


@pytest.mark.parametrize("kind", ["zip", "tar"])
@pytest.mark.parametrize("evil", ["../evil.txt", "ok/../../evil.txt", "/tmp/evil.txt"])
def test_traversal_refused(tmp_path: Path, scripts: dict[str, ModuleType], kind: str, evil: str) -> None:
    common = scripts["_common"]
    archive = (_zip if kind == "zip" else _tar)(tmp_path / f"x.{kind}", {"fine.txt": b"ok", evil: b"x"})
    with pytest.raises(common.DatasetError, match=r"x\.(zip|tar): member .*refusing"):
        common.safe_extract(archive, tmp_path / "out" / "deep")
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out" / "deep" / "fine.txt").exists()  # checked before anything is written


def test_tar_symlink_refused(tmp_path: Path, scripts: dict[str, ModuleType]) -> None:
    common = scripts["_common"]
    with tarfile.open(tmp_path / "l.tar", "w") as tf:
        info = tarfile.TarInfo("link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(common.DatasetError, match="'link' is a link"):
        common.safe_extract(tmp_path / "l.tar", tmp_path / "out")
    (tmp_path / "n.bin").write_bytes(b"plain bytes")
    with pytest.raises(common.DatasetError, match="neither a zip nor a tar"):
        common.safe_extract(tmp_path / "n.bin", tmp_path / "out")


def test_davis_prepare(tmp_path: Path, scripts: dict[str, ModuleType]) -> None:
    davis = scripts["davis2017"]
    files = {
        "DAVIS/ImageSets/2017/val.txt": b"seq-a\nseq-b\n",
        "DAVIS/JPEGImages/480p/seq-a/00000.jpg": b"j", "DAVIS/Annotations/480p/seq-a/00000.png": b"p",
        "DAVIS/JPEGImages/480p/seq-b/00000.jpg": b"j", "DAVIS/Annotations/480p/seq-b/00000.png": b"p",
    }
    archive = _zip(tmp_path / "DAVIS-2017-trainval-480p.zip", files)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    out = davis.prepare(tmp_path / "root", archive, checksum=digest)
    assert out == tmp_path / "root" / "DAVIS"
    assert davis.check_layout(out) == ["seq-a", "seq-b"]
    with pytest.raises(scripts["_common"].DatasetError, match="mismatch"):
        davis.prepare(tmp_path / "root2", archive, checksum="f" * 64)
    del files["DAVIS/Annotations/480p/seq-b/00000.png"]
    broken = _zip(tmp_path / "broken.zip", files)
    assert davis.main(["--root", str(tmp_path / "root3"), "--archive", str(broken)]) == 1


def test_jhmdb_prepare_writes_split1_test_list(tmp_path: Path, scripts: dict[str, ModuleType]) -> None:
    jh = scripts["jhmdb"]
    frames = {f"Rename_Images/{a}/{c}/00001.png": b"png" for a, c in
              [("run", "r1"), ("run", "r2"), ("jump", "j1"), ("jump", "j2")]}
    joints = {f"joint_positions/{a}/{c}/joint_positions.mat": b"mat" for a, c in
              [("run", "r1"), ("run", "r2"), ("jump", "j1"), ("jump", "j2")]}
    splits = {"splits/run_test_split1.txt": b"r1.avi 1\nr2.avi 2\n",
              "splits/jump_test_split1.txt": b"j1.avi 2\nj2.avi 1\n",
              "splits/run_test_split2.txt": b"r1.avi 2\nr2.avi 1\n"}
    archives = [_tar(tmp_path / "Rename_Images.tar.gz", frames), _zip(tmp_path / "joint_positions.zip", joints),
                _zip(tmp_path / "splits.zip", splits)]
    sums = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in archives}
    out = jh.prepare(tmp_path / "root", archives, checksums=sums)
    lines = out.read_text().splitlines()
    assert lines == ["../Rename_Images/jump/j1 ../joint_positions/jump/j1/joint_positions.mat",
                     "../Rename_Images/run/r2 ../joint_positions/run/r2/joint_positions.mat"]
    for line in lines:  # the list resolves relative to its own folder
        frames_dir, mat = (out.parent / p for p in line.split())
        assert frames_dir.is_dir() and mat.is_file()
    with pytest.raises(scripts["_common"].DatasetError, match="md5 mismatch"):
        jh.prepare(tmp_path / "root2", archives, checksums={**sums, "splits.zip": "0" * 32})
    with pytest.raises(scripts["_common"].DatasetError, match="not one of the JHMDB archives"):
        jh.prepare(tmp_path / "root3", [tmp_path / "other.zip"], checksums=sums)


def test_jhmdb_list_is_read_by_the_evaluator(tmp_path: Path, scripts: dict[str, ModuleType]) -> None:
    from vidssl.eval.jhmdb import read_file_list

    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "t.txt").write_text("../Rename_Images/run/r2 ../joint_positions/run/r2/joint_positions.mat\n")
    clips = read_file_list(tmp_path / "lists" / "t.txt")
    assert clips[0].name == "r2"
    assert clips[0].frames.resolve() == (tmp_path / "Rename_Images/run/r2").resolve()


def test_vip_prepare_checks_val_list(tmp_path: Path, scripts: dict[str, ModuleType]) -> None:
    vip = scripts["vip"]
    files = {
        "VIP_Fine/lists/val_videos.txt": b"videos1\nvideos2\n",
        "VIP_Fine/Images/videos1/000000000001.jpg": b"j",
        "VIP_Fine/Annotations/Category_ids/videos1/000000000001.png": b"p",
        "VIP_Fine/Images/videos2/000000000001.jpg": b"j",  # no labels: dropped from the list
    }
    archive = _zip(tmp_path / "VIP_Fine.zip", files)
    out = vip.prepare(tmp_path / "root", archive, checksum=hashlib.sha256(archive.read_bytes()).hexdigest())
    assert (out / "lists" / "val_videos.txt").read_text() == "videos1\n"
    assert (out / "lists" / "val_videos.orig.txt").read_text() == "videos1\nvideos2\n"
    assert vip.main(["--root", str(tmp_path / "r2")]) == 1  # no archive: explains where to get it


# ---- the action-recognition sets (RAR archives, extracted by an external tool) -------------------------------


def test_rar_members_are_checked_before_extraction(tmp_path: Path, scripts: dict[str, ModuleType],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    common = scripts["_common"]
    archive = tmp_path / "x.rar"
    archive.write_bytes(b"Rar!")
    monkeypatch.setattr(common.shutil, "which", lambda tool: None)
    with pytest.raises(common.DatasetError, match="no RAR extractor on PATH: install one of unrar, 7z, bsdtar"):
        common.safe_extract_rar(archive, tmp_path / "out")
    monkeypatch.setattr(common, "rar_members", lambda path, tool: ["ok/a.avi", "../evil.avi"])
    with pytest.raises(common.DatasetError, match="escapes the destination"):
        common.safe_extract_rar(archive, tmp_path / "out", tool="unrar")
    assert not (tmp_path / "out").exists()  # nothing was written


def _fake_rar(files: dict[str, bytes]) -> object:
    """A stand-in for ``safe_extract_rar`` that writes ``files`` (name -> bytes) under the destination."""

    def extract(archive: Path, dest: Path, tool: str | None = None) -> list[str]:
        for name, data in files.items():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(data)
        return list(files)

    return extract


def test_ucf101_prepare_checks_every_listed_video(tmp_path: Path, scripts: dict[str, ModuleType],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ucf = scripts["ucf101"]
    lists = {"ucfTrainTestlist/classInd.txt": b"1 Archery\n2 Bowling\n"}
    for split in (1, 2, 3):
        lists[f"ucfTrainTestlist/trainlist0{split}.txt"] = b"Archery/v_Archery_g08_c01.avi 1\n"
        lists[f"ucfTrainTestlist/testlist0{split}.txt"] = b"Bowling/v_Bowling_g01_c01.avi\n"
    splits = _zip(tmp_path / "UCF101TrainTestSplits-RecognitionTask.zip", lists)
    rar = tmp_path / "UCF101.rar"
    rar.write_bytes(b"Rar!")
    monkeypatch.setattr(ucf, "safe_extract_rar", _fake_rar({"UCF-101/Archery/v_Archery_g08_c01.avi": b"v"}))
    root = tmp_path / "ucf"
    with pytest.raises(scripts["_common"].DatasetError, match="v_Bowling_g01_c01.avi: listed in testlist01.txt"):
        ucf.prepare(root, [rar, splits])
    (root / "UCF-101" / "Bowling").mkdir()
    (root / "UCF-101" / "Bowling" / "v_Bowling_g01_c01.avi").write_bytes(b"v")
    assert ucf.check_splits(root)["testlist01.txt"] == 1
    from vidssl.eval.action import read_action_split  # the evaluator reads the prepared layout

    split = read_action_split(root)
    assert split.classes == ["Archery", "Bowling"] and [y for _, y in split.train + split.test] == [0, 1]


def test_hmdb51_prepare_extracts_the_class_archives(tmp_path: Path, scripts: dict[str, ModuleType],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    hmdb = scripts["hmdb51"]
    calls: list[str] = []

    def extract(archive: Path, dest: Path, tool: str | None = None) -> list[str]:
        calls.append(archive.name)
        files = {"hmdb51_org.rar": {"wave.rar": b"r", "jump.rar": b"r"},
                 "wave.rar": {"wave/a.avi": b"v", "wave/b.avi": b"v"}, "jump.rar": {"jump/c.avi": b"v"},
                 "test_train_splits.rar": {
                     "testTrainMulti_7030_splits/wave_test_split1.txt": b"a.avi 1 \nb.avi 2 \n",
                     "testTrainMulti_7030_splits/jump_test_split1.txt": b"c.avi 2 \nd.avi 0 \n"}}[archive.name]
        return _fake_rar(files)(archive, dest)  # type: ignore[operator]

    monkeypatch.setattr(hmdb, "safe_extract_rar", extract)
    archives = [tmp_path / "hmdb51_org.rar", tmp_path / "test_train_splits.rar"]
    for a in archives:
        a.write_bytes(b"Rar!")
    counts = hmdb.prepare(tmp_path / "hmdb", archives)
    assert counts == {"train": 1, "test": 2} and sorted(calls[1:3]) == ["jump.rar", "wave.rar"]
    from vidssl.eval.action import read_action_split

    split = read_action_split(tmp_path / "hmdb")
    assert split.classes == ["jump", "wave"] and len(split.train) == 1 and len(split.test) == 2
