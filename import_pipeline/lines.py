"""Text lines: a file read line by line where its encoding fails, to name the lines and read them another way.

Lines are counted as a person sees them in an editor (LF, CRLF or CR ends one), quoted line breaks included.
"""

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from import_pipeline.western import cp1252_text

BLOCK_CHARS = 1024 * 1024
FIRST_LINES = 5

# What `errors="surrogateescape"` makes of a byte the encoding does not decode: no decoded text holds these.
_ESCAPED = re.compile("[\udc80-\udcff]")


def _line_ends(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _blocks(f: TextIO) -> Iterator[tuple[int, str]]:
    """(number of its first line, text) of runs of whole lines of a text stream opened with `newline=""`."""
    line, carry = 1, ""
    while block := f.read(BLOCK_CHARS):
        text = carry + block
        # Up to the last line end, but a CR at the very end may be the first half of a CRLF: up to the one before.
        end = len(text) - 1 if text.endswith("\r") else len(text)
        cut = max(text.rfind("\n", 0, end), text.rfind("\r", 0, end)) + 1
        carry = text[cut:]
        if cut:
            yield line, text[:cut]
            line += _line_ends(text[:cut])
    if carry:
        yield line, carry


def _lines(first: int, text: str) -> Iterator[tuple[int, str]]:
    return enumerate(io.StringIO(text, newline=""), first)


@dataclass
class Survey:
    """A file read as UTF-8: its lines that are not (first numbers, bytes up to a limit) and one that is beyond ASCII."""

    bad_lines: list[int] = field(default_factory=list)
    bad_bytes: list[bytes] = field(default_factory=list)
    utf8_line: int = 0  # a line that is UTF-8 and not ASCII, 0 if none was seen


def survey_utf8(path: Path, enough_bytes: int) -> Survey:
    """Which lines of `path` are not UTF-8, until `enough_bytes` of them are found."""
    found, size = Survey(), 0
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as f:
        for first, text in _blocks(f):
            if not _ESCAPED.search(text):
                if not found.utf8_line and not text.isascii():
                    found.utf8_line = next(n for n, line in _lines(first, text) if not line.isascii())
                continue
            for n, line in _lines(first, text):
                if _ESCAPED.search(line):
                    found.bad_lines.append(n)
                    found.bad_bytes.append(line.encode("utf-8", "surrogateescape"))
                    size += len(found.bad_bytes[-1])
                elif not found.utf8_line and not line.isascii():
                    found.utf8_line = n
            if size >= enough_bytes:
                break
    return found


def utf8_with_cp1252_lines(path: Path, target: Path) -> tuple[list[int], int]:
    """Write `path` to `target` in UTF-8, its lines that are not UTF-8 read as Windows-1252; (first of them, count)."""
    first_lines: list[int] = []
    count = 0
    with (
        path.open(encoding="utf-8", errors="surrogateescape", newline="") as src,
        target.open("w", encoding="utf-8", newline="") as dst,
    ):
        for first, text in _blocks(src):
            if not _ESCAPED.search(text):
                dst.write(text)
                continue
            for n, line in _lines(first, text):
                if _ESCAPED.search(line):
                    line = cp1252_text(line.encode("utf-8", "surrogateescape"))
                    count += 1
                    if len(first_lines) < FIRST_LINES:
                        first_lines.append(n)
                dst.write(line)
    return first_lines, count


def first_undecodable_line(path: Path, encoding: str) -> int | None:
    """The first line of `path` that `encoding` does not decode, or None."""
    with path.open(encoding=encoding, errors="surrogateescape", newline="") as f:
        for first, text in _blocks(f):
            if _ESCAPED.search(text):
                return next(n for n, line in _lines(first, text) if _ESCAPED.search(line))
    return None
