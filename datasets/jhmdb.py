"""Download and prepare JHMDB (frames, joint positions, splits) for ``vidssl eval jhmdb``.

    python datasets/jhmdb.py --root data/jhmdb
    python datasets/jhmdb.py --root data/jhmdb --archive Rename_Images.tar.gz joint_positions.zip splits.zip

Result: ``ROOT/Rename_Images/<action>/<clip>/00001.png``, ``ROOT/joint_positions/<action>/<clip>/
joint_positions.mat``, ``ROOT/splits/<action>_test_split<k>.txt`` and the evaluation list
``ROOT/lists/test_split1.txt``: the test clips of split 1 (label 2 in the split files), the set UVC and
CRW evaluate on, one ``<frame folder> <joint file>`` per line relative to ``ROOT/lists``
(``vidssl eval jhmdb --list ROOT/lists/test_split1.txt``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from _common import DatasetError, fetch_archive, run_cli, safe_extract

BASE = "http://files.is.tue.mpg.de/jhmdb"
# archive name -> md5. UNVERIFIED: JHMDB publishes no checksums and none could be computed here (no
# network); fill them in from a known-good download to make the check strict.
ARCHIVES: dict[str, str | None] = {
    "Rename_Images.tar.gz": None,
    "joint_positions.zip": None,
    "splits.zip": None,
}
LIST_NAME = "test_split1.txt"
TEST = "2"  # split files mark training clips 1 and test clips 2


def test_clips(splits: Path, split: int = 1) -> list[tuple[str, str]]:
    """``(action, clip)`` of every test clip of ``split``, from ``splits/<action>_test_split<k>.txt``."""
    files = sorted(splits.glob(f"*_test_split{split}.txt"))
    if not files:
        raise DatasetError(f"{splits}: no *_test_split{split}.txt files")
    out = []
    for f in files:
        action = f.name[: -len(f"_test_split{split}.txt")]
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DatasetError(f"{f}: line {n}: expected '<clip>.avi <0|1|2>', got {line!r}")
            if parts[1] == TEST:
                out.append((action, parts[0].rsplit(".", 1)[0]))
    return out


def write_test_list(root: Path, split: int = 1) -> Path:
    """Write ``ROOT/lists/test_split<k>.txt``; every listed clip must have frames and joints."""
    lines = []
    for action, clip in test_clips(root / "splits", split):
        frames = root / "Rename_Images" / action / clip
        mat = root / "joint_positions" / action / clip / "joint_positions.mat"
        if not frames.is_dir():
            raise DatasetError(f"{frames}: frames of test clip {clip!r} not found")
        if not mat.is_file():
            raise DatasetError(f"{mat}: joint positions of test clip {clip!r} not found")
        lines.append(f"../Rename_Images/{action}/{clip} ../joint_positions/{action}/{clip}/joint_positions.mat\n")
    out = root / "lists" / f"test_split{split}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(lines))
    return out


def prepare(root: Path, archives: list[Path] | None = None, checksums: dict[str, str | None] | None = None) -> Path:
    """Fetch (or take ``archives``, matched by file name), verify, extract, write the test list."""
    checksums = ARCHIVES if checksums is None else checksums
    given = {p.name: p for p in archives or []}
    unknown = set(given) - set(checksums)
    if unknown:
        raise DatasetError(f"{given[sorted(unknown)[0]]}: not one of the JHMDB archives {sorted(checksums)}")
    for name, checksum in checksums.items():
        path = fetch_archive(f"{BASE}/{name}", given.get(name), root / "downloads", checksum, "md5")
        safe_extract(path, root)
    out = write_test_list(root)
    print(f"JHMDB ready at {root}: {len(out.read_text().splitlines())} test clips of split 1 in {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    return run_cli(prepare, __doc__, argv, many_archives=True,
                   archive_help="already downloaded archives (by their published names); the others are downloaded")


if __name__ == "__main__":
    sys.exit(main())
