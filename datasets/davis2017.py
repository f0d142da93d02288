"""Download and prepare DAVIS-2017 (semi-supervised, trainval, 480p) for ``vidssl eval davis``.

    python datasets/davis2017.py --root data/davis2017                # download, verify, extract
    python datasets/davis2017.py --root data/davis2017 --archive DAVIS-2017-trainval-480p.zip

Result: ``ROOT/DAVIS/{JPEGImages,Annotations}/480p/<sequence>/`` and ``ROOT/DAVIS/ImageSets/2017/val.txt``
(shipped in the archive; checked here: every listed sequence has frames and first-frame annotations).
"""

from __future__ import annotations

import sys
from pathlib import Path

from _common import DatasetError, fetch_archive, run_cli, safe_extract

URL = "https://data.vision.ee.ethz.ch/csergi/share/davis/DAVIS-2017-trainval-480p.zip"
# UNVERIFIED: DAVIS publishes no checksum for this archive and none could be computed here (no network).
# Fill in the sha256 of a known-good download to make the check strict.
SHA256: str | None = None


def check_layout(davis: Path, split: str = "val") -> list[str]:
    """The sequences of ``ImageSets/2017/<split>.txt``, each checked to have frames and a first mask."""
    listing = davis / "ImageSets" / "2017" / f"{split}.txt"
    if not listing.is_file():
        raise DatasetError(f"{listing}: split list not found (is {davis} a DAVIS-2017 folder?)")
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    for name in names:
        frames = davis / "JPEGImages" / "480p" / name
        masks = davis / "Annotations" / "480p" / name
        if not frames.is_dir() or not any(frames.glob("*.jpg")):
            raise DatasetError(f"{frames}: no frames for sequence {name!r} of {listing.name}")
        if not (masks / "00000.png").is_file():
            raise DatasetError(f"{masks / '00000.png'}: first-frame annotation missing for {name!r}")
    return names


def prepare(root: Path, archive: Path | None = None, checksum: str | None = SHA256) -> Path:
    """Fetch (or take ``archive``), verify, extract under ``root``; returns the DAVIS folder."""
    zip_path = fetch_archive(URL, archive, root / "downloads", checksum, "sha256")
    safe_extract(zip_path, root)
    davis = root / "DAVIS"
    names = check_layout(davis)
    print(f"DAVIS-2017 ready at {davis}: {len(names)} val sequences (ImageSets/2017/val.txt)")
    return davis


def main(argv: list[str] | None = None) -> int:
    return run_cli(prepare, __doc__, argv, archive_help="an already downloaded archive")


if __name__ == "__main__":
    sys.exit(main())
