"""Excel reader: the chosen sheet of an XLSX or XLS workbook, as text, from its first used row.

An XLSX sheet is parsed a block of rows at a time (xlsx_sheet.py) into dense frames of rows, kept on disk
beyond the first few MB, then handed out `chunk_rows` records at a time: memory follows the block and the
chunk, not the sheet. The table starts at the sheet's first used row and column and ends at its last used
column, as calamine's does; a row near the end can move those bounds, so the whole sheet is parsed before
the first chunk. An XLS (BIFF, at most 65,536 rows) is read whole by calamine.
"""

import tempfile
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fastexcel
import polars as pl

from import_pipeline.formats import FileRejected, MiB, RawChunk, RawTable
from import_pipeline.headers import HEADER_SEARCH_ROWS, header_index
from import_pipeline.schema import SOURCE_ROW
from import_pipeline.xlsx_sheet import (
    MAX_COLUMNS,
    MAX_ROWS,
    cell_name,
    open_workbook,
    set_where,
    shared_strings,
    sheet_cells,
)

# Rows kept in memory before the rest go to disk: a sheet this size never touches the disk. Kept rows hold on to
# their run's string buffers, several times their estimated size: the reader alone peaked at 501 MB for the
# 1,048,576-row sheet with 64 MiB kept, growing with the sheet, and at 367 MB with 8 MiB (352 MB at 250,000 rows).
SPILL_AFTER_BYTES = 8 * MiB


def _refuse_zip_bomb(path: Path, max_bytes: int) -> None:
    """Refuse a workbook whose members declare more than `max_bytes` uncompressed."""
    with zipfile.ZipFile(path) as archive:
        declared = sum(info.file_size for info in archive.infolist())
    if declared > max_bytes:
        raise FileRejected(
            f"the workbook declares {declared // MiB} MB uncompressed, above the {max_bytes // MiB} MB limit"
        )


def _dates_as_iso(cells: pl.DataFrame) -> pl.DataFrame:
    """calamine's `2026-03-01 00:00:00` as `2026-03-01`, `2026-03-02 14:05:09` as `2026-03-02T14:05:09`."""
    return cells.with_columns(
        pl.all()
        .str.replace(r"^(\d{4}-\d{2}-\d{2}) 00:00:00$", "${1}")
        .str.replace(r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})$", "${1}T${2}")
    )


def _empty(name: str, names: list[str]) -> FileRejected:
    return FileRejected(f"the sheet {name!r} is empty; name another in run config (parse: sheet): {names}")


def _chosen(sheet: str, names: list[str]) -> str:
    if sheet and sheet not in names:
        raise FileRejected(f"no sheet named {sheet!r}; the workbook has {names}")
    if not names:
        raise FileRejected("the workbook has no sheets")
    return sheet or names[0]


class RowsOutOfOrder(Exception):
    """A sheet whose rows do not come in ascending order: read whole by calamine instead."""


def _iso(cells: pl.DataFrame) -> pl.DataFrame:
    """`_dates_as_iso` of the `value` column, on the only values that can match: 19 characters."""
    value = pl.col("value")
    return set_where(
        cells,
        value.str.len_chars() == 19,
        "value",
        value.str.replace(r"^(\d{4}-\d{2}-\d{2}) 00:00:00$", "${1}").str.replace(
            r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})$", "${1}T${2}"
        ),
    )


@dataclass
class Run:
    """A run of rows ready to keep: its used rows, its first ones as calamine gives them, its bounds (0-based)."""

    # `rows` and `head`: `row` and one column per used sheet column ("3" for D); dates as ISO text in `rows`.

    rows: pl.DataFrame
    head: pl.DataFrame
    low: int
    high: int
    first_col: int
    last_col: int
    ordered: bool


def _wide(cells: pl.DataFrame) -> pl.DataFrame:
    # A later cell at the same place replaces an earlier one, as in calamine's Range::from_sparse.
    return cells.pivot(on="col", index="row", values="value", aggregate_function="last")


def run_of(cells: pl.DataFrame) -> Run | None:
    """What is kept of a run's used cells (row, col, value); done in the parsing threads."""
    if cells.height == 0:
        return None
    low, high, first_col, last_col, ordered = cells.select(
        low=pl.col("row").min(),
        high=pl.col("row").max(),
        first_col=pl.col("col").min(),
        last_col=pl.col("col").max(),
        ordered=(pl.col("row").diff().fill_null(0) >= 0).all(),
    ).row(0)
    cells = cells.with_columns(pl.col("col").cast(pl.String))
    return Run(
        _wide(_iso(cells)),
        _wide(cells.filter(pl.col("row") < low + HEADER_SEARCH_ROWS)),
        low,
        high,
        first_col,
        last_col,
        ordered,
    )


class SheetRows:
    """A sheet's used rows in order: the first runs in memory, the rest in Arrow IPC files of a temporary folder."""

    def __init__(self) -> None:
        self.frames: list[pl.DataFrame | Path] = []
        self.heads: list[pl.DataFrame] = []
        self.first_row: int | None = None  # 0-based sheet row and columns of the used range
        self.last_row = -1
        self.first_col, self.last_col = MAX_COLUMNS, -1
        self._kept = 0
        self._folder: tempfile.TemporaryDirectory | None = None

    def add(self, run: Run | None) -> None:
        if run is None:
            return
        if not run.ordered or run.low <= self.last_row:
            raise RowsOutOfOrder
        if run.high >= MAX_ROWS or run.last_col >= MAX_COLUMNS:
            raise FileRejected(
                f"the sheet has a cell at {cell_name(min(run.high, 2**31), min(run.last_col, 2**31))}, beyond "
                f"Excel's {MAX_ROWS:,} rows and {MAX_COLUMNS:,} columns"
            )
        if self.first_row is None:
            self.first_row = run.low
        if run.low < self.first_row + HEADER_SEARCH_ROWS:
            self.heads.append(run.head)
        self.last_row = run.high
        self.first_col, self.last_col = min(self.first_col, run.first_col), max(self.last_col, run.last_col)
        size = int(run.rows.estimated_size())
        if self._kept + size <= SPILL_AFTER_BYTES:
            self._kept += size
            self.frames.append(run.rows)
            return
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="import-pipeline-sheet-")
        path = Path(self._folder.name) / f"{len(self.frames)}.arrow"
        run.rows.write_ipc(path, compression="lz4")
        self.frames.append(path)

    def close(self) -> None:
        """Remove the files, if any."""
        self.frames = []
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def dense(
        self, start: int, chunk_rows: int, frames: list[pl.DataFrame | Path] | None = None
    ) -> Iterator[pl.DataFrame]:
        """Sheet rows from `start` (0-based) to the last used one, blank ones too, as `row`, `c0`...; a few a frame."""
        width = self.last_col - self.first_col + 1
        columns = [str(self.first_col + i) for i in range(width)]
        at = start
        for kept in self.frames if frames is None else frames:
            frame = pl.read_ipc(kept) if isinstance(kept, Path) else kept
            frame = frame.filter(pl.col("row") >= at)
            if frame.height == 0:
                continue
            end = frame["row"][-1]
            frame = (
                frame.select(
                    "row", *(pl.col(c) if c in frame.columns else pl.lit(None, pl.String).alias(c) for c in columns)
                )
                .rename({c: f"c{i}" for i, c in enumerate(columns)})
                .cast({f"c{i}": pl.String for i in range(width)})
            )
            if frame.height == end - at + 1:
                yield from (frame.slice(i, chunk_rows) for i in range(0, frame.height, chunk_rows))
            else:  # blank rows: every row number, the used rows' cells joined on
                for low in range(at, end + 1, chunk_rows):
                    rows = pl.DataFrame({"row": pl.int_range(low, min(low + chunk_rows, end + 1), eager=True)})
                    yield rows.join(frame, on="row", how="left", maintain_order="left")
            at = end + 1

    def head(self) -> pl.DataFrame:
        """The first HEADER_SEARCH_ROWS rows of the table, cells as calamine gives them."""
        assert self.first_row is not None
        taken: list[pl.DataFrame] = []
        for frame in self.dense(self.first_row, HEADER_SEARCH_ROWS, list(self.heads)):
            taken.append(frame.filter(pl.col("row") < self.first_row + HEADER_SEARCH_ROWS))
        return pl.concat(taken).drop("row")


def _records(rows: SheetRows, start: int, chunk_rows: int) -> Iterator[RawChunk]:
    """The dense rows from `start`, exactly `chunk_rows` records a chunk (fewer in the last)."""
    try:
        pending: list[pl.DataFrame] = []
        held = 0
        for frame in rows.dense(start, chunk_rows):
            pending.append(frame)
            held += frame.height
            while held >= chunk_rows:
                block = pl.concat(pending)
                yield _chunk(block.head(chunk_rows))
                rest = block.slice(chunk_rows)
                pending, held = ([rest] if rest.height else []), rest.height
        if held:
            yield _chunk(pl.concat(pending))
    finally:
        rows.close()


def _chunk(frame: pl.DataFrame) -> RawChunk:
    return RawChunk(frame.drop("row"), (frame["row"] + 1).alias(SOURCE_ROW).cast(pl.Int64), None)


def sheet_names(path: Path) -> list[str]:
    """The workbook's sheets, in order."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return list(open_workbook(archive).sheets)
        return fastexcel.read_excel(path).sheet_names
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise FileRejected(f"the workbook is damaged: {e}") from e
    except fastexcel.FastExcelError as e:
        raise FileRejected(f"not a readable workbook: {e}") from e


def read_excel_table(path: Path, fmt: str, sheet: str, max_unzipped: int, chunk_rows: int) -> RawTable:
    """Every cell of one sheet as text, formulas as their cached values, dates as ISO text."""
    if fmt != "xlsx":
        return read_whole_sheet(path, fmt, sheet, chunk_rows)
    _refuse_zip_bomb(path, max_unzipped)
    rows = SheetRows()
    try:
        with zipfile.ZipFile(path) as archive:
            book = open_workbook(archive)
            names = list(book.sheets)
            name = _chosen(sheet, names)
            for run in sheet_cells(book, name, shared_strings(book), run_of):
                rows.add(run)
    except RowsOutOfOrder:
        rows.close()
        return read_whole_sheet(path, fmt, name, chunk_rows)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        rows.close()
        raise FileRejected(f"the workbook is damaged: {e}") from e
    except BaseException:
        rows.close()
        raise
    if rows.first_row is None:
        raise _empty(name, names)
    head = rows.head()
    header_at = header_index([list(row) for row in head.rows()])
    headers = [c if c is not None else f"column_{i + 1}" for i, c in enumerate(head.row(header_at))]
    details = {"format": fmt, "sheet": name, "header_row": rows.first_row + 1 + header_at}
    return RawTable(headers, _records(rows, rows.first_row + header_at + 1, chunk_rows), details)


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
        rel_id = next(
            s.get(f"{{{_NS['r']}}}id") for s in workbook.iterfind("m:sheets/m:sheet", _NS) if s.get("name") == sheet
        )
        target = next(r.get("Target") for r in rels.iterfind("rel:Relationship", _NS) if r.get("Id") == rel_id)
        if target is None:
            raise FileRejected(f"the workbook names no file for the sheet {sheet!r}")
        member = target.lstrip("/") if target.startswith("/") else f"xl/{target}"
        with archive.open(member) as xml:
            for _, element in ET.iterparse(xml):
                if element.tag == f"{{{_NS['m']}}}c" and (
                    element.find("m:v", _NS) is not None or element.find("m:is", _NS) is not None
                ):
                    return int("".join(ch for ch in element.get("r", "A1") if ch.isdigit()))
    return 1


def read_whole_sheet(path: Path, fmt: str, sheet: str, chunk_rows: int) -> RawTable:
    """The sheet read whole by calamine (polars' engine), then cut into chunks: XLS, and the XLSX reference."""
    names = fastexcel.read_excel(path).sheet_names
    name = _chosen(sheet, names)
    table = pl.read_excel(
        path,
        engine="calamine",
        sheet_name=name,
        has_header=False,
        drop_empty_rows=False,
        drop_empty_cols=False,
        raise_if_empty=False,
        read_options={"header_row": None, "dtypes": "string"},
    )
    if table.height == 0:
        raise _empty(name, names)
    rows = table.head(HEADER_SEARCH_ROWS).rows()
    header_at = header_index([list(row) for row in rows])
    headers = [c if c is not None else f"column_{i + 1}" for i, c in enumerate(rows[header_at])]
    cells = _dates_as_iso(table.slice(header_at + 1).rename({c: f"c{i}" for i, c in enumerate(table.columns)}))
    first = _first_used_row(path, name) if fmt == "xlsx" else 1
    source_rows = pl.int_range(
        first + header_at + 1, first + header_at + 1 + cells.height, eager=True, dtype=pl.Int64
    ).alias(SOURCE_ROW)
    chunks = (
        RawChunk(cells.slice(at, chunk_rows), source_rows.slice(at, chunk_rows), None)
        for at in range(0, cells.height, chunk_rows)
    )
    return RawTable(headers, chunks, {"format": fmt, "sheet": name, "header_row": first + header_at})
