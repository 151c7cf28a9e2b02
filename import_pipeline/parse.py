"""Parse: any common lead file read as text, headers mapped to lead fields, records numbered as a person sees them.

CSV in any of the usual dialects and encodings, gzip-compressed CSV, XLSX and XLS; the format is
decided from the content, not the extension.
"""

import codecs
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field, field_validator

from import_pipeline.bucket import BucketStore
from import_pipeline.config import CHUNK_ROWS_ENV, DEFAULT_CHUNK_ROWS, dagster_dir
from import_pipeline.csv_reader import read_csv_table
from import_pipeline.excel_reader import read_excel_table, sheet_names
from import_pipeline.formats import FileRejected, MiB, RawChunk, RawTable, detect_format, gunzip, text_encoding
from import_pipeline.garbled import GarbledValues, header_problem
from import_pipeline.landing import (
    content_hash,
    find_landed_file,
    hash_of_key,
    is_landed_key,
    named_landed_file,
    sheet_matches_key,
    sheet_of_key,
)
from import_pipeline.mapping import MappingError, choose_profile, field_of, map_headers, profiles
from import_pipeline.parts import PartsWriter, step_output_dir
from import_pipeline.schema import (
    CANONICAL_FIELDS,
    EXTRA_PREFIX,
    ORIGIN_IMPORT,
    ORIGIN_ROW,
    REPORT_IMPORT,
    REPORT_LINE,
    REPORT_PROBLEMS,
    ROW_PROBLEM,
    SOURCE_ROW,
)
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
    max_file_mb: int = Field(default=2048, ge=1, description="Larger files (or gzip contents) are rejected.")
    max_unzipped_mb: int = Field(default=1024, ge=1, description="XLSX declaring more uncompressed bytes is rejected.")
    chunk_rows: int = Field(
        default=0,
        ge=0,
        description="Records read, validated and keyed at a time: memory follows the chunk, not the file. "
        f"0: ${CHUNK_ROWS_ENV} when set, else {DEFAULT_CHUNK_ROWS:,}.",
    )

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, encoding: str) -> str:
        try:
            return codecs.lookup(encoding).name if encoding else ""
        except LookupError:
            raise ValueError("not an encoding Python knows; e.g. cp1252, latin-1, utf-16, utf-8") from None

    @field_validator("mapping_profile")
    @classmethod
    def _known_profile(cls, name: str) -> str:
        names = [p.name for p in profiles()]
        if name and name not in names:
            raise ValueError(f"no mapping profile of that name; available: {names}")
        return name

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


# What a corrected reject report's own columns become: the record's origin, or nothing.
_REPORT_ORIGINS = {REPORT_LINE: ORIGIN_ROW, REPORT_IMPORT: ORIGIN_IMPORT, REPORT_PROBLEMS: None}
_ORIGINS = (ORIGIN_IMPORT, ORIGIN_ROW)


def column_names(headers: list[str], mapping: dict[str, str]) -> dict[str, str]:
    """The column each source header becomes: its lead field, else `extra.<header>` (made unique); a reject
    report's own columns become the record's origin (`ORIGIN_IMPORT`, `ORIGIN_ROW`) or are dropped."""
    names, used = {}, set()
    for i, header in enumerate(headers):
        if header in _REPORT_ORIGINS:
            if origin := _REPORT_ORIGINS[header]:
                names[f"c{i}"] = origin
            continue
        name = mapping.get(header) or EXTRA_PREFIX + header
        while name in used:  # two unmapped columns with the same header
            name += "'"
        used.add(name)
        names[f"c{i}"] = name
    return names


# The reject report quotes cells a spreadsheet would run as formulas (report.neutralise); a corrected report's
# values get their own text back (`'+1 555 0100` is the phone `+1 555 0100`).
_NEUTRALISED = r"^'([=+\-@\t\r])"


def to_records(chunk: RawChunk, names: dict[str, str]) -> pl.DataFrame:
    """Records with canonical columns, `extra.<header>` columns and their source row; blank records dropped.

    Records of a corrected reject report also carry the import and line they were rejected in."""
    named = {names[c]: c for c in chunk.cells.columns if c in names}
    resubmitted = any(n in _ORIGINS for n in named)
    fields = {n: c for n, c in named.items() if n not in _ORIGINS}
    # One expression for all the columns, not one per column: building and planning 20,000 of them took 1.6 s a
    # chunk (1.0 s so) and was most of reading a 20,000-column file.
    text = pl.col(list(fields.values())).str.strip_chars().replace("", None)
    cells = (
        chunk.cells.select(text.str.replace(_NEUTRALISED, "${1}") if resubmitted else text)
        .rename({c: n for n, c in fields.items()})
        .with_columns(pl.lit(None, pl.String).alias(f) for f in CANONICAL_FIELDS if f not in fields)
    )
    if resubmitted:
        cells = cells.hstack(
            chunk.cells.select(
                (pl.col(named[ORIGIN_IMPORT]).str.strip_chars() if ORIGIN_IMPORT in named else pl.lit(None, pl.String))
                .replace("", None)
                .alias(ORIGIN_IMPORT),
                (
                    pl.col(named[ORIGIN_ROW]).str.strip_chars().cast(pl.Int64, strict=False)
                    if ORIGIN_ROW in named
                    else pl.lit(None, pl.Int64)
                ).alias(ORIGIN_ROW),
            )
        )
    problems = chunk.row_problems if chunk.row_problems is not None else pl.lit(None, pl.String)
    return (
        cells.select(
            chunk.source_rows.alias(SOURCE_ROW),
            *CANONICAL_FIELDS,
            pl.col(n for n in fields if n.startswith(EXTRA_PREFIX)),
            problems.alias(ROW_PROBLEM),
            *(_ORIGINS if resubmitted else ()),
        )
        # A record with no value is a blank line: dropped (a shape problem alone does not keep it).
        .filter(pl.any_horizontal(pl.exclude(SOURCE_ROW, ROW_PROBLEM, *_ORIGINS).is_not_null()))
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
        mapping = map_headers([h for h in raw.headers if h not in _REPORT_ORIGINS], profile)
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
        {h: names[f"c{i}"] for i, h in enumerate(raw.headers) if h not in _REPORT_ORIGINS},
        raw.details
        | {"mapping_profile": profile.name if profile else None, "review": bool(profile and profile.review)},
    )


def read_leads(
    path: Path, config: ParseConfig | None = None, work_dir: Path | None = None, warnings: list[str] | None = None
) -> tuple[pl.DataFrame, dict[str, str], dict]:
    """`read_records` in one frame: for tests and small files."""
    chunks, mapping, details = read_records(path, config or ParseConfig(), work_dir or path.parent, warnings)
    return pl.concat(list(chunks)), mapping, details


def _refuse_outside(where: str, state: StateFolder, bucket: BucketStore) -> dg.Failure:
    return dg.Failure(
        description=f"{where} is outside the landing folder {state.landing_path} and the bucket "
        f"({bucket.location()}): runs import only files from those. Copy the file into the landing folder, "
        "or import it on the server with `import-pipeline import PATH`.",
        allow_retries=False,
    )


def earlier_source(instance: dg.DagsterInstance, partition: str) -> str:
    """The `source_path` the newest earlier run of `partition` was given (the bucket sensor's object, the CLI's
    file), so that a run launched later without one (an approval, an import again) reads the same source."""
    for run in instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": partition}), limit=50):
        config: Any = run.run_config
        ops = (config.get("ops") or {}) if isinstance(config, Mapping) else {}
        steps = (ops.get("leads") or {}).get("ops") or ops  # the asset's nested form, or an op job's
        source = ((steps.get("parse") or {}).get("config") or {}).get("source_path")
        if source:
            return str(source)
    return ""


def _source_path(
    state: StateFolder, bucket: BucketStore, partition: str, config: ParseConfig, earlier: Callable[[], str]
) -> str:
    """The file or object a run imports: its config's `source_path`, else the one its partition names (or, for a
    landed key whose file is in neither the landing folder nor processed/, the one an earlier run was given)."""
    named = config.source_path or ("" if is_landed_key(partition) else partition)
    if not named:
        try:
            return str(find_landed_file(state.landing_path, partition, state.processed_path))
        except dg.Failure:
            named = earlier()  # looked up only here: the file is usually in the landing folder
            if not named:
                raise
    if named.startswith("s3://"):
        if not bucket.holds(named):
            raise _refuse_outside(named, state, bucket)
        return named
    if config.source_path or is_landed_key(partition):  # a path given in config, now or to an earlier run
        if not state.may_read(Path(named)):
            raise _refuse_outside(named, state, bucket)
        return str(Path(named).resolve())
    return str(named_landed_file(state.landing_path, named))


def source_file(
    state: StateFolder,
    bucket: BucketStore,
    partition: str,
    config: ParseConfig,
    work_dir: Path,
    earlier: Callable[[], str] = str,
) -> tuple[str, Path, str]:
    """The file a partition imports (as named, local path, full content hash); fails if its bytes changed since
    it landed, or if it lies outside the landing folder and the bucket.

    Objects from a bucket are streamed to the run's work folder first; their ETag guards against change.
    A partition typed in the UI (a file name, not `<name>@<hash>`) imports whatever that file holds now.
    """
    named = _source_path(state, bucket, partition, config, earlier)
    if named.startswith("s3://"):
        path = bucket.download(named, work_dir, config.max_file_mb * MiB)
        return named.partition("#")[0], path, content_hash(path)
    path = Path(named)
    if not path.is_file():
        raise dg.Failure(description=f"{path}: no such file", allow_retries=False)
    digest = content_hash(path)
    if is_landed_key(partition) and hash_of_key(partition) != digest[: len(hash_of_key(partition))]:
        raise dg.Failure(
            description=f"{path.name}: its content changed since it landed as {partition!r}; "
            "the new content lands as a new partition",
            allow_retries=False,
        )
    return named, path, digest


def sheet_for_partition(path: Path, key: str, configured: str) -> str:
    """The sheet a workbook's partition imports: the one its key names, else the configured one or the first."""
    if not (configured or sheet_of_key(key)) or detect_format(path) not in ("xlsx", "xls"):
        return configured
    names = sheet_names(path)
    if not sheet_of_key(key):
        if configured and names and configured != names[0]:
            raise FileRejected(
                f"partition {key!r} is the workbook's first sheet ({names[0]!r}), not {configured!r}: "
                "import that sheet as its own partition (`import-pipeline import FILE` with `sheet` in run config)"
            )
        return configured
    named = [n for n in names if sheet_matches_key(n, key)]
    if configured and configured not in named:
        raise FileRejected(f"partition {key!r} is the sheet {sheet_of_key(key)!r}, but run config names {configured!r}")
    if not named:
        raise FileRejected(
            f"no sheet matches {sheet_of_key(key)!r}, the sheet of partition {key!r}; the workbook has {names}"
        )
    return configured or named[0]


@dg.op(ins={"checked": dg.In(dg.Nothing)}, out={"records": dg.Out(), "summary": dg.Out()})
def parse(context: dg.OpExecutionContext, config: ParseConfig, state: StateFolder, bucket: BucketStore):
    """Read the partition's file into text columns mapped to the canonical lead fields."""
    started = time.perf_counter()
    work_dir = dagster_dir(Path(state.home).resolve()) / "storage" / context.run_id / "work"
    # The object's URI, not the temporary local copy, is what history and provenance name.
    source, path, digest = source_file(
        state,
        bucket,
        context.partition_key,
        config,
        work_dir,
        lambda: earlier_source(context.instance, context.partition_key),
    )
    outputs = step_output_dir(state.home, context.run_id, str(context.op_handle))
    writer, origins = PartsWriter(outputs / "records"), PartsWriter(outputs / "origins")
    said: list[str] = []
    try:
        config = config.model_copy(update={"sheet": sheet_for_partition(path, context.partition_key, config.sheet)})
        chunks, mapping, details = read_records(path, config, work_dir, said)
        for chunk in chunks:
            if ORIGIN_ROW in chunk.columns:
                origins.write(chunk.select(SOURCE_ROW, *_ORIGINS))
                chunk = chunk.drop(_ORIGINS)
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
        sheet=details.get("sheet") or "",
        origins=origins.parts().paths if origins.rows else (),
        warnings=warnings,
        review=bool(details.get("review")),
    )
    context.add_output_metadata(
        {
            "rows_read": records.rows,
            "parts": len(records.paths),
            "source_file": dg.MetadataValue.path(source),
            "content_hash": digest,
            "column_mapping": dg.MetadataValue.json(mapping),
            **({"resubmitted_rows": origins.rows} if origins.rows else {}),
            "file": dg.MetadataValue.json(details),
            **({"warnings": dg.MetadataValue.json(list(warnings))} if warnings else {}),
        },
        output_name="records",
    )
    yield dg.Output(records, "records")
    yield dg.Output(summary, "summary")
