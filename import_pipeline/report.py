"""Reject report: one CSV per import with every rejected row and its reasons, safe to open in a spreadsheet, and
ready to be corrected and dropped back into the landing folder."""

from pathlib import Path
from typing import BinaryIO

import dagster as dg
import polars as pl

from import_pipeline.schema import REPORT_IMPORT, REPORT_LINE, REPORT_PROBLEMS, SOURCE_ROW

REASON = pl.Struct({"column": pl.String, "problem": pl.String})
# Spreadsheets run a cell starting with one of these as a formula.
FORMULA_START = r"^[=+\-@\t\r]"


def reasons_by_line(rejected: pl.LazyFrame) -> pl.LazyFrame:
    """One row per (line, reason): `line`, `column`, `problem`."""
    return (
        rejected.select(pl.col(SOURCE_ROW).alias("line"), pl.col("reasons").str.json_decode(pl.List(REASON)))
        .explode("reasons")
        .unnest("reasons")
    )


def top_reasons(rejected: pl.LazyFrame, limit: int = 10) -> pl.DataFrame:
    """The most frequent problems with their counts."""
    return (
        reasons_by_line(rejected.lazy())
        .group_by("problem")
        .len("rows")
        .sort(["rows", "problem"], descending=[True, False])
        .head(limit)
        .collect()
    )


def top_reasons_markdown(reasons: pl.DataFrame) -> str:
    """`top_reasons` as a markdown table for run metadata."""
    lines = ["| problem | rows |", "| --- | ---: |"]
    lines += [f"| {problem} | {rows:,} |" for problem, rows in reasons.iter_rows()]
    return "\n".join(lines)


def neutralise(value: pl.Expr) -> pl.Expr:
    """Prefix a quote to cells a spreadsheet would run as a formula."""
    return pl.when(value.str.contains(FORMULA_START)).then(pl.lit("'") + value).otherwise(value)


def report_rows(rejected: pl.DataFrame, headers: list[str], partition_key: str) -> pl.DataFrame:
    """One row per rejected line: the line, every reason, the row's raw values under the user's own headers, and
    the import it was rejected in (so a corrected copy can be imported and linked back)."""
    raw_type = pl.Struct({h: pl.String for h in headers})
    raw = rejected.select(
        pl.col(SOURCE_ROW).alias(REPORT_LINE), pl.col("raw_values").str.json_decode(raw_type).alias("raw")
    ).unnest("raw")
    why = (
        reasons_by_line(rejected.lazy())
        .group_by("line", maintain_order=True)
        .agg(pl.col("problem").str.join("; ").alias(REPORT_PROBLEMS))
        .rename({"line": REPORT_LINE})
        .collect()
    )
    report = (
        raw.join(why, on=REPORT_LINE, how="left", maintain_order="left")
        .select(REPORT_LINE, REPORT_PROBLEMS, *raw.columns[1:])
        .with_columns(pl.lit(partition_key).alias(REPORT_IMPORT))
        .sort(REPORT_LINE, maintain_order=True)
    )
    return report.with_columns(
        neutralise(pl.col(c)).alias(c) for c, t in report.schema.items() if t == pl.String and c != REPORT_IMPORT
    )


SAMPLE_ROWS, SAMPLE_COLUMNS = 20, 10


def rejected_sample(rejected: pl.LazyFrame, headers: list[str]) -> tuple[dict[str, str], ...]:
    """The first rejected lines as the report shows them (line, why, the first few of the file's columns)."""
    first = rejected.sort(SOURCE_ROW).head(SAMPLE_ROWS).collect()
    if first.height == 0:
        return ()
    rows = report_rows(first, headers, "").drop(REPORT_IMPORT).select(pl.all().cast(pl.String).fill_null(""))
    return tuple(rows.select(rows.columns[: 2 + SAMPLE_COLUMNS]).iter_rows(named=True))


def sample_table(sample: tuple[dict[str, str], ...]) -> dg.TableMetadataValue:
    """`rejected_sample` as a table the Dagster UI shows."""
    columns = list(sample[0]) if sample else [REPORT_LINE, REPORT_PROBLEMS]
    return dg.MetadataValue.table(
        records=[dg.TableRecord(row) for row in sample],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns]),
    )


class RejectReport:
    """The reject report of one import, written chunk by chunk; no file when no row is rejected."""

    def __init__(self, path: Path, headers: list[str], partition_key: str):
        self.path, self.headers, self.partition_key = path, headers, partition_key
        self._file: BinaryIO | None = None

    def write(self, rejected: pl.DataFrame) -> None:
        if rejected.height == 0:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("wb")
            # The byte-order mark makes Excel read the file as UTF-8: accents survive a double-click.
            report_rows(rejected, self.headers, self.partition_key).write_csv(self._file, include_bom=True)
        else:
            report_rows(rejected, self.headers, self.partition_key).write_csv(self._file, include_header=False)

    def __enter__(self) -> "RejectReport":
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()
