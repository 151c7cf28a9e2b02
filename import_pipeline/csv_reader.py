"""CSV reader: records found as Python's csv module finds them (plain runs of lines by polars), parsed by polars
in chunks, each record with the line it starts on."""

import array
import codecs
import csv
import io
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from import_pipeline.formats import SNIFF_BYTES, FileRejected, MiB, RawChunk, RawTable, as_utf8, sniff_dialect
from import_pipeline.headers import HeaderPosition, find_header
from import_pipeline.schema import ROW_PROBLEM, SOURCE_ROW


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
    if "field larger than field limit" in str(e):
        return FileRejected(
            f"the record starting on line {started_on} has a value longer than {csv.field_size_limit():,} characters, "
            "the longest a value can be: is a closing quote missing?"
        )
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


def _scan_with_csv_module(
    path: Path, delimiter: str, start: int, lines_above: int, records: int, max_bytes: int = 0
) -> tuple[_Chunk, int]:
    """Where up to `records` records from byte `start` (`lines_above` lines in) lie, and the lines above the next;
    with `max_bytes`, no more records once they hold that many bytes."""
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

        def room() -> bool:
            return len(chunk.widths) < records and not (max_bytes and consumed[0] - start >= max_bytes)

        try:
            while room() and (row := next(reader, None)) is not None:
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


_FEW_LINES = 256
# A chunk holds `chunk_rows` records or this many bytes, whichever comes first: 25,000 records of a 20,000-column
# export are 5 GB. Not less: every operation on a column costs polars some 20 us whatever its length, so a wide file
# in small chunks is slow (1,000 records of 20,000 fields, 200 MB, read in 2 chunks: 8.7 s, 1.2 GB peak RSS;
# in 7 chunks of 32 MB: 24 s, 0.8 GB).
CHUNK_BYTES = 128 * MiB


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
        """Read ahead until `lines` line ends (or CHUNK_BYTES with one line end) are ahead or the file ends; False
        when nothing is left."""
        # Joined once: adding each read to `ahead` copied it again every time, quadratic in the bytes ahead
        # (15 s to read ahead 1,000 records of 20,000 fields, 200 MB; 0.2 s joined once).
        parts, size = [self.ahead], len(self.ahead)
        while self._line_ends < lines and not self._eof and (size < CHUNK_BYTES or not self._line_ends):
            wanted = int((lines - self._line_ends) * self._line_bytes * 1.1) if self._line_bytes else MiB
            more = self._f.read(min(max(wanted, 64 * 1024), CHUNK_BYTES))
            if not more:
                self._eof = True
                break
            self._line_ends += more.count(self._eol)
            parts.append(more)
            size += len(more)
        if len(parts) > 1:
            self.ahead = b"".join(parts)
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
            lengths = (
                pl.read_csv(
                    ahead[:cut],
                    has_header=False,
                    separator="\0",
                    quote_char=None,
                    eol_char=eol.decode(),
                    schema={"line": pl.String},
                    n_rows=records,
                    raise_if_empty=False,
                )
                .select(pl.col("line").str.len_bytes().fill_null(0))
                .to_series()
            )
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
        if int(str(lengths.max() or 0)) >= csv.field_size_limit():
            return None
        self._line_bytes = size / lengths.len()
        return size, lengths, terminator


def _plain_widths(data: bytes, lengths: pl.Series, terminator: int, cells: pl.DataFrame, delimiter: str) -> pl.Series:
    """The field count of each plain line of `data`, as the csv module counts them: 0 for a blank line."""
    width = cells.width
    # A line of `width` fields is exactly its cells and the delimiters between them: only the others are counted
    # (counting the delimiters of 1M lines takes 0.25 s).
    cell_bytes = cells.select(pl.sum_horizontal(pl.all().str.len_bytes().fill_null(0))).to_series()
    lines = (
        pl.DataFrame({"length": lengths, "cells": cell_bytes})
        .with_row_index("i")
        .with_columns((pl.col("length") + terminator).cum_sum().shift(1, fill_value=0).alias("at"))
    )
    odd = lines.filter((pl.col("length") == 0) | (pl.col("length") != pl.col("cells") + width - 1))
    widths = pl.repeat(width, lengths.len(), dtype=pl.Int64, eager=True)
    if odd.height:
        separator = delimiter.encode()
        counted = [
            data.count(separator, at, at + n) + 1 if n else 0 for at, n in odd.select("at", "length").iter_rows()
        ]
        widths.scatter(odd["i"], pl.Series(counted, dtype=pl.Int64))
    return widths


def _read_with_csv_module(text: str, delimiter: str, width: int) -> pl.DataFrame:
    """Records by Python's csv module, for the rare chunk polars rejects that the module reads."""
    rows = [
        row[:width] + [None] * (width - len(row))
        for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    ]
    return pl.DataFrame(rows, schema={f"c{i}": pl.String for i in range(width)}, orient="row")


def _parse_range(data: bytes, delimiter: str, eol: str, width: int) -> pl.DataFrame:
    try:
        cells = pl.read_csv(
            data,
            has_header=False,
            separator=delimiter,
            eol_char=eol,
            truncate_ragged_lines=True,
            schema={f"c{i}": pl.String for i in range(width)},
            missing_columns="insert",
            extra_columns="ignore",
            raise_if_empty=False,
        )
    except pl.exceptions.ComputeError:
        # e.g. a quote after a space, which the csv module (and Excel) take literally
        return _read_with_csv_module(data.decode("utf-8"), delimiter, width)
    # polars parses in pieces, one per thread, and every later operation on a column runs once per piece, at some
    # 20 us each: short pieces (a wide file's) are put in one (89 records of 20,000 fields: to_records 2.8 s, 1.2 s
    # after 0.03 s of this); long ones are not worth copying (0.1 s more per million records of 15 fields).
    if cells.n_chunks() > 1 and cells.height < cells.n_chunks() * _FEW_LINES:
        return cells.rechunk()
    return cells


def _same_count(cells: pl.DataFrame, records: int, path: Path) -> None:
    if cells.height != records:
        raise RuntimeError(f"parsers disagree on the record count of {path.name}: {cells.height} vs {records}")


def _raw_chunk(cells: pl.DataFrame, lines: pl.Series, widths: pl.Series, width: int, path: Path) -> RawChunk:
    """The chunk of `cells`, given each record's field count as the csv module counts them."""
    _same_count(cells, widths.len(), path)
    problems = (
        widths.alias(ROW_PROBLEM)
        .to_frame()
        .select(
            pl.when((pl.col(ROW_PROBLEM) != width) & (pl.col(ROW_PROBLEM) > 0)).then(
                pl.format("row has {} fields, the header has {}", pl.col(ROW_PROBLEM), pl.lit(width))
            )
        )
        .to_series()
    )
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
        except Exception as e:
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


def _record_ranges(
    path: Path, delimiter: str, eol: str, header: HeaderPosition, chunk_rows: int
) -> Iterator[_Plain | _Chunk]:
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
            chunk, lines_above = _scan_with_csv_module(path, delimiter, start, lines_above, chunk_rows, CHUNK_BYTES)
            if not chunk.widths:
                return
            yield chunk
            start = chunk.end
            plain.restart(start)


def _csv_chunks(
    path: Path, delimiter: str, eol: str, header: HeaderPosition, width: int, chunk_rows: int
) -> Iterator[RawChunk]:
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
                lines, widths = (
                    pl.Series(SOURCE_ROW, found.lines, pl.Int64),
                    pl.Series(ROW_PROBLEM, found.widths, pl.Int64),
                )
                yield _raw_chunk(cells, lines, widths, width, path)


def read_csv_table(path: Path, encoding: str, work_dir: Path, chunk_rows: int) -> RawTable:
    """Every cell of a CSV as text, exactly as written (no type inference: leading zeros survive), in chunks."""
    text_path, warnings = as_utf8(path, encoding, work_dir)
    with text_path.open(encoding="utf-8-sig", newline="") as f:
        sample = f.read(SNIFF_BYTES)
    if not sample.strip():
        raise FileRejected("the file is empty")
    delimiter, eol = sniff_dialect(sample)
    header = find_header(sample, delimiter)
    headers = csv_headers(text_path, delimiter, header)
    line_ending = "CRLF" if "\r\n" in sample else {"\n": "LF", "\r": "CR"}[eol]
    details: dict[str, Any] = {
        "format": "csv",
        "encoding": encoding,
        "delimiter": delimiter,
        "line_ending": line_ending,
    }
    if header.lines_above:
        details["header_line"] = header.lines_above + 1
    chunks = _csv_chunks(text_path, delimiter, eol, header, len(headers), chunk_rows)
    return RawTable(headers, chunks, details, warnings)
