"""Excel reader: the chosen sheet of an XLSX or XLS workbook, as text, from its first used row."""

import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import fastexcel
import polars as pl

from import_pipeline.formats import FileRejected, MiB, RawChunk, RawTable
from import_pipeline.headers import HEADER_SEARCH_ROWS, header_index
from import_pipeline.schema import SOURCE_ROW


def _refuse_zip_bomb(path: Path, max_bytes: int) -> None:
    """Refuse a workbook whose members declare more than `max_bytes` uncompressed."""
    with zipfile.ZipFile(path) as archive:
        declared = sum(info.file_size for info in archive.infolist())
    if declared > max_bytes:
        raise FileRejected(
            f"the workbook declares {declared // MiB} MB uncompressed, above the {max_bytes // MiB} MB limit"
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


def sheet_names(path: Path) -> list[str]:
    """The workbook's sheets, in order."""
    try:
        return fastexcel.read_excel(path).sheet_names
    except fastexcel.FastExcelError as e:
        raise FileRejected(f"not a readable workbook: {e}") from e


def read_excel_table(path: Path, fmt: str, sheet: str, max_unzipped: int, chunk_rows: int) -> RawTable:
    """Every cell of one sheet as text, formulas as their cached values, dates as ISO text."""
    if fmt == "xlsx":
        _refuse_zip_bomb(path, max_unzipped)
    names = sheet_names(path)
    if sheet and sheet not in names:
        raise FileRejected(f"no sheet named {sheet!r}; the workbook has {names}")
    name = sheet or names[0]
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
    source_rows = pl.int_range(
        first + header_at + 1, first + header_at + 1 + cells.height, eager=True, dtype=pl.Int64
    ).alias(SOURCE_ROW)
    # A sheet is read whole (at most 1,048,576 rows); chunks keep the later steps' memory bounded all the same.
    chunks = (
        RawChunk(cells.slice(at, chunk_rows), source_rows.slice(at, chunk_rows), None)
        for at in range(0, cells.height, chunk_rows)
    )
    return RawTable(headers, chunks, {"format": fmt, "sheet": name, "header_row": first + header_at})
