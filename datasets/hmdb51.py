"""Download and prepare HMDB51 (videos and the official three splits) for ``vidssl eval action``.

    python datasets/hmdb51.py --root data/hmdb51
    python datasets/hmdb51.py --root data/hmdb51 --archive hmdb51_org.rar test_train_splits.rar

Result: ``ROOT/videos/<class>/<name>.avi`` (6,766 clips of 51 classes) and
``ROOT/testTrainMulti_7030_splits/<class>_test_split<N>.txt`` (lines ``<name>.avi 1|2|0``: train, test, unused),
checked: every video a split file names exists. ``hmdb51_org.rar`` holds one RAR per class, each extracted into
its class folder. Evaluate with ``vidssl eval action --root ROOT --split 1``. Needs ``unrar``, ``7z`` or
``bsdtar`` on PATH.
"""

from __future__ import annotations

import sys
from pathlib import Path

from _common import DatasetError, fetch_archive, run_cli, safe_extract_rar

BASE = "http://serre-lab.clps.brown.edu/wp-content/uploads/2013/10"
# archive name -> md5. UNVERIFIED: HMDB51 publishes no checksums; fill them in from a known-good download.
ARCHIVES: dict[str, str | None] = {"hmdb51_org.rar": None, "test_train_splits.rar": None}
SPLITS = "testTrainMulti_7030_splits"


def extract_classes(root: Path) -> list[str]:
    """Extract every per-class RAR that ``hmdb51_org.rar`` left in ``ROOT/downloads/classes`` into
    ``ROOT/videos/<class>/``; returns the classes."""
    inner = sorted((root / "downloads" / "classes").glob("*.rar"))
    if not inner:
        raise DatasetError(f"{root / 'downloads' / 'classes'}: no per-class RAR archives found")
    for archive in inner:
        safe_extract_rar(archive, root / "videos")  # each holds <class>/<name>.avi
    return [a.stem for a in inner]


def check_splits(root: Path, split: int = 1) -> dict[str, int]:
    """Train and test clips of ``split``; raises naming the first listed clip that is missing."""
    files = sorted((root / SPLITS).glob(f"*_test_split{split}.txt"))
    if len(files) == 0:
        raise DatasetError(f"{root / SPLITS}: no *_test_split{split}.txt files")
    counts = {"train": 0, "test": 0}
    for f in files:
        cls = f.name[: -len(f"_test_split{split}.txt")]
        for n, line in enumerate(f.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DatasetError(f"{f}: line {n}: expected '<name>.avi <0|1|2>', got {line!r}")
            if parts[1] == "0":
                continue
            if not (root / "videos" / cls / parts[0]).is_file():
                raise DatasetError(f"{root / 'videos' / cls / parts[0]}: listed in {f.name} but not extracted")
            counts["train" if parts[1] == "1" else "test"] += 1
    return counts


def prepare(root: Path, archives: list[Path] | None = None, checksums: dict[str, str | None] | None = None) -> dict:
    checksums = ARCHIVES if checksums is None else checksums
    given = {p.name: p for p in archives or []}
    unknown = set(given) - set(checksums)
    if unknown:
        raise DatasetError(f"{given[sorted(unknown)[0]]}: not one of the HMDB51 archives {sorted(checksums)}")
    videos = fetch_archive(f"{BASE}/hmdb51_org.rar", given.get("hmdb51_org.rar"), root / "downloads",
                           checksums["hmdb51_org.rar"], "md5")
    safe_extract_rar(videos, root / "downloads" / "classes")
    extract_classes(root)
    splits = fetch_archive(f"{BASE}/test_train_splits.rar", given.get("test_train_splits.rar"), root / "downloads",
                           checksums["test_train_splits.rar"], "md5")
    safe_extract_rar(splits, root)
    counts = check_splits(root)
    print(f"HMDB51 ready at {root}: split 1 has {counts['train']} train and {counts['test']} test clips")
    return counts


def main(argv: list[str] | None = None) -> int:
    return run_cli(prepare, __doc__, argv, many_archives=True,
                   archive_help="already downloaded archives (by their published names); the others are downloaded")


if __name__ == "__main__":
    sys.exit(main())
