"""Landed files: which entries of the landing folder count, their content hash and partition key."""

import errno
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from import_pipeline.config import IN_PROGRESS_SUFFIXES

# One partition per landed file, keyed by name and content hash (`partition_key`); a workbook's sheet other than
# the first, imported by name, is a partition of its own.
LANDED_FILES = "landed_files"
landed_files_partitions_def = dg.DynamicPartitionsDefinition(name=LANDED_FILES)

HASH_CHARS = 16
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Unicode's control characters (category Cc): a line break in a name would split every message naming it.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def content_hash(path: Path) -> str:
    """SHA-256 of the file's bytes, hex; anything but a regular file is refused before a byte is read."""
    # Non-blocking: opening a named pipe for reading would otherwise wait for a writer, forever.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
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


_KEY = re.compile(rf".+@[0-9a-f]{{{HASH_CHARS}}}")


def is_landed_key(key: str) -> bool:
    """Whether `key` is one `partition_key` makes (`<name>@<hash>`), not a file name typed in the UI."""
    return bool(_KEY.fullmatch(key))


def hash_of_key(key: str) -> str:
    """The content-hash prefix a partition key ends with."""
    return key.rsplit("@", 1)[-1]


def sheet_of_key(key: str) -> str:
    """The safe name of the sheet a partition key names, or "" (the first sheet, or not a workbook)."""
    if not is_landed_key(key):
        return ""  # a file name typed in the UI
    named = key.rsplit("@", 1)[0]
    return named.split(SHEET_MARK, 1)[1] if SHEET_MARK in named else ""


def sheet_matches_key(sheet: str, key: str) -> bool:
    """Whether `sheet` is the sheet the key names (keys hold sheet names made safe)."""
    return _safe_name(sheet) == sheet_of_key(key)


@dataclass(frozen=True)
class LandingEntry:
    """A landing-folder entry, its status (a link's target's once it resolves) and why it is no landed file."""

    entry: os.DirEntry
    status: os.stat_result
    problem: str | None


def shown(name: str) -> str:
    """A file name on one line: undecodable bytes and unprintable characters escaped (`bad\\nname.csv`)."""
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_KINDS = (
    (stat.S_ISDIR, "a folder: only files directly in the landing folder are imported"),
    (stat.S_ISFIFO, "a named pipe (FIFO), not a file: never opened"),
    (stat.S_ISSOCK, "a socket, not a file"),
    (stat.S_ISCHR, "a device, not a file"),
    (stat.S_ISBLK, "a device, not a file"),
)


def _problem_of_name(name: str) -> str | None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8: rename it"
    if _CONTROL.search(name):
        return "its name holds a line break or another control character: rename it"
    return None


def _examine(entry: os.DirEntry, root: Path) -> LandingEntry | None:
    """The entry with its status and problem, without opening it; None when it vanished meanwhile."""
    try:
        own = entry.stat(follow_symlinks=False)
    except OSError:  # gone since the listing: nothing left to name
        return None
    problem = _problem_of_name(entry.name)
    if problem or not stat.S_ISLNK(own.st_mode):
        status = own
    else:
        try:
            status = os.stat(entry.path)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return LandingEntry(entry, own, "a symbolic link loop")
            if e.errno == errno.ENOENT:
                return LandingEntry(entry, own, f"a symbolic link to nothing ({shown(os.readlink(entry.path))})")
            return LandingEntry(entry, own, f"a symbolic link that cannot be followed: {e.strerror}")
        if not Path(os.path.realpath(entry.path)).is_relative_to(root):
            return LandingEntry(entry, status, "a symbolic link to outside the landing folder")
    if problem is None:
        problem = next((why for is_kind, why in _KINDS if is_kind(status.st_mode)), None)
    if problem is None and not stat.S_ISREG(status.st_mode):
        problem = "not a regular file"
    return LandingEntry(entry, status, problem)


def unreadable(path: str) -> str | None:
    """Why the regular file at `path` cannot be read, or None; opened non-blocking, never read."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as e:
        return f"cannot be read: {e.strerror}"
    return None


def landing_entries(landing: Path) -> Iterator[LandingEntry]:
    """Every visible entry of the landing folder not marked as still being written, examined without opening it."""
    if not landing.is_dir():
        return
    root = Path(os.path.realpath(landing))
    with os.scandir(landing) as entries:
        for entry in entries:
            if entry.name.startswith(".") or entry.name.lower().endswith(IN_PROGRESS_SUFFIXES):
                continue
            examined = _examine(entry, root)
            if examined is not None:
                yield examined


def landed_entries(landing: Path) -> Iterator[os.DirEntry]:
    """Regular files of the landing folder, or links to one inside it, that count as landed (`landing_entries`)."""
    for examined in landing_entries(landing):
        if examined.problem is None:
            yield examined.entry


def find_landed_file(landing: Path, key: str, processed: Path | None = None) -> Path:
    """The landing-folder file whose content and name give `key`; else the same file imported into `processed`
    (a partition imported again after its revert)."""
    name_part = key.rsplit("@", 1)[0].split(SHEET_MARK, 1)[0]
    for entry in landed_entries(landing):
        if _safe_name(entry.name) == name_part and content_hash(Path(entry.path)).startswith(hash_of_key(key)):
            return Path(entry.path)
    if processed is not None and processed.is_dir():
        for path in sorted(processed.rglob("*")):
            # `move_aside` numbers a name taken in its day's folder: `leads.1.csv` was `leads.csv`.
            original = re.sub(r"\.\d+(?=\.[^.]*$|$)", "", path.name)
            named = name_part in (_safe_name(original), _safe_name(path.name))
            if named and path.is_file() and content_hash(path).startswith(hash_of_key(key)):
                return path
    raise dg.Failure(
        description=f"No file in {landing} matches partition {key!r}: it was moved (an imported file moves to "
        "processed/), renamed or changed since it landed. To import a file now in the landing folder, "
        "Materialize `leads` and add a partition named as the file.",
        allow_retries=False,
    )


def named_landed_file(landing: Path, name: str) -> Path:
    """The landing-folder file a user named (`leads.csv`, `2026/leads.csv`); nothing outside the folder."""
    root = Path(os.path.realpath(landing))
    path = Path(os.path.realpath(root / name))
    if not path.is_relative_to(root) or path == root:
        raise dg.Failure(
            description=f"{name!r} is not a file in the landing folder {landing}: only files in it (or objects "
            "in the configured bucket) can be imported. Copy the file into the landing folder first.",
            allow_retries=False,
        )
    if not path.is_file():
        present = sorted(e.name for e in landed_entries(landing))
        listed = ", ".join(present[:10]) + (f" and {len(present) - 10} more" if len(present) > 10 else "")
        raise dg.Failure(
            description=f"no file named {name!r} in the landing folder {landing}; "
            + (f"the files there are: {listed}" if present else "the folder is empty"),
            allow_retries=False,
        )
    return path


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
