"""Landed files: which entries of the landing folder count, their content hash and partition key."""

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from import_pipeline.config import IN_PROGRESS_SUFFIXES

# One partition per landed file, keyed by name and content hash (`partition_key`); a workbook's sheet other than
# the first, imported by name, is a partition of its own.
LANDED_FILES = "landed_files"
landed_files_partitions_def = dg.DynamicPartitionsDefinition(name=LANDED_FILES)

HASH_CHARS = 16
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def content_hash(path: Path) -> str:
    """SHA-256 of the file's bytes, hex."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _safe_name(file_name: str) -> str:
    # Dagster rejects "..." (its range syntax) and control characters in keys.
    return re.sub(r"\.{2,}", ".", _UNSAFE.sub("_", file_name)).strip("._-")[:100] or "file"


# Between a file's name and a sheet's in a key: `_safe_name` never leaves one in either.
SHEET_MARK = "~"


def partition_key(file_name: str, digest: str, sheet: str = "") -> str:
    """`<safe name>@<hash prefix>`, or `<safe name>~<safe sheet>@<hash prefix>` for a sheet named in run config:
    readable in the UI, and the same bytes always share the suffix."""
    named = f"{_safe_name(file_name)}{SHEET_MARK}{_safe_name(sheet)}" if sheet else _safe_name(file_name)
    return f"{named}@{digest[:HASH_CHARS]}"


def hash_of_key(key: str) -> str:
    """The content-hash prefix a partition key ends with."""
    return key.rsplit("@", 1)[-1]


def sheet_of_key(key: str) -> str:
    """The safe name of the sheet a partition key names, or "" (the first sheet, or not a workbook)."""
    named = key.rsplit("@", 1)[0]
    return named.split(SHEET_MARK, 1)[1] if SHEET_MARK in named else ""


def sheet_matches_key(sheet: str, key: str) -> bool:
    """Whether `sheet` is the sheet the key names (keys hold sheet names made safe)."""
    return _safe_name(sheet) == sheet_of_key(key)


def landed_entries(landing: Path) -> Iterator[os.DirEntry]:
    """Visible regular files of the landing folder that are not marked as still being written.

    Symlinks count only when they point inside the landing folder.
    """
    if not landing.is_dir():
        return
    root = landing.resolve()
    with os.scandir(landing) as entries:
        for entry in entries:
            if entry.name.startswith(".") or entry.name.lower().endswith(IN_PROGRESS_SUFFIXES):
                continue
            if entry.is_symlink():
                target = Path(entry.path).resolve()
                if not target.is_relative_to(root) or not target.is_file():
                    continue
            elif not entry.is_file(follow_symlinks=False):
                continue
            yield entry


def find_landed_file(landing: Path, key: str) -> Path:
    """The landing-folder file whose content and name give `key`."""
    name_part = key.rsplit("@", 1)[0].split(SHEET_MARK, 1)[0]
    for entry in landed_entries(landing):
        if _safe_name(entry.name) == name_part and content_hash(Path(entry.path)).startswith(hash_of_key(key)):
            return Path(entry.path)
    raise dg.Failure(
        description=f"No file in {landing} matches partition {key!r}: it was moved, renamed or changed "
        "since it landed. Launch the run with config `ops: parse: config: source_path` pointing at it."
    )


def move_aside(path: Path, folder: Path) -> Path:
    """Move a file into `folder` without overwriting anything: a taken name gets a numbered suffix."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    n = 1
    while target.exists():
        target = folder / f"{path.stem}.{n}{path.suffix}"
        n += 1
    path.rename(target)
    return target
