"""Prepare VIP (Video Instance-level Parsing, VIP_Fine) for ``vidssl eval vip``.

VIP is distributed through Google Drive and Baidu links on the LIP website (http://sysu-hcp.net/lip/),
which cannot be fetched by a script: download ``VIP_Fine.zip`` by hand, then

    python datasets/vip.py --root data/vip --archive VIP_Fine.zip

Result: ``ROOT/VIP_Fine/Images/<video>/<frame>.jpg``, ``ROOT/VIP_Fine/Annotations/Category_ids/<video>/
<frame>.png`` (indexed, 0 background, 1..19 parts) and ``ROOT/VIP_Fine/lists/val_videos.txt`` (shipped; here
checked, and rewritten without videos that lack frames or labels, which are reported).
"""

from __future__ import annotations

import sys
from pathlib import Path

from _common import DatasetError, fetch_archive, run_cli, safe_extract

# UNVERIFIED: VIP publishes no checksum; fill in the sha256 of a known-good VIP_Fine.zip to check it.
SHA256: str | None = None


def check_val_list(vip: Path) -> list[str]:
    """Videos of ``lists/val_videos.txt`` that have both frames and category labels; rewrites the list
    with only those (the originals are kept as ``val_videos.orig.txt``)."""
    listing = vip / "lists" / "val_videos.txt"
    if not listing.is_file():
        raise DatasetError(f"{listing}: val list not found (is {vip} the VIP_Fine folder?)")
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    labels = vip / "Annotations" / "Category_ids"
    good, missing = [], []
    for name in names:
        if any((vip / "Images" / name).glob("*.jpg")) and any((labels / name).glob("*.png")):
            good.append(name)
        else:
            missing.append(name)
    if not good:
        raise DatasetError(f"{listing}: none of its {len(names)} videos has frames and labels")
    if missing:
        print(f"warning: {len(missing)} val videos lack frames or labels and are left out: "
              f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}", file=sys.stderr)
        backup = listing.with_name("val_videos.orig.txt")
        if not backup.exists():
            backup.write_text(listing.read_text())
        listing.write_text("".join(f"{n}\n" for n in good))
    return good


def prepare(root: Path, archive: Path | None, checksum: str | None = SHA256) -> Path:
    """Verify and extract ``archive`` under ``root``, check the val list; returns the VIP_Fine folder."""
    if archive is None:
        raise DatasetError("VIP cannot be downloaded by script: get VIP_Fine.zip from http://sysu-hcp.net/lip/ "
                           "and pass --archive")
    safe_extract(fetch_archive(None, archive, root, checksum, "sha256"), root)
    vip = root / "VIP_Fine"
    names = check_val_list(vip)
    print(f"VIP ready at {vip}: {len(names)} val videos (lists/val_videos.txt)")
    return vip


def main(argv: list[str] | None = None) -> int:
    return run_cli(prepare, __doc__, argv, archive_help="the downloaded VIP_Fine.zip")


if __name__ == "__main__":
    sys.exit(main())
