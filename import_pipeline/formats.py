"""Formats: what a landed file is (CSV, gzip, XLSX, XLS or not a lead file at all), its text encoding and dialect,
and the shapes every reader returns."""

import codecs
import collections
import csv
import gzip
import re
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import charset_normalizer
import polars as pl

from import_pipeline.lines import first_undecodable_line, survey_utf8, utf8_with_cp1252_lines
from import_pipeline.schema import SOURCE_ROW
from import_pipeline.western import reads_as_western

SNIFF_BYTES = 256 * 1024

DELIMITERS = (",", ";", "\t", "|", ":")

BINARY_MIN_CONTROL_BYTES = 16

# C0 control bytes other than tab, line feed, vertical tab, form feed and carriage return.
_CONTROL_BYTES = bytes([*range(9), *range(14, 32)])

MiB = 1024 * 1024

_C1_CONTROLS = re.compile("[\x80-\x9f]")
# The encodings a file is read in as it is, without a UTF-8 copy.
UTF8_NAMES = ("utf-8", "utf-8-sig", "ascii")
# A UTF-8 file some lines of which are Windows-1252 (`text_encoding`): each line is read in its own.
UTF8_WITH_CP1252_LINES = "utf-8+cp1252"
# The Windows code page of each ISO 8859 one: the same letters, and punctuation where ISO has C1 controls.
WINDOWS_CODE_PAGES = {
    "latin_1": "cp1252",
    "iso8859_15": "cp1252",
    "iso8859_2": "cp1250",
    "iso8859_7": "cp1253",
    "iso8859_8": "cp1255",
    "iso8859_9": "cp1254",
    "iso8859_13": "cp1257",
}

# Python's csv module refuses a value over 131,072 characters by default; real exports hold notes and call
# transcripts of several MB. A limit stays, because the module holds the value being read at 4 bytes a character
# and a value this long is almost always a quote that never closes: at most 256 MB of memory for one value.
MAX_FIELD_CHARS = 64 * MiB
csv.field_size_limit(MAX_FIELD_CHARS)

_NOT_LEAD_FILES = {
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"7z\xbc\xaf": "a 7-Zip archive",
    b"Rar!": "a RAR archive",
    b"BZh": "a bzip2 archive",
    b"\xfd7zXZ\x00": "an xz archive",
    b"\x28\xb5\x2f\xfd": "a Zstandard archive",
}


class FileRejected(Exception):
    """The whole file cannot be imported; the message says why, in the user's terms."""


@dataclass
class RawChunk:
    """Some of a file's records: cells as text (`c0`, `c1`, ...), the line or sheet row of each, shape problems."""

    cells: pl.DataFrame
    source_rows: pl.Series
    row_problems: pl.Series | None


@dataclass
class RawTable:
    """A file's headers, its records chunk by chunk (read as they are consumed), what was detected, and what the
    user must be told about how it was read."""

    headers: list[str]
    chunks: Iterator[RawChunk]
    details: dict
    warnings: list[str] = field(default_factory=list)

    def whole(self) -> RawChunk:
        """Every chunk in one: for tests and small files."""
        chunks = list(self.chunks)
        width = len(self.headers)
        cells = (
            pl.concat([c.cells for c in chunks])
            if chunks
            else pl.DataFrame(schema={f"c{i}": pl.String for i in range(width)})
        )
        rows = pl.concat([c.source_rows for c in chunks]) if chunks else pl.Series(SOURCE_ROW, [], pl.Int64)
        problems = [c.row_problems for c in chunks if c.row_problems is not None]
        return RawChunk(cells, rows, pl.concat(problems) if problems else None)


def line_list(lines: list[int], count: int) -> str:
    """`line 7`, `lines 7 and 9`, or `lines 7, 9, 12, 20, 31 and 95 more`: the first `lines` of `count`."""
    if count == 1:
        return f"line {lines[0]}"
    if count == len(lines):
        return f"lines {', '.join(map(str, lines[:-1]))} and {lines[-1]}"
    return f"lines {', '.join(map(str, lines))} and {count - len(lines):,} more"


def detect_format(path: Path) -> str:
    """`csv`, `gzip`, `xlsx` or `xls`, from the file's first bytes."""
    with path.open("rb") as f:
        head = f.read(8)
    if not head:
        raise FileRejected("the file is empty")
    if head.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(path) as archive:
            if "xl/workbook.xml" in archive.namelist():
                return "xlsx"
        raise FileRejected("unsupported format: a ZIP archive that is not an Excel workbook")
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "xls"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    for magic, what in _NOT_LEAD_FILES.items():
        if head.startswith(magic):
            raise FileRejected(f"unsupported format: {what}, not a CSV or Excel file")
    return "csv"


def gunzip(path: Path, work_dir: Path, max_bytes: int) -> Path:
    target = work_dir / (path.name.removesuffix(".gz") or "decompressed")
    work_dir.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "rb") as src, target.open("wb") as dst:
        while chunk := src.read(MiB):
            if dst.tell() + len(chunk) > max_bytes:
                raise FileRejected(f"the compressed file inflates to more than {max_bytes // MiB} MB, the size limit")
            dst.write(chunk)
    return target


def _valid_utf8(data: bytes) -> bool:
    """Whether `data` is UTF-8, as strictly as Python's decoder judges it."""
    try:
        pl.Series([data], dtype=pl.Binary).cast(pl.String)
    except pl.exceptions.ComputeError:
        return False
    return True


def _is_utf8(path: Path) -> bool:
    # polars checks without making the text: 0.20 s -> 0.09 s for the 1M-row benchmark file.
    left = b""
    with path.open("rb") as f:
        while block := f.read(4 * MiB):
            block, cut = left + block, len(left) + len(block)
            # The block's last character may go on in the next block: it is checked with it. (A character is
            # at most 4 bytes: a first byte, 0b11xxxxxx, then up to 3 continuation bytes, 0b10xxxxxx.)
            for _ in range(3):
                if cut and block[cut - 1] & 0xC0 == 0x80:
                    cut -= 1
            if cut and block[cut - 1] >= 0xC0:
                cut -= 1
            if not _valid_utf8(block[:cut]):
                return False
            left = block[cut:]
    return _valid_utf8(left)


def text_encoding(path: Path, override: str = "") -> str:
    """The file's text encoding: the override, a byte-order mark, valid UTF-8, UTF-8 with Windows-1252 lines
    (UTF8_WITH_CP1252_LINES), or the 8-bit code page its text reads as."""
    if override:
        return _checked_override(path, override)
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    utf8 = "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8"
    controls = len(head) - len(head.translate(None, _CONTROL_BYTES))
    # A stray NUL in a text file is a rejected row, not a binary file.
    if utf8 == "utf-8" and controls > max(len(head) // 20, BINARY_MIN_CONTROL_BYTES):
        raise FileRejected("binary content: this is not a text file")
    if _is_utf8(path):
        return utf8
    found = survey_utf8(path, SNIFF_BYTES)
    text = b"".join(found.bad_bytes)
    if found.utf8_line:  # (a byte-order mark is beyond ASCII)
        # UTF-8, but some lines are not: exports appended to one another, a line pasted from another program.
        # They are read as Windows-1252 when they read as Western text, with a warning naming them.
        if reads_as_western(text):
            return UTF8_WITH_CP1252_LINES
        raise FileRejected(
            f"undecodable content: line {found.bad_lines[0]} is not UTF-8 like line {found.utf8_line}, nor "
            "Windows-1252 text: save the file in one encoding, UTF-8"
        )
    return _code_page(text)


def _checked_override(path: Path, override: str) -> str:
    """The encoding run config names, once UTF-8 or ASCII is checked to be what the file holds."""
    try:
        encoding = codecs.lookup(override).name
    except LookupError as e:
        raise FileRejected(f"unknown encoding {override!r} in run config") from e
    # Other encodings are checked as the file is converted to UTF-8 (`as_utf8`); these are read as they are.
    if encoding in UTF8_NAMES and (encoding == "ascii" or not _is_utf8(path)):
        line = first_undecodable_line(path, encoding)
        if line is not None:
            raise FileRejected(
                f"undecodable content: line {line} is not {encoding} text, the encoding set in run config"
            )
    return encoding


def _code_page(text: bytes) -> str:
    """The 8-bit code page of the lines of a file that are not UTF-8."""
    # A non-UTF-8 lead export is almost always Windows-1252 (Excel on Western Windows; it also reads Latin-1 text
    # the same). charset-normalizer judges the mess of a few slices of the text, and a slice dense in punctuation
    # misleads it: a French export with euro signs, guillemets, en dashes and curly apostrophes came out as
    # mac_latin2 (`HŰtel Le Mťridien`), 4 of the test suite's 84 Western exports as cp775, mac_latin2, cp1251 or
    # iso8859_10. So Windows-1252 is taken whenever the text reads as Western (`western.reads_as_western`), and
    # charset-normalizer decides only the rest (it tells Czech Windows-1250 from Windows-1252 where the near-tie
    # rule this replaces, Windows-1252 within 0.05 of the best mess, did not).
    if reads_as_western(text):
        return "cp1252"
    matches = charset_normalizer.from_bytes(text)
    best = matches.best()
    if best is None:
        raise FileRejected("undecodable content: the text is neither UTF-8 nor any other encoding we recognise")
    # C1 controls are in no text: an ISO 8859 code page reading bytes 0x80-0x9F as them means the file is in the
    # Windows code page that adds punctuation there (a Greek Windows-1253 export came out as iso8859_7, its
    # ellipses and dashes as controls), as browsers read those labels too (the WHATWG Encoding Standard).
    if _C1_CONTROLS.search(str(best)):
        found = [m.encoding for m in matches]
        windows = WINDOWS_CODE_PAGES.get(best.encoding)
        if windows in found:
            return windows
        return next((m.encoding for m in matches if not _C1_CONTROLS.search(str(m))), best.encoding)
    return best.encoding


def as_utf8(path: Path, encoding: str, work_dir: Path) -> tuple[Path, list[str]]:
    """The file itself when it is UTF-8 already (polars skips a UTF-8 BOM), else a UTF-8 copy; and what the user
    must be told about how it was read."""
    if encoding in UTF8_NAMES:
        return path, []
    work_dir.mkdir(parents=True, exist_ok=True)
    target = work_dir / f"{path.name}.utf8"
    if encoding == UTF8_WITH_CP1252_LINES:
        lines, count = utf8_with_cp1252_lines(path, target)
        verb = "is" if count == 1 else "are"
        return target, [
            f"{line_list(lines, count)} {verb} not UTF-8, the file's other lines are: read as Windows-1252 "
            "(set `encoding:` in the parse step's run config if that is wrong)"
        ]
    try:
        with path.open(encoding=encoding, newline="") as src, target.open("w", encoding="utf-8", newline="") as dst:
            shutil.copyfileobj(src, dst, MiB)
    except UnicodeDecodeError as e:
        line = first_undecodable_line(path, encoding)
        where = f"line {line}" if line is not None else "the end of the file"
        raise FileRejected(
            f"undecodable content: {where} is not {encoding} text; set the file's `encoding:` in the parse step's "
            "run config (ops: leads: ops: parse: config)"
        ) from e
    return target, []


def sniff_dialect(text: str) -> tuple[str, str]:
    """(delimiter, end-of-line) of a CSV sample: the delimiter that splits the most lines into the same count."""
    eol = "\r" if "\n" not in text and "\r" in text else "\n"
    best = (0.0, 0, ",")
    for delimiter in DELIMITERS:
        records = list(csv.reader(text.splitlines()[:200], delimiter=delimiter))[:-1] or list(
            csv.reader(text.splitlines(), delimiter=delimiter)
        )
        counts = [len(r) for r in records if r]
        if not counts:
            continue
        width, seen = collections.Counter(counts).most_common(1)[0]
        if width > 1 and (seen / len(counts), width) > best[:2]:
            best = (seen / len(counts), width, delimiter)
    return best[2], eol
