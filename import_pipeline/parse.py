"""Parse: any common lead file read as text, headers mapped to lead fields, records numbered as a person sees them.

CSV in any of the usual dialects and encodings, gzip-compressed CSV, XLSX and XLS; the format is
decided from the content, not the extension.
"""

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from import_pipeline.bucket import BucketStore
from import_pipeline.config import CHUNK_ROWS_ENV, DEFAULT_CHUNK_ROWS, dagster_dir
from import_pipeline.csv_reader import read_csv_table
from import_pipeline.excel_reader import read_excel_table
from import_pipeline.formats import FileRejected, MiB, RawChunk, RawTable, detect_format, gunzip, text_encoding
from import_pipeline.garbled import GarbledValues, header_problem
from import_pipeline.landing import content_hash, find_landed_file, hash_of_key
from import_pipeline.mapping import MappingError, choose_profile, field_of, map_headers
from import_pipeline.parts import PartsWriter, step_output_dir
from import_pipeline.schema import CANONICAL_FIELDS, EXTRA_PREFIX, ROW_PROBLEM, SOURCE_ROW
from import_pipeline.state import StateFolder
from import_pipeline.summary import FileSummary


class ParseConfig(dg.Config):
    """Which file a run imports and how to read it; the sensor and `import-pipeline import` fill in the path."""

    source_path: str = Field(
        default="",
        description="Path of the file to import. Empty: the landing-folder file named by the partition key.",
    )
    encoding: str = Field(default="", description="Text encoding of a CSV, e.g. cp1252. Empty: detected.")
    sheet: str = Field(default="", description="Sheet of an XLSX/XLS workbook. Empty: the first sheet.")
    mapping_profile: str = Field(
        default="", description="Mapping profile name (import_pipeline/mapping_profiles). Empty: by file name."
    )
    max_file_mb: int = Field(default=2048, description="Larger files (or gzip contents) are rejected.")
    max_unzipped_mb: int = Field(default=1024, description="XLSX declaring more uncompressed bytes is rejected.")
    chunk_rows: int = Field(
        default=0,
        ge=0,
        description="Records read, validated and keyed at a time: memory follows the chunk, not the file. "
        f"0: ${CHUNK_ROWS_ENV} when set, else {DEFAULT_CHUNK_ROWS:,}.",
    )

    def rows_per_chunk(self) -> int:
        """`chunk_rows`, or the default read now (in the run's process), not when the code was imported."""
        return self.chunk_rows or int(os.environ.get(CHUNK_ROWS_ENV) or DEFAULT_CHUNK_ROWS)


def read_table(path: Path, config: ParseConfig, work_dir: Path) -> RawTable:
    """The file's cells as text, whatever its format."""
    size = path.stat().st_size
    if size > config.max_file_mb * MiB:
        raise FileRejected(f"the file is {size / MiB:.1f} MB, above the {config.max_file_mb} MB limit")
    fmt = detect_format(path)
    if fmt in ("xlsx", "xls"):
        return read_excel_table(path, fmt, config.sheet, config.max_unzipped_mb * MiB, config.rows_per_chunk())
    if fmt == "gzip":
        path = gunzip(path, work_dir, config.max_file_mb * MiB)
        if detect_format(path) != "csv":
            raise FileRejected("unsupported format: the compressed file is not a CSV")
    return read_csv_table(path, text_encoding(path, config.encoding), work_dir, config.rows_per_chunk())


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
    # One expression for all the columns, not one per column: building and planning 20,000 of them took 1.6 s a
    # chunk (1.0 s so) and was most of reading a 20,000-column file.
    cells = (
        chunk.cells.select(pl.col(list(named.values())).str.strip_chars().replace("", None))
        .rename({c: n for n, c in named.items()})
        .with_columns(pl.lit(None, pl.String).alias(f) for f in CANONICAL_FIELDS if f not in named)
    )
    problems = chunk.row_problems if chunk.row_problems is not None else pl.lit(None, pl.String)
    return (
        cells.select(
            chunk.source_rows.alias(SOURCE_ROW),
            *CANONICAL_FIELDS,
            pl.col(n for n in named if n.startswith(EXTRA_PREFIX)),
            problems.alias(ROW_PROBLEM),
        )
        # A record with no value is a blank line: dropped (a shape problem alone does not keep it).
        .filter(pl.any_horizontal(pl.exclude(SOURCE_ROW, ROW_PROBLEM).is_not_null()))
    )


def read_records(
    path: Path, config: ParseConfig, work_dir: Path, warnings: list[str] | None = None
) -> tuple[Iterator[pl.DataFrame], dict[str, str], dict]:
    """A lead file's records chunk by chunk (see `to_records`), the column each header became, and what was
    detected about the file. A file without records raises FileRejected once the chunks are consumed; what the
    user must know but does not stop the import (garbled values...) is added to `warnings` by then."""
    said = [] if warnings is None else warnings
    raw = read_table(path, config, work_dir)
    encoding = raw.details.get("encoding")
    try:
        profile = choose_profile(path.name, config.mapping_profile)
        garbled_headers = header_problem(raw.headers, encoding, lambda header: field_of(header, profile) is not None)
        if garbled_headers:
            raise FileRejected(garbled_headers)
        mapping = map_headers(raw.headers, profile)
    except MappingError as e:
        raise FileRejected(str(e)) from e
    names = column_names(raw.headers, mapping)
    said.extend(raw.warnings)
    garbled_values = GarbledValues(raw.headers, encoding)

    def records() -> Iterator[pl.DataFrame]:
        seen = 0
        for chunk in raw.chunks:
            garbled_values.check(chunk)
            frame = to_records(chunk, names)
            seen += frame.height
            yield frame
        if seen == 0:
            raise FileRejected("the file has a header but no records")
        said.extend(garbled_values.warnings())

    return (
        records(),
        {h: names[f"c{i}"] for i, h in enumerate(raw.headers)},
        raw.details | {"mapping_profile": profile.name if profile else None},
    )


def read_leads(
    path: Path, config: ParseConfig | None = None, work_dir: Path | None = None, warnings: list[str] | None = None
) -> tuple[pl.DataFrame, dict[str, str], dict]:
    """`read_records` in one frame: for tests and small files."""
    chunks, mapping, details = read_records(path, config or ParseConfig(), work_dir or path.parent, warnings)
    return pl.concat(list(chunks)), mapping, details


def source_file(
    landing: Path, bucket: BucketStore, partition: str, config: ParseConfig, work_dir: Path
) -> tuple[Path, str]:
    """The file a partition imports and its full content hash; fails if its bytes changed since it landed.

    Objects from a bucket are streamed to the run's work folder first; their ETag guards against change.
    """
    if config.source_path.startswith("s3://"):
        path = bucket.download(config.source_path, work_dir, config.max_file_mb * MiB)
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
    writer = PartsWriter(step_output_dir(state.home, context.run_id, str(context.op_handle)) / "records")
    said: list[str] = []
    try:
        chunks, mapping, details = read_records(path, config, work_dir, said)
        for chunk in chunks:
            writer.write(chunk)
    except FileRejected as e:
        reason = f"{path.name}: {e}"
        quarantined = state.quarantine(path, reason)
        metadata = {"source_file": str(path), "reason": reason}
        if quarantined:
            metadata["quarantined_to"] = str(quarantined)
        raise dg.Failure(description=reason, metadata=metadata) from e
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    records = writer.parts()
    warnings = tuple(f"{path.name}: {warning}" for warning in said)
    for warning in warnings:
        context.log.warning(warning)
    summary = FileSummary(
        partition_key=context.partition_key,
        source_file=source,
        content_hash=digest,
        mapping=mapping,
        rows_read=records.rows,
        seconds={"parse": time.perf_counter() - started},
        warnings=warnings,
    )
    context.add_output_metadata(
        {
            "rows_read": records.rows,
            "parts": len(records.paths),
            "source_file": dg.MetadataValue.path(source),
            "content_hash": digest,
            "column_mapping": dg.MetadataValue.json(mapping),
            "file": dg.MetadataValue.json(details),
            **({"warnings": dg.MetadataValue.json(list(warnings))} if warnings else {}),
        },
        output_name="records",
    )
    yield dg.Output(records, "records")
    yield dg.Output(summary, "summary")
