"""Parse: any common lead file read as text, headers mapped to lead fields, records numbered as a person sees them.

CSV in any of the usual dialects and encodings, gzip-compressed CSV, XLSX and XLS; the format is
decided from the content, not the extension.
"""

import array
import codecs
import collections
import csv
import gzip
import io
import itertools
import queue
import shutil
import threading
import time
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import charset_normalizer
import dagster as dg
import fastexcel
import polars as pl

from import_pipeline.config import ParseConfig, dagster_dir
from import_pipeline.landing import content_hash, find_landed_file, hash_of_key
from import_pipeline.mapping import MappingError, choose_profile, map_headers, maps_company
from import_pipeline.bucket import BucketStore
from import_pipeline.parts import PartsWriter, step_output_dir
from import_pipeline.state import StateFolder
from import_pipeline.schema import CANONICAL_FIELDS, EXTRA_PREFIX, ROW_PROBLEM, SOURCE_ROW
from import_pipeline.summary import FileSummary

SNIFF_BYTES = 256 * 1024
DELIMITERS = (",", ";", "\t", "|", ":")
HEADER_SEARCH_ROWS = 30
WESTERN_CHAOS_MARGIN = 0.05
BINARY_MIN_CONTROL_BYTES = 16
# C0 control bytes other than tab, line feed, vertical tab, form feed and carriage return.
_CONTROL_BYTES = bytes([*range(9), *range(14, 32)])
_MiB = 1024 * 1024
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
    """A file's headers, its records chunk by chunk (read as they are consumed), and what was detected."""

    headers: list[str]
    chunks: Iterator[RawChunk]
    details: dict

    def whole(self) -> RawChunk:
        """Every chunk in one: for tests and small files."""
        chunks = list(self.chunks)
        width = len(self.headers)
        cells = pl.concat([c.cells for c in chunks]) if chunks else pl.DataFrame(schema={f"c{i}": pl.String for i in range(width)})
        rows = pl.concat([c.source_rows for c in chunks]) if chunks else pl.Series(SOURCE_ROW, [], pl.Int64)
        problems = [c.row_problems for c in chunks if c.row_problems is not None]
        return RawChunk(cells, rows, pl.concat(problems) if problems else None)


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


def _gunzip(path: Path, work_dir: Path, max_bytes: int) -> Path:
    target = work_dir / (path.name.removesuffix(".gz") or "decompressed")
    work_dir.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "rb") as src, target.open("wb") as dst:
        while chunk := src.read(_MiB):
            if dst.tell() + len(chunk) > max_bytes:
                raise FileRejected(f"the compressed file inflates to more than {max_bytes // _MiB} MB, the size limit")
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
        while block := f.read(4 * _MiB):
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
    """The file's text encoding: the override, a byte-order mark, valid UTF-8, or charset-normalizer's best guess."""
    if override:
        try:
            return codecs.lookup(override).name
        except LookupError as e:
            raise FileRejected(f"unknown encoding {override!r} in run config") from e
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    controls = len(head) - len(head.translate(None, _CONTROL_BYTES))
    # A stray NUL in a text file is a rejected row, not a binary file.
    if controls > max(len(head) // 20, BINARY_MIN_CONTROL_BYTES):
        raise FileRejected("binary content: this is not a text file")
    if _is_utf8(path):
        return "utf-8"
    best = charset_normalizer.from_bytes(head).best()
    # Short samples fit several code pages equally well; a non-UTF-8 lead export is almost always
    # Windows-1252 (Excel on Western Windows; it also reads Latin-1 text the same), so it wins near-ties.
    western = charset_normalizer.from_bytes(head, cp_isolation=["cp1252"]).best()
    if western is not None and (best is None or western.chaos <= best.chaos + WESTERN_CHAOS_MARGIN):
        return "cp1252"
    if best is None:
        raise FileRejected("undecodable content: the text is neither UTF-8 nor any other encoding we recognise")
    return best.encoding


def _as_utf8(path: Path, encoding: str, work_dir: Path) -> Path:
    """The file itself when it is UTF-8 already (polars skips a UTF-8 BOM), else a UTF-8 copy."""
    if encoding in ("utf_8", "utf-8", "utf-8-sig", "ascii"):
        return path
    work_dir.mkdir(parents=True, exist_ok=True)
    target = work_dir / f"{path.name}.utf8"
    try:
        with path.open(encoding=encoding, newline="") as src, target.open("w", encoding="utf-8", newline="") as dst:
            shutil.copyfileobj(src, dst, _MiB)
    except UnicodeDecodeError as e:
        raise FileRejected(f"undecodable content: not valid {encoding} at byte {e.start}") from e
    return target


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


@dataclass(frozen=True)
class HeaderPosition:
    """Where the header record starts: records (blank lines included) and physical lines above it."""

    records_above: int = 0
    lines_above: int = 0


def header_index(rows: list[list[str | None]]) -> int:
    """Which of a file's first rows is the header.

    Exports put blank lines, a report title or an export date above it, one filled cell each: the
    header is the first row naming the company column or filling two cells or more. A row of data is
    never skipped. Without such a row (a one-column file), the first non-blank row.
    """
    first = None
    for i, row in enumerate(rows):
        filled = sum(1 for cell in row if cell is not None and str(cell).strip())
        if filled and (maps_company(row) or filled > 1):
            return i
        if filled and first is None:
            first = i
    return first or 0


def find_header(sample: str, delimiter: str) -> HeaderPosition:
    """Where a CSV's header starts (see `header_index`)."""
    reader = csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter)
    rows, lines_above = [], [0]
    try:
        for row in itertools.islice(reader, HEADER_SEARCH_ROWS):
            rows.append(row)
            lines_above.append(reader.line_num)
    except csv.Error:
        pass  # a broken quote in the sample: the full read reports it with its line
    at = header_index(rows)
    return HeaderPosition(at, lines_above[at])


@dataclass
class _Chunk:
    """Where a run of records lies in the file, per the csv module: byte range, field counts, first lines."""

    start: int
    end: int
    widths: array.array = field(default_factory=lambda: array.array("q"))
    lines: array.array = field(default_factory=lambda: array.array("q"))


def _csv_problem(e: csv.Error, started_on: int, line: int) -> FileRejected:
    if "unexpected end of data" in str(e):
        return FileRejected(f"unterminated quote: the quoted value starting on line {started_on} never closes")
    return FileRejected(f"malformed CSV on line {line}: {e}")


def csv_headers(path: Path, delimiter: str, header: HeaderPosition) -> list[str]:
    """The header record, by Python's csv module."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, strict=True)
        try:
            for _ in range(header.records_above):
                next(reader)
            headers = next(reader, None)
        except csv.Error as e:
            raise _csv_problem(e, header.lines_above + 1, reader.line_num) from e
    if headers is None:
        raise FileRejected("the file is empty")
    return headers


def _scan_with_csv_module(path: Path, delimiter: str, start: int, lines_above: int, records: int) -> tuple[_Chunk, int]:
    """Where up to `records` records from byte `start` (`lines_above` lines in) lie, and the lines above the next."""
    # The module decides where each record starts and ends, how many fields it has (polars pads or cuts ragged
    # rows silently) and on which line it starts; polars then parses the range.
    # utf-8-sig drops the byte-order mark from the text, not from the byte offsets.
    consumed = [len(codecs.BOM_UTF8) if start == 0 and _starts_with_bom(path) else start]
    with path.open("rb") as raw:
        raw.seek(start)
        text = io.TextIOWrapper(raw, encoding="utf-8-sig" if start == 0 else "utf-8", newline="")

        def lines():
            for line in text:
                consumed[0] += len(line.encode("utf-8"))
                yield line

        reader = csv.reader(lines(), delimiter=delimiter, strict=True)
        chunk, ended_at = _Chunk(start, start), lines_above
        try:
            while len(chunk.widths) < records and (row := next(reader, None)) is not None:
                chunk.widths.append(len(row))
                chunk.lines.append(ended_at + 1)
                ended_at = lines_above + reader.line_num
        except csv.Error as e:
            raise _csv_problem(e, ended_at + 1, lines_above + reader.line_num) from e
    chunk.end = consumed[0]
    return chunk, ended_at


def _starts_with_bom(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8


def _scan_all(path: Path, delimiter: str) -> None:
    """Read every record with the csv module from the file's start, for the error it meets first."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, strict=True)
        ended_at = 0
        try:
            for _ in reader:
                ended_at = reader.line_num
        except csv.Error as e:
            raise _csv_problem(e, ended_at + 1, reader.line_num) from e


_FEW_LINES = 256


class _PlainLines:
    """The file's bytes from a record boundary on, in runs of records that are plain lines."""

    # Python's csv module takes 2.0 s to find the records of the 1M-row benchmark file (15 columns). A run of lines
    # with no quote, no NUL and one kind of line ending is one record per line and one field per delimiter more, as
    # the module reads it: polars finds those lines in 0.6 s. Runs that are not that plain go to the module
    # (`_scan_with_csv_module`).

    def __init__(self, f: io.BufferedReader, eol: str):
        self._f, self._eol = f, eol.encode()
        self.ahead, self._eof, self._line_bytes = b"", False, 0.0
        self._line_ends = 0  # in `ahead`: counting bytes is most of the cost of finding lines, each is counted once

    def restart(self, at: int) -> None:
        self._f.seek(at)
        self.ahead, self._eof, self._line_ends = b"", False, 0

    def consume(self, size: int) -> None:
        self._line_ends = self.ahead.count(self._eol, size)  # (what is left: a fraction of a chunk)
        self.ahead = self.ahead[size:]

    def fill(self, lines: int) -> bool:
        """Read ahead until `lines` line ends are ahead or the file ends; False when nothing is left."""
        while self._line_ends < lines and not self._eof:
            wanted = int((lines - self._line_ends) * self._line_bytes * 1.1) if self._line_bytes else _MiB
            more = self._f.read(max(wanted, 64 * 1024))
            if not more:
                self._eof = True
                break
            self._line_ends += more.count(self._eol)
            self.ahead += more
        return bool(self.ahead)

    def plain_run(self, records: int) -> tuple[int, pl.Series, int] | None:
        """(bytes, each line's length without its line end, line end length) of the next `records` plain lines, or None."""
        ahead, eol = self.ahead, self._eol
        cut = len(ahead) if self._eof else ahead.rfind(eol) + 1  # whole lines
        if records <= _FEW_LINES:
            # (small chunks, as in the test suite: not the whole read-ahead for a few lines)
            at = 0
            for _ in range(records):
                if (at := ahead.find(eol, at, cut) + 1) == 0:
                    break
            cut = at or cut
        terminator = 1
        if ahead.find(b"\0", 0, cut) != -1 or ahead.find(b'"', 0, cut) != -1:
            return None  # NUL would split the lines read below; a quote starts a quoted field
        if eol == b"\r":
            # A CR file with a line feed: the module would take `\r\n` as one line end, even across a read.
            if b"\n" in ahead or (cut == len(ahead) and not self._eof):
                return None
        elif (carriage_returns := ahead.count(b"\r", 0, cut)) > 0:
            # polars drops the `\r` of a `\r\n`: the byte count below needs every line to end the same way.
            if not carriage_returns == ahead.count(b"\r\n", 0, cut) == self._line_ends - ahead.count(b"\n", cut):
                return None
            terminator = 2
        try:
            lengths = pl.read_csv(
                ahead[:cut], has_header=False, separator="\0", quote_char=None, eol_char=eol.decode(),
                schema={"line": pl.String}, n_rows=records, raise_if_empty=False,
            ).select(pl.col("line").str.len_bytes().fill_null(0)).to_series()
        except pl.exceptions.ComputeError:
            return None  # e.g. not UTF-8: the module says so, where it occurs
        size = int(lengths.sum() or 0) + terminator * lengths.len()
        if self._eof and size == len(ahead) + terminator:
            size -= terminator  # the file's last line has no line end
        # The lines read are exactly the lines of those bytes, each ending where the module ends a line...
        unterminated = not ahead.endswith(eol, 0, size)
        if not 0 < size <= cut or (unterminated and not (self._eof and size == len(ahead))):
            return None
        if self._line_ends - ahead.count(eol, size) != lengths.len() - unterminated:
            return None
        # ...and none holds a field too long for the module.
        if int(lengths.max() or 0) >= csv.field_size_limit():
            return None
        self._line_bytes = size / lengths.len()
        return size, lengths, terminator


def _plain_widths(data: bytes, lengths: pl.Series, terminator: int, cells: pl.DataFrame, delimiter: str) -> pl.Series:
    """The field count of each plain line of `data`, as the csv module counts them: 0 for a blank line."""
    width = cells.width
    # A line of `width` fields is exactly its cells and the delimiters between them: only the others are counted
    # (counting the delimiters of 1M lines takes 0.25 s).
    cell_bytes = cells.select(pl.sum_horizontal(pl.all().str.len_bytes().fill_null(0))).to_series()
    lines = pl.DataFrame({"length": lengths, "cells": cell_bytes}).with_row_index("i").with_columns(
        (pl.col("length") + terminator).cum_sum().shift(1, fill_value=0).alias("at")
    )
    odd = lines.filter((pl.col("length") == 0) | (pl.col("length") != pl.col("cells") + width - 1))
    widths = pl.repeat(width, lengths.len(), dtype=pl.Int64, eager=True)
    if odd.height:
        separator = delimiter.encode()
        counted = [data.count(separator, at, at + n) + 1 if n else 0 for at, n in odd.select("at", "length").iter_rows()]
        widths.scatter(odd["i"], pl.Series(counted, dtype=pl.Int64))
    return widths


def _read_with_csv_module(text: str, delimiter: str, width: int) -> pl.DataFrame:
    """Records by Python's csv module, for the rare chunk polars rejects that the module reads."""
    rows = [row[:width] + [None] * (width - len(row)) for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)]
    return pl.DataFrame(rows, schema={f"c{i}": pl.String for i in range(width)}, orient="row")


def _parse_range(data: bytes, delimiter: str, eol: str, width: int) -> pl.DataFrame:
    try:
        return pl.read_csv(
            data, has_header=False, separator=delimiter, eol_char=eol, truncate_ragged_lines=True,
            schema={f"c{i}": pl.String for i in range(width)}, missing_columns="insert", extra_columns="ignore",
            raise_if_empty=False,
        )
    except pl.exceptions.ComputeError:
        # e.g. a quote after a space, which the csv module (and Excel) take literally
        return _read_with_csv_module(data.decode("utf-8"), delimiter, width)


def _same_count(cells: pl.DataFrame, records: int, path: Path) -> None:
    if cells.height != records:
        raise RuntimeError(f"parsers disagree on the record count of {path.name}: {cells.height} vs {records}")


def _raw_chunk(cells: pl.DataFrame, lines: pl.Series, widths: pl.Series, width: int, path: Path) -> RawChunk:
    """The chunk of `cells`, given each record's field count as the csv module counts them."""
    _same_count(cells, widths.len(), path)
    problems = widths.alias(ROW_PROBLEM).to_frame().select(
        pl.when((pl.col(ROW_PROBLEM) != width) & (pl.col(ROW_PROBLEM) > 0))
        .then(pl.format("row has {} fields, the header has {}", pl.col(ROW_PROBLEM), pl.lit(width)))
    ).to_series()
    return RawChunk(cells, lines, problems)


class _Stopped(Exception):
    """The reader of the items went away."""


def _read_ahead(items: Iterator, depth: int = 2) -> Iterator:
    """`items`, made in a thread at most `depth` ahead of the reader, exceptions included."""
    found: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> None:
        while not stop.is_set():
            try:
                found.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    def make() -> None:
        try:
            for item in items:
                put((item, None))
            put((end, None))
        except _Stopped:
            pass
        except Exception as e:  # noqa: BLE001 - handed to the reading thread, which raises it
            try:
                put((None, e))
            except _Stopped:
                pass
        finally:
            getattr(items, "close", lambda: None)()

    threading.Thread(target=make, daemon=True).start()
    try:
        while True:
            item, error = found.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()


@dataclass
class _Plain:
    """A plain run of lines (see `_PlainLines`): its bytes, each line's length and line end, its first line."""

    data: bytes
    lengths: pl.Series
    terminator: int
    first_line: int


def _record_ranges(path: Path, delimiter: str, eol: str, header: HeaderPosition, chunk_rows: int) -> Iterator[_Plain | _Chunk]:
    """Where each run of `chunk_rows` records lies: plain runs of lines found by polars, the rest by the csv module."""
    head, lines_above = _scan_with_csv_module(path, delimiter, 0, 0, header.records_above + 1)
    start = head.end
    with path.open("rb") as f:
        plain = _PlainLines(f, eol)
        plain.restart(start)
        while plain.fill(chunk_rows):
            if (run := plain.plain_run(chunk_rows)) is not None:
                size, lengths, terminator = run
                yield _Plain(plain.ahead[:size], lengths, terminator, lines_above + 1)
                plain.consume(size)
                start, lines_above = start + size, lines_above + lengths.len()
                continue
            try:
                chunk, lines_above = _scan_with_csv_module(path, delimiter, start, lines_above, chunk_rows)
            except UnicodeDecodeError:
                # Not UTF-8 after all (an `encoding` override): the error that reading from the start meets, as
                # before (a decoding error's position counts from the start of the read).
                _scan_all(path, delimiter)
                raise
            if not chunk.widths:
                return
            yield chunk
            start = chunk.end
            plain.restart(start)


def _csv_chunks(path: Path, delimiter: str, eol: str, header: HeaderPosition, width: int, chunk_rows: int) -> Iterator[RawChunk]:
    # Records are found in a thread ahead of polars parsing them: on a file the csv module reads (quoted fields,
    # say), it takes longer than everything else together, as it always did.
    with path.open("rb") as f:
        for found in _read_ahead(_record_ranges(path, delimiter, eol, header, chunk_rows), depth=1):
            if isinstance(found, _Plain):
                cells, records = _parse_range(found.data, delimiter, eol, width), found.lengths.len()
                _same_count(cells, records, path)  # the module reads a record a line
                rows = pl.int_range(found.first_line, found.first_line + records, dtype=pl.Int64, eager=True)
                widths = _plain_widths(found.data, found.lengths, found.terminator, cells, delimiter)
                yield _raw_chunk(cells, rows.alias(SOURCE_ROW), widths, width, path)
            else:
                f.seek(found.start)
                cells = _parse_range(f.read(found.end - found.start), delimiter, eol, width)
                lines, widths = pl.Series(SOURCE_ROW, found.lines, pl.Int64), pl.Series(ROW_PROBLEM, found.widths, pl.Int64)
                yield _raw_chunk(cells, lines, widths, width, path)


def read_csv_table(path: Path, encoding: str, work_dir: Path, chunk_rows: int) -> RawTable:
    """Every cell of a CSV as text, exactly as written (no type inference: leading zeros survive), in chunks."""
    text_path = _as_utf8(path, encoding, work_dir)
    with text_path.open(encoding="utf-8-sig", newline="") as f:
        sample = f.read(SNIFF_BYTES)
    if not sample.strip():
        raise FileRejected("the file is empty")
    delimiter, eol = sniff_dialect(sample)
    header = find_header(sample, delimiter)
    headers = csv_headers(text_path, delimiter, header)
    line_ending = "CRLF" if "\r\n" in sample else {"\n": "LF", "\r": "CR"}[eol]
    details = {"format": "csv", "encoding": encoding, "delimiter": delimiter, "line_ending": line_ending}
    if header.lines_above:
        details["header_line"] = header.lines_above + 1
    return RawTable(headers, _csv_chunks(text_path, delimiter, eol, header, len(headers), chunk_rows), details)


def _inflated_size(path: Path, max_bytes: int) -> None:
    with zipfile.ZipFile(path) as archive:
        declared = sum(info.file_size for info in archive.infolist())
    if declared > max_bytes:
        raise FileRejected(
            f"the workbook declares {declared // _MiB} MB uncompressed, above the {max_bytes // _MiB} MB limit"
        )


_NS = {
    "m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "rel": "http://schemas.openxmlformats.org/package/2006/relationships",
}


def _first_used_row(path: Path, sheet: str) -> int:
    """The sheet row of the first cell with a value: calamine drops the empty rows above it."""
    with zipfile.ZipFile(path) as archive:
        workbook = ET.fromstring(archive.read("xl/workbook.xml"))
        rels = ET.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
        rel_id = next(s.get(f"{{{_NS['r']}}}id") for s in workbook.iterfind("m:sheets/m:sheet", _NS) if s.get("name") == sheet)
        target = next(r.get("Target") for r in rels.iterfind("rel:Relationship", _NS) if r.get("Id") == rel_id)
        member = target.lstrip("/") if target.startswith("/") else f"xl/{target}"
        with archive.open(member) as xml:
            for _, element in ET.iterparse(xml):
                if element.tag == f"{{{_NS['m']}}}c" and (element.find("m:v", _NS) is not None or element.find("m:is", _NS) is not None):
                    return int("".join(ch for ch in element.get("r", "A1") if ch.isdigit()))
    return 1


def read_excel_table(path: Path, fmt: str, sheet: str, max_unzipped: int, chunk_rows: int) -> RawTable:
    """Every cell of one sheet as text, formulas as their cached values, dates as ISO text."""
    if fmt == "xlsx":
        _inflated_size(path, max_unzipped)
    names = fastexcel.read_excel(path).sheet_names
    if sheet and sheet not in names:
        raise FileRejected(f"no sheet named {sheet!r}; the workbook has {names}")
    name = sheet or names[0]
    table = pl.read_excel(
        path, engine="calamine", sheet_name=name, has_header=False, drop_empty_rows=False, drop_empty_cols=False,
        raise_if_empty=False, read_options={"header_row": None, "dtypes": "string"},
    )
    if table.height == 0:
        raise FileRejected(f"the sheet {name!r} is empty; name another in run config (parse: sheet): {names}")
    rows = table.head(HEADER_SEARCH_ROWS).rows()
    header_at = header_index([list(row) for row in rows])
    headers = [c if c is not None else f"column_{i + 1}" for i, c in enumerate(rows[header_at])]
    cells = table.slice(header_at + 1)
    cells = cells.rename({c: f"c{i}" for i, c in enumerate(cells.columns)}).with_columns(
        pl.all()
        .str.replace(r"^(\d{4}-\d{2}-\d{2}) 00:00:00$", "${1}")
        .str.replace(r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})$", "${1}T${2}")
    )
    first = _first_used_row(path, name) if fmt == "xlsx" else 1
    source_rows = pl.int_range(first + header_at + 1, first + header_at + 1 + cells.height, eager=True, dtype=pl.Int64).alias(SOURCE_ROW)
    # A sheet is read whole (at most 1,048,576 rows); chunks keep the later steps' memory bounded all the same.
    chunks = (
        RawChunk(cells.slice(at, chunk_rows), source_rows.slice(at, chunk_rows), None)
        for at in range(0, cells.height, chunk_rows)
    )
    return RawTable(headers, chunks, {"format": fmt, "sheet": name, "header_row": first + header_at})


def read_table(path: Path, config: ParseConfig, work_dir: Path) -> RawTable:
    """The file's cells as text, whatever its format."""
    size = path.stat().st_size
    if size > config.max_file_mb * _MiB:
        raise FileRejected(f"the file is {size / _MiB:.1f} MB, above the {config.max_file_mb} MB limit")
    fmt = detect_format(path)
    if fmt in ("xlsx", "xls"):
        return read_excel_table(path, fmt, config.sheet, config.max_unzipped_mb * _MiB, config.chunk_rows)
    if fmt == "gzip":
        path = _gunzip(path, work_dir, config.max_file_mb * _MiB)
        if detect_format(path) != "csv":
            raise FileRejected("unsupported format: the compressed file is not a CSV")
    return read_csv_table(path, text_encoding(path, config.encoding), work_dir, config.chunk_rows)


def column_names(headers: list[str], mapping: dict[str, str]) -> dict[str, str]:
    """The column each source header becomes: its lead field, else `extra.<header>` (made unique)."""
    names, used = {}, set()
    for i, header in enumerate(headers):
        name = mapping.get(header) or EXTRA_PREFIX + header
        while name in used:  # two unmapped columns with the same header
            name += "'"
        used.add(name)
        names[f"c{i}"] = name
    return names


def to_records(chunk: RawChunk, names: dict[str, str]) -> pl.DataFrame:
    """Records with canonical columns, `extra.<header>` columns and their source row; blank records dropped."""
    named = {names[c]: c for c in chunk.cells.columns if c in names}
    return (
        chunk.cells.lazy()
        .select(
            chunk.source_rows.alias(SOURCE_ROW),
            *(pl.col(c).str.strip_chars().replace("", None).alias(n) for n, c in named.items()),
            (chunk.row_problems if chunk.row_problems is not None else pl.lit(None, pl.String)).alias(ROW_PROBLEM),
        )
        .filter(pl.any_horizontal(pl.exclude(SOURCE_ROW, ROW_PROBLEM).is_not_null()))
        .with_columns(pl.lit(None, pl.String).alias(f) for f in CANONICAL_FIELDS if f not in named)
        .select(SOURCE_ROW, *CANONICAL_FIELDS, *(n for n in named if n.startswith(EXTRA_PREFIX)), ROW_PROBLEM)
        # The default engine picks the streaming one: 3x slower on a chunk (18 ms -> 6 ms for 25,000 records).
        .collect(engine="in-memory")
    )


def read_records(path: Path, config: ParseConfig, work_dir: Path) -> tuple[Iterator[pl.DataFrame], dict[str, str], dict]:
    """A lead file's records chunk by chunk (see `to_records`), the column each header became, and what was
    detected about the file. A file without records raises FileRejected once the chunks are consumed."""
    raw = read_table(path, config, work_dir)
    try:
        profile = choose_profile(path.name, config.mapping_profile)
        mapping = map_headers(raw.headers, profile)
    except MappingError as e:
        raise FileRejected(str(e)) from e
    names = column_names(raw.headers, mapping)

    def records() -> Iterator[pl.DataFrame]:
        seen = 0
        for chunk in raw.chunks:
            frame = to_records(chunk, names)
            seen += frame.height
            yield frame
        if seen == 0:
            raise FileRejected("the file has a header but no records")

    return records(), {h: names[f"c{i}"] for i, h in enumerate(raw.headers)}, raw.details | {"mapping_profile": profile.name if profile else None}


def read_leads(path: Path, config: ParseConfig | None = None, work_dir: Path | None = None) -> tuple[pl.DataFrame, dict[str, str], dict]:
    """`read_records` in one frame: for tests and small files."""
    chunks, mapping, details = read_records(path, config or ParseConfig(), work_dir or path.parent)
    return pl.concat(list(chunks)), mapping, details


def source_file(
    landing: Path, bucket: BucketStore, partition: str, config: ParseConfig, work_dir: Path
) -> tuple[Path, str]:
    """The file a partition imports and its full content hash; fails if its bytes changed since it landed.

    Objects from a bucket are streamed to the run's work folder first; their ETag guards against change.
    """
    if config.source_path.startswith("s3://"):
        path = bucket.download(config.source_path, work_dir, config.max_file_mb * _MiB)
        return path, content_hash(path)
    path = Path(config.source_path).resolve() if config.source_path else find_landed_file(landing, partition)
    if not path.is_file():
        raise dg.Failure(description=f"{path}: no such file")
    digest = content_hash(path)
    if hash_of_key(partition) != digest[: len(hash_of_key(partition))]:
        raise dg.Failure(
            description=f"{path.name}: its content changed since it landed as {partition!r}; "
            "the new content lands as a new partition"
        )
    return path, digest


@dg.op(out={"records": dg.Out(), "summary": dg.Out()})
def parse(context: dg.OpExecutionContext, config: ParseConfig, state: StateFolder, bucket: BucketStore):
    """Read the partition's file into text columns mapped to the canonical lead fields."""
    started = time.perf_counter()
    work_dir = dagster_dir(Path(state.home).resolve()) / "storage" / context.run_id / "work"
    path, digest = source_file(state.landing_path, bucket, context.partition_key, config, work_dir)
    # The object's URI, not the temporary local copy, is what history and provenance name.
    source = config.source_path.partition("#")[0] if config.source_path.startswith("s3://") else str(path)
    records = PartsWriter(step_output_dir(state.home, context.run_id, str(context.op_handle)) / "records")
    try:
        chunks, mapping, details = read_records(path, config, work_dir)
        for chunk in chunks:
            records.write(chunk)
    except FileRejected as e:
        reason = f"{path.name}: {e}"
        quarantined = state.quarantine(path, reason)
        metadata = {"source_file": str(path), "reason": reason}
        if quarantined:
            metadata["quarantined_to"] = str(quarantined)
        raise dg.Failure(description=reason, metadata=metadata) from e
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    records = records.parts()
    summary = FileSummary(
        partition_key=context.partition_key,
        source_file=source,
        content_hash=digest,
        mapping=mapping,
        rows_read=records.rows,
        seconds={"parse": time.perf_counter() - started},
    )
    context.add_output_metadata(
        {
            "rows_read": records.rows,
            "parts": len(records.paths),
            "source_file": dg.MetadataValue.path(source),
            "content_hash": digest,
            "column_mapping": dg.MetadataValue.json(mapping),
            "file": dg.MetadataValue.json(details),
        },
        output_name="records",
    )
    yield dg.Output(records, "records")
    yield dg.Output(summary, "summary")
