"""Validate: a pandera model of a lead; rows that fail it are set aside with every reason, in plain words."""

import time
from pathlib import Path
from typing import Optional

import dagster as dg
import pandera.polars as pa
import polars as pl
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from import_pipeline.config import ValidateConfig
from import_pipeline.phones import e164
from import_pipeline.report import RejectReport, top_reasons, top_reasons_markdown
from import_pipeline.parts import Parts, PartsWriter, step_output_dir
from import_pipeline.state import StateFolder
from import_pipeline.schema import CANONICAL_FIELDS, DEFAULT_MAX_LENGTH, MAX_LENGTH, PHONE_E164, ROW_PROBLEM, SOURCE_ROW
from import_pipeline.summary import FileSummary

# Plain ASCII addresses that email-validator certainly accepts; anything else is asked of the library.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
FAST_EMAIL = rf"^{_ATOM}(\.{_ATOM})*@([A-Za-z0-9]([A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+[A-Za-z]{{2,63}}$"
CONTACT_FIELDS = ("email", "phone", "external_id")
_DEFAULT_LENGTH_FIELDS = tuple(f for f in CANONICAL_FIELDS if MAX_LENGTH[f] == DEFAULT_MAX_LENGTH)
NUL_SHOWN_AS = "\u2400"  # PostgreSQL text and jsonb cannot hold NUL, so rejects show it as ␀


def _fast_email(email: pl.Expr) -> pl.Expr:
    tld = email.str.extract(r"\.([A-Za-z]+)$").str.to_lowercase()
    return email.str.contains(FAST_EMAIL) & email.str.len_bytes().le(254) & ~tld.is_in(SPECIAL_USE_DOMAIN_NAMES)


def _library_accepts(address: str) -> bool:
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def valid_email(frame: pl.LazyFrame, email: pl.Expr) -> pl.Expr:
    """Email syntax as email-validator judges it (no deliverability); the library sees each odd value once."""
    odd = frame.select(email.filter(email.is_not_null() & ~_fast_email(email)).unique()).collect().to_series()
    accepted = [address for address in odd.to_list() if _library_accepts(address)]
    return email.is_null() | _fast_email(email) | email.is_in(pl.Series(accepted, dtype=pl.String).implode())


def normalized_phone(phone: pl.Expr, frame: pl.DataFrame, region: str) -> pl.Expr:
    """E.164 for phones that phonenumbers finds valid (default region for local numbers), else null."""
    return pl.lit(e164(frame.select(phone).to_series(), region))


def bare_host_url(website: pl.Expr) -> pl.Expr:
    """`https://www.Acme.com/about?x` -> `https://www.acme.com`; no scheme means https; no host means null."""
    parts = website.str.strip_chars().str.extract_groups(r"^(?:([A-Za-z][A-Za-z0-9+.-]*)://)?([^/?#:\s@]+\.[^/?#:\s@]+)(:\d+)?")
    scheme = parts.struct.field("1").str.to_lowercase().fill_null("https")
    host = parts.struct.field("2").str.to_lowercase()
    return pl.when(host.is_not_null()).then(pl.concat_str(scheme, pl.lit("://"), host, parts.struct.field("3").fill_null("")))


def _within_length(data: pa.PolarsData, limit: int) -> pl.LazyFrame:
    return data.lazyframe.select(pl.col(data.key).str.len_chars().fill_null(0) <= limit)


class LeadModel(pa.DataFrameModel):
    """What a lead must look like to be loaded; every field is text, blanks already null."""

    company_name: str = pa.Field(nullable=False)
    first_name: Optional[str] = pa.Field(nullable=True)
    last_name: Optional[str] = pa.Field(nullable=True)
    email: Optional[str] = pa.Field(nullable=True)
    phone: Optional[str] = pa.Field(nullable=True)
    title: Optional[str] = pa.Field(nullable=True)
    industry: Optional[str] = pa.Field(nullable=True)
    company_website: Optional[str] = pa.Field(nullable=True)
    city: Optional[str] = pa.Field(nullable=True)
    state: Optional[str] = pa.Field(nullable=True)
    country: Optional[str] = pa.Field(nullable=True)
    external_id: Optional[str] = pa.Field(nullable=True)
    notes: Optional[str] = pa.Field(nullable=True)

    @pa.check("email", name="email_syntax", error="is not a valid email address")
    def email_syntax(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(valid_email(data.lazyframe, pl.col(data.key)))

    @pa.check(*_DEFAULT_LENGTH_FIELDS, name="max_length", error=f"is longer than {DEFAULT_MAX_LENGTH} characters")
    def default_length(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return _within_length(data, DEFAULT_MAX_LENGTH)

    @pa.check("email", name="max_length", error=f"is longer than {MAX_LENGTH['email']} characters")
    def email_length(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return _within_length(data, MAX_LENGTH["email"])

    @pa.check("notes", name="max_length", error=f"is longer than {MAX_LENGTH['notes']} characters")
    def notes_length(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return _within_length(data, MAX_LENGTH["notes"])

    @pa.check(*CANONICAL_FIELDS, name="no_nul", error="contains a NUL byte")
    def no_nul(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(~pl.col(data.key).str.contains("\x00", literal=True).fill_null(False))

    @pa.dataframe_check(name="has_contact", error="has no email, phone or external_id")
    def has_contact(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.any_horizontal(pl.col(CONTACT_FIELDS).is_not_null()))

    class Config:
        strict = False  # source_row and extra.* columns ride along


def _problem(column: pl.Expr, check: pl.Expr) -> pl.Expr:
    """pandera's check label turned into a sentence about the column."""
    message = pl.when(check == "not_nullable").then(pl.lit("is required")).otherwise(check)
    return pl.concat_str(pl.when(column.is_in(CANONICAL_FIELDS)).then(column + " ").otherwise(pl.lit("row ")), message)


def split_valid(records: pl.DataFrame, mapping: dict[str, str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(valid records, rejected rows) where rejected rows carry their raw values and every reason as JSON."""
    shape_problems = (
        records.with_row_index("index")
        .filter(pl.col(ROW_PROBLEM).is_not_null())
        .select("index", pl.lit(None, pl.String).alias("column"), pl.col(ROW_PROBLEM).alias("problem"))
        if ROW_PROBLEM in records.columns
        else pl.DataFrame(schema={"index": pl.UInt32, "column": pl.String, "problem": pl.String})
    )
    records = records.drop(ROW_PROBLEM, strict=False)
    try:
        LeadModel.validate(records, lazy=True)
        failures = pl.DataFrame(schema={"index": pl.Int32, "column": pl.String, "check": pl.String})
    except pa.errors.SchemaErrors as e:
        failures = e.failure_cases
    if failures.height == 0 and shape_problems.height == 0:
        return records, pl.DataFrame(schema={SOURCE_ROW: pl.Int64, "raw_values": pl.String, "reasons": pl.String})
    checks = failures.filter(pl.col("index").is_not_null()).select(
        pl.col("index").cast(pl.UInt32),
        pl.when(pl.col("column").is_in(CANONICAL_FIELDS)).then(pl.col("column")).alias("column"),
        _problem(pl.col("column"), pl.col("check")).alias("problem"),
    )
    reasons = (
        pl.concat([shape_problems.with_columns(pl.col("index").cast(pl.UInt32)), checks])
        .select("index", pl.struct("column", "problem").alias("reason"))
        .group_by("index")
        .agg(pl.col("reason").sort_by(pl.col("reason").struct.field("column")))
        .select("index", pl.col("reason").list.eval(pl.element().struct.json_encode()).list.join(",").alias("reasons"))
    )
    indexed = records.with_row_index("index")
    valid = indexed.join(reasons, on="index", how="anti").drop("index")
    source_headers = {column: header for header, column in mapping.items()}
    rejected = (
        indexed.join(reasons, on="index", how="inner")
        .sort(SOURCE_ROW)
        .select(
            SOURCE_ROW,
            pl.struct(
                pl.col(c).str.replace_all("\x00", NUL_SHOWN_AS, literal=True).alias(h)
                for c, h in source_headers.items()
            )
            .struct.json_encode()
            .alias("raw_values"),
            pl.concat_str(pl.lit("["), pl.col("reasons"), pl.lit("]")).alias("reasons"),
        )
    )
    return valid, rejected


def _too_many_invalid(name: str, rejected: Parts, reasons: pl.DataFrame, rows: int, config: ValidateConfig) -> str | None:
    """Why the whole import must stop, or None."""
    counts = "; ".join(f"{problem}: {n:,}" for problem, n in reasons.iter_rows())
    if config.mode == "strict" and rejected.rows:
        return f"{name}: strict mode and {rejected.rows:,} of {rows:,} rows are invalid: {counts}"
    rate = rejected.rows / rows if rows else 0.0
    if rate > config.max_error_rate:
        return (
            f"{name}: {rejected.rows:,} of {rows:,} rows are invalid ({rate:.1%} > {config.max_error_rate:.1%} allowed): "
            f"{counts}"
        )
    return None


def normalized(valid: pl.DataFrame, region: str) -> pl.DataFrame:
    """Valid records with their E.164 phone and the website reduced to its scheme and host."""
    return valid.with_columns(
        normalized_phone(pl.col("phone"), valid, region).alias(PHONE_E164),
        bare_host_url(pl.col("company_website")).alias("company_website"),
    )


@dg.op(out={"valid": dg.Out(), "rejected": dg.Out(), "summary": dg.Out()})
def validate(context: dg.OpExecutionContext, config: ValidateConfig, state: StateFolder, records: Parts, summary: FileSummary):
    """Split records into valid leads and rejected rows, with a report of every rejected row."""
    started = time.perf_counter()
    outputs = step_output_dir(state.home, context.run_id, str(context.op_handle))
    valid, rejected = PartsWriter(outputs / "valid"), PartsWriter(outputs / "rejected")
    report_path = state.reports_path / f"{summary.partition_key}.rejects.csv"
    with RejectReport(report_path, list(summary.mapping)) as report:
        for chunk in records.frames():
            valid_rows, rejected_rows = split_valid(chunk, summary.mapping)
            rejected.write(rejected_rows)
            report.write(rejected_rows)
            valid.write(normalized(valid_rows, config.phone_region))
    valid, rejected = valid.parts(), rejected.parts()
    reasons = top_reasons(rejected.scan())
    metadata = {"rows_rejected": rejected.rows}
    if rejected.rows:
        metadata |= {"reject_report": dg.MetadataValue.path(str(report_path)), "top_reasons": dg.MetadataValue.md(top_reasons_markdown(reasons))}
    stop = _too_many_invalid(Path(summary.source_file).name, rejected, reasons, summary.rows_read, config)
    if stop:
        raise dg.Failure(description=stop + "; nothing was loaded", metadata=metadata)
    summary = summary.after("validate", started, rows_valid=valid.rows, rows_rejected=rejected.rows)
    context.add_output_metadata({"rows_valid": valid.rows}, output_name="valid")
    context.add_output_metadata(metadata, output_name="rejected")
    yield dg.Output(valid, "valid")
    yield dg.Output(rejected, "rejected")
    yield dg.Output(summary, "summary")
