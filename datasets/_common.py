"""Shared helpers of the dataset scripts: resumable download, checksum, safe extraction.

Standard library only, so the scripts run before vidssl is installed. Every failure raises
``DatasetError("<path or url>: <problem>")``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

CHUNK = 1 << 20


class DatasetError(RuntimeError):
    """A download, checksum or archive problem; the message starts with the file or URL."""


def download(url: str, dest: Path, *, quiet: bool = False) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest.part`` with an HTTP Range request.

    The file appears at ``dest`` only when complete. A server that ignores the Range header (answers 200
    instead of 206) restarts the download from zero.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if have and response.status != 206:
                have = 0  # no resume support: start again
            total = response.headers.get("Content-Length")
            total_bytes = int(total) + have if total is not None else None
            with open(part, "ab" if have else "wb") as out:
                done = have
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if not quiet:
                        size = f"/{total_bytes / 1e6:.0f}" if total_bytes else ""
                        print(f"\r{dest.name}: {done / 1e6:.0f}{size} MB", end="", file=sys.stderr)
    except OSError as exc:  # URLError and HTTPError are OSErrors
        raise DatasetError(f"{url}: download failed ({exc}); run again to resume") from exc
    if not quiet:
        print(file=sys.stderr)
    os.replace(part, dest)
    return dest


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file (``"md5"``, ``"sha256"``, ...), read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: str | None, algorithm: str = "sha256") -> bool:
    """Check ``path`` against ``expected``; raises on a mismatch, returns False when nothing to check."""
    if not path.is_file():
        raise DatasetError(f"{path}: archive not found")
    if expected is None:
        print(f"warning: {path.name}: no published {algorithm} to check against (see datasets/README.md); "
              f"its {algorithm} is {file_digest(path, algorithm)}", file=sys.stderr)
        return False
    got = file_digest(path, algorithm)
    if got.lower() != expected.lower():
        raise DatasetError(f"{path}: {algorithm} mismatch: expected {expected}, got {got} "
                           "(corrupt or partial download: delete it and run again)")
    return True


def _check_member(archive: Path, name: str) -> PurePosixPath:
    """A member name that stays inside the destination, or an error naming it."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (path.parts and ":" in path.parts[0]):
        raise DatasetError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if ".." in path.parts:
        raise DatasetError(f"{archive}: member {name!r} escapes the destination ('..'); refusing to extract")
    return path


def safe_extract(archive: Path, dest: Path) -> list[str]:
    """Extract a zip or tar (any compression) into ``dest``; returns the member names.

    Every member is checked before anything is written: absolute paths, ``..`` components, links and
    device files are refused, so a hostile archive cannot write outside ``dest``.
    """
    if not archive.is_file():
        raise DatasetError(f"{archive}: archive not found")
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            for info in zf.infolist():
                _check_member(archive, info.filename)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symlink stored by unix zip
                    raise DatasetError(f"{archive}: member {info.filename!r} is a symbolic link; refusing")
            zf.extractall(dest)
        return names
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                _check_member(archive, m.name)
                if not (m.isfile() or m.isdir()):
                    raise DatasetError(f"{archive}: member {m.name!r} is a link or special file; refusing")
            for m in members:
                target = dest / m.name
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tf.extractfile(m)
                if source is None:
                    raise DatasetError(f"{archive}: cannot read member {m.name!r}")
                with source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
            return [m.name for m in members]
    raise DatasetError(f"{archive}: neither a zip nor a tar archive")


RAR_TOOLS = ("unrar", "7z", "bsdtar")  # the first one on PATH extracts RAR archives (UCF101, HMDB51)


def _rar_tool() -> str:
    for tool in RAR_TOOLS:
        if shutil.which(tool):
            return tool
    raise DatasetError(f"no RAR extractor on PATH: install one of {', '.join(RAR_TOOLS)} (e.g. apt install unrar, or "
                       "p7zip-full, or libarchive-tools)")


def rar_members(archive: Path, tool: str) -> list[str]:
    """The member names of a RAR archive, listed by ``tool``."""
    import subprocess

    commands = {"unrar": ["unrar", "lb", str(archive)], "7z": ["7z", "l", "-slt", "-ba", str(archive)],
                "bsdtar": ["bsdtar", "-tf", str(archive)]}
    done = subprocess.run(commands[tool], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DatasetError(f"{archive}: {tool} could not list it ({done.stderr.strip() or done.returncode})")
    lines = done.stdout.splitlines()
    if tool == "7z":
        return [line[len("Path = "):] for line in lines if line.startswith("Path = ")]
    return [line for line in lines if line.strip()]


def safe_extract_rar(archive: Path, dest: Path, tool: str | None = None) -> list[str]:
    """Extract a RAR archive into ``dest`` with an external tool (:data:`RAR_TOOLS`), after checking every member
    name as :func:`safe_extract` does (absolute paths and ``..`` are refused); returns the member names."""
    import subprocess

    if not archive.is_file():
        raise DatasetError(f"{archive}: archive not found")
    tool = tool or _rar_tool()
    names = rar_members(archive, tool)
    for name in names:
        _check_member(archive, name)
    dest.mkdir(parents=True, exist_ok=True)
    commands = {"unrar": ["unrar", "x", "-o+", "-idq", str(archive), str(dest) + os.sep],
                "7z": ["7z", "x", "-y", f"-o{dest}", str(archive)],
                "bsdtar": ["bsdtar", "-xf", str(archive), "-C", str(dest)]}
    done = subprocess.run(commands[tool], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DatasetError(f"{archive}: {tool} failed to extract it ({done.stderr.strip() or done.returncode})")
    return names


def fetch_archive(url: str | None, archive: Path | None, cache: Path, checksum: str | None, algorithm: str) -> Path:
    """The archive to extract: ``archive`` if the user gave one, else ``url`` downloaded into ``cache``
    (reused when already complete); verified against ``checksum`` either way."""
    if archive is None:
        if url is None:
            raise DatasetError("no download URL for this archive: download it by hand and pass --archive")
        archive = cache / url.rsplit("/", 1)[-1]
        if not archive.is_file():
            download(url, archive)
    verify(archive, checksum, algorithm)
    return archive


def run_cli(prepare: Callable[[Path, Any], Any], doc: str | None, argv: list[str] | None, *,
            archive_help: str, many_archives: bool = False) -> int:
    """The shared command line of the prepare scripts: ``--root`` and ``--archive``; errors exit 1."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="where the dataset goes")
    parser.add_argument("--archive", type=Path, nargs="+" if many_archives else None, default=None,
                        help=archive_help)
    args = parser.parse_args(argv)
    try:
        prepare(args.root, args.archive)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
