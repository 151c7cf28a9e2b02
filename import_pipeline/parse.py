"""Parse: any common lead file read as text, headers mapped to lead fields, records numbered as a person sees them.

CSV in any of the usual dialects and encodings, gzip-compressed CSV, XLSX and XLS; the format is
decided from the content, not the extension.
"""

import codecs
import collections
import csv
import gzip
import io
import itertools
import shutil
import time
import xml.etree.ElementTree as ET
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import charset_normalizer
import dagster as dg
import fastexcel
import polars as pl

from import_pipeline.config import ParseConfig, dagster_dir
from import_pipeline.landing import content_hash, find_landed_file, hash_of_key
from import_pipeline.mapping import MappingError, choose_profile, map_headers, maps_company
from import_pipeline.resources import BucketStore, LandingFolder
from import_pipeline.schema import CANONICAL_FIELDS

SOURCE_ROW = "source_row"
ROW_PROBLEM = "row_problem"
EXTRA_PREFIX = "extra."
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
class RawTable:
    """A file's cells as text, one column per source column, with the line or sheet row of each record."""

    headers: list[str]
    cells: pl.DataFrame
    source_rows: pl.Series
    row_problems: pl.Series | None
    details: dict


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


def _is_utf8(path: Path) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with path.open("rb") as f:
            while chunk := f.read(4 * _MiB):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


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


def _record_widths(path: Path, delimiter: str, header: HeaderPosition) -> tuple[list[str], list[int]]:
    """Headers and each record's field count, by Python's csv module: polars pads or cuts ragged rows silently."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, strict=True)
        try:
            for _ in range(header.records_above):
                next(reader)
            headers = next(reader, None)
            if headers is None:
                raise FileRejected("the file is empty")
            widths, ended_at = [], reader.line_num
            for row in reader:
                widths.append(len(row))
                ended_at = reader.line_num
        except csv.Error as e:
            if "unexpected end of data" in str(e):
                raise FileRejected(f"unterminated quote: the quoted value starting on line {ended_at + 1} never closes") from e
            raise FileRejected(f"malformed CSV on line {reader.line_num}: {e}") from e
    return headers, widths


def _read_with_csv_module(path: Path, delimiter: str, header: HeaderPosition) -> pl.DataFrame:
    """Every record by Python's csv module, for the rare file polars rejects that the module reads."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(itertools.islice(csv.reader(f, delimiter=delimiter), header.records_above, None))
    width = max(map(len, rows))
    padded = [row + [None] * (width - len(row)) if row else [None] * width for row in rows]
    return pl.DataFrame(padded, schema=[f"column_{i + 1}" for i in range(width)], orient="row")


def read_csv_table(path: Path, encoding: str, work_dir: Path) -> RawTable:
    """Every cell of a CSV as text, exactly as written (no type inference: leading zeros survive)."""
    text_path = _as_utf8(path, encoding, work_dir)
    with text_path.open(encoding="utf-8-sig", newline="") as f:
        sample = f.read(SNIFF_BYTES)
    if not sample.strip():
        raise FileRejected("the file is empty")
    delimiter, eol = sniff_dialect(sample)
    header = find_header(sample, delimiter)
    # The csv module's count runs while polars parses; polars releases the GIL.
    with ThreadPoolExecutor(1) as pool:
        shape = pool.submit(_record_widths, text_path, delimiter, header)
        try:
            table = pl.read_csv(
                text_path, has_header=False, separator=delimiter, eol_char=eol, infer_schema=False,
                truncate_ragged_lines=True, raise_if_empty=False, skip_rows=header.records_above,
            )
        except pl.exceptions.ComputeError:
            table = None  # e.g. a quote after a space, which the csv module (and Excel) take literally
        headers, widths = shape.result()
    if table is None:
        table = _read_with_csv_module(text_path, delimiter, header)
    cells = table.slice(1)
    if cells.height != len(widths):
        raise RuntimeError(f"parsers disagree on the record count of {path.name}: {cells.height} vs {len(widths)}")
    cells = cells.rename({c: f"c{i}" for i, c in enumerate(cells.columns)})
    width = len(headers)
    problems = (
        pl.DataFrame({"width": widths}, schema={"width": pl.Int64})
        .select(
            pl.when((pl.col("width") != width) & (pl.col("width") > 0))
            .then(pl.format("row has {} fields, the header has {}", pl.col("width"), pl.lit(width)))
            .alias(ROW_PROBLEM)
        )
        .to_series()
    )
    # A person counts lines including the line breaks quoted inside earlier records.
    breaks = pl.sum_horizontal(pl.col(c).str.count_matches(eol, literal=True).fill_null(0) for c in cells.columns)
    header_lines = header.lines_above + 1 + sum(h.count(eol) for h in headers)
    source_rows = cells.select(
        (header_lines + 1 + pl.int_range(pl.len()) + breaks.cum_sum().shift(1, fill_value=0)).alias(SOURCE_ROW)
    ).to_series()
    line_ending = "CRLF" if "\r\n" in sample else {"\n": "LF", "\r": "CR"}[eol]
    details = {"format": "csv", "encoding": encoding, "delimiter": delimiter, "line_ending": line_ending}
    if header.lines_above:
        details["header_line"] = header.lines_above + 1
    return RawTable(headers, cells, source_rows, problems, details)


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


def read_excel_table(path: Path, fmt: str, sheet: str, max_unzipped: int) -> RawTable:
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
    source_rows = pl.int_range(first + header_at + 1, first + header_at + 1 + cells.height, eager=True).alias(SOURCE_ROW)
    return RawTable(headers, cells, source_rows, None, {"format": fmt, "sheet": name, "header_row": first + header_at})


def read_table(path: Path, config: ParseConfig, work_dir: Path) -> RawTable:
    """The file's cells as text, whatever its format."""
    size = path.stat().st_size
    if size > config.max_file_mb * _MiB:
        raise FileRejected(f"the file is {size / _MiB:.1f} MB, above the {config.max_file_mb} MB limit")
    fmt = detect_format(path)
    if fmt in ("xlsx", "xls"):
        return read_excel_table(path, fmt, config.sheet, config.max_unzipped_mb * _MiB)
    if fmt == "gzip":
        path = _gunzip(path, work_dir, config.max_file_mb * _MiB)
        if detect_format(path) != "csv":
            raise FileRejected("unsupported format: the compressed file is not a CSV")
    return read_csv_table(path, text_encoding(path, config.encoding), work_dir)


def to_records(raw: RawTable, mapping: dict[str, str]) -> tuple[pl.DataFrame, dict[str, str]]:
    """Records with canonical columns, `extra.<header>` columns and their source row; blank records dropped.

    Returns the frame and the column each source header became.
    """
    columns, used = {}, set()
    for i, header in enumerate(raw.headers):
        name = mapping.get(header) or EXTRA_PREFIX + header
        while name in used:  # two unmapped columns with the same header
            name += "'"
        used.add(name)
        columns[f"c{i}"] = name
    named = {columns[c]: c for c in raw.cells.columns if c in columns}
    frame = (
        raw.cells.lazy()
        .select(
            raw.source_rows.alias(SOURCE_ROW),
            *(pl.col(c).str.strip_chars().replace("", None).alias(n) for n, c in named.items()),
            (raw.row_problems if raw.row_problems is not None else pl.lit(None, pl.String)).alias(ROW_PROBLEM),
        )
        .filter(pl.any_horizontal(pl.exclude(SOURCE_ROW, ROW_PROBLEM).is_not_null()))
        .with_columns(pl.lit(None, pl.String).alias(f) for f in CANONICAL_FIELDS if f not in named)
        .select(SOURCE_ROW, *CANONICAL_FIELDS, *(n for n in named if n.startswith(EXTRA_PREFIX)), ROW_PROBLEM)
        .collect()
    )
    return frame, {h: columns[f"c{i}"] for i, h in enumerate(raw.headers)}


def read_leads(path: Path, config: ParseConfig | None = None, work_dir: Path | None = None) -> tuple[pl.DataFrame, dict[str, str], dict]:
    """A lead file's records (see `to_records`), the header mapping used, and what was detected about the file."""
    config = config or ParseConfig()
    raw = read_table(path, config, work_dir or path.parent)
    if raw.cells.height == 0:
        raise FileRejected("the file has a header but no records")
    try:
        profile = choose_profile(path.name, config.mapping_profile)
        mapping = map_headers(raw.headers, profile)
    except MappingError as e:
        raise FileRejected(str(e)) from e
    records, columns = to_records(raw, mapping)
    if records.height == 0:
        raise FileRejected("the file has a header but no records")
    return records, columns, raw.details | {"mapping_profile": profile.name if profile else None}


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
def parse(context: dg.OpExecutionContext, config: ParseConfig, landing: LandingFolder, bucket: BucketStore):
    """Read the partition's file into text columns mapped to the canonical lead fields."""
    started = time.perf_counter()
    work_dir = dagster_dir(Path(landing.home).resolve()) / "storage" / context.run_id / "work"
    path, digest = source_file(landing.path, bucket, context.partition_key, config, work_dir)
    # The object's URI, not the temporary local copy, is what history and provenance name.
    source = config.source_path.partition("#")[0] if config.source_path.startswith("s3://") else str(path)
    try:
        records, mapping, details = read_leads(path, config, work_dir)
    except FileRejected as e:
        reason = f"{path.name}: {e}"
        quarantined = landing.quarantine(path, reason)
        metadata = {"source_file": str(path), "reason": reason}
        if quarantined:
            metadata["quarantined_to"] = str(quarantined)
        raise dg.Failure(description=reason, metadata=metadata) from e
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    summary = {
        "partition_key": context.partition_key,
        "source_file": source,
        "content_hash": digest,
        "mapping": mapping,
        "rows_read": records.height,
        "seconds": {"parse": time.perf_counter() - started},
    }
    context.add_output_metadata(
        {
            "rows_read": records.height,
            "source_file": dg.MetadataValue.path(source),
            "content_hash": digest,
            "column_mapping": dg.MetadataValue.json(mapping),
            "file": dg.MetadataValue.json(details),
        },
        output_name="records",
    )
    yield dg.Output(records, "records")
    yield dg.Output(summary, "summary")
