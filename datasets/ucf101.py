"""Download and prepare UCF101 (videos and the official recognition splits) for ``vidssl eval action``.

    python datasets/ucf101.py --root data/ucf101
    python datasets/ucf101.py --root data/ucf101 --archive UCF101.rar UCF101TrainTestSplits-RecognitionTask.zip

Result: ``ROOT/UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` (13,320 videos of 101 classes) and
``ROOT/ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt`` (N = 1..3), checked: every listed video exists.
Evaluate with ``vidssl eval action --root ROOT --split 1``. The videos come as a RAR archive, which needs
``unrar``, ``7z`` or ``bsdtar`` on PATH.
"""

from __future__ import annotations

import sys
from pathlib import Path

from _common import DatasetError, fetch_archive, run_cli, safe_extract, safe_extract_rar

BASE = "https://www.crcv.ucf.edu/data/UCF101"
# archive name -> md5. UNVERIFIED: UCF101 publishes no checksums; fill them in from a known-good download.
ARCHIVES: dict[str, str | None] = {"UCF101.rar": None, "UCF101TrainTestSplits-RecognitionTask.zip": None}


def check_splits(root: Path) -> dict[str, int]:
    """Videos per split file; raises naming the first listed video that is missing."""
    lists = root / "ucfTrainTestlist"
    if not (lists / "classInd.txt").is_file():
        raise DatasetError(f"{lists}: classInd.txt not found (the splits archive was not extracted here)")
    counts = {}
    for split in (1, 2, 3):
        for kind in ("train", "test"):
            path = lists / f"{kind}list0{split}.txt"
            if not path.is_file():
                raise DatasetError(f"{path}: split file not found")
            names = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
            for name in names:
                if not (root / "UCF-101" / name).is_file():
                    raise DatasetError(f"{root / 'UCF-101' / name}: listed in {path.name} but not extracted")
            counts[path.name] = len(names)
    return counts


def prepare(root: Path, archives: list[Path] | None = None, checksums: dict[str, str | None] | None = None) -> dict:
    checksums = ARCHIVES if checksums is None else checksums
    given = {p.name: p for p in archives or []}
    unknown = set(given) - set(checksums)
    if unknown:
        raise DatasetError(f"{given[sorted(unknown)[0]]}: not one of the UCF101 archives {sorted(checksums)}")
    for name, checksum in checksums.items():
        path = fetch_archive(f"{BASE}/{name}", given.get(name), root / "downloads", checksum, "md5")
        (safe_extract_rar if name.endswith(".rar") else safe_extract)(path, root)
    counts = check_splits(root)
    print(f"UCF101 ready at {root}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return counts


def main(argv: list[str] | None = None) -> int:
    return run_cli(prepare, __doc__, argv, many_archives=True,
                   archive_help="already downloaded archives (by their published names); the others are downloaded")


if __name__ == "__main__":
    sys.exit(main())
