"""Validate: a pandera model of a lead; rows that fail it are set aside with every reason, in plain words."""

import math
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pandera.polars as pa
import phonenumbers
import polars as pl
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from pandera.api.polars.types import PolarsData
from pandera.backends.polars.checks import PolarsCheckBackend
from pandera.constants import CHECK_OUTPUT_KEY
from pydantic import Field, field_validator

from import_pipeline.parts import Parts, PartsWriter, step_output_dir
from import_pipeline.phones import e164
from import_pipeline.report import RejectReport, rejected_sample, sample_table, top_reasons, top_reasons_markdown
from import_pipeline.schema import CANONICAL_FIELDS, DEFAULT_MAX_LENGTH, MAX_LENGTH, PHONE_E164, ROW_PROBLEM, SOURCE_ROW
from import_pipeline.state import StateFolder
from import_pipeline.summary import FileSummary

# Plain ASCII addresses that email-validator certainly accepts; anything else is asked of the library.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
FAST_EMAIL = rf"^{_ATOM}(\.{_ATOM})*@([A-Za-z0-9]([A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+[A-Za-z]{{2,63}}$"
CONTACT_FIELDS = ("email", "phone", "external_id")
_DEFAULT_LENGTH_FIELDS = tuple(f for f in CANONICAL_FIELDS if MAX_LENGTH[f] == DEFAULT_MAX_LENGTH)
NUL_SHOWN_AS = "\u2400"  # PostgreSQL text and jsonb cannot hold NUL, so rejects show it as ␀


# A special-use top-level domain (`.test`, `.local`...), as email-validator refuses it: the same as extracting the
# last label and looking it up, 4x cheaper (0.6 ms a chunk of 25,000 instead of 2.8).
_SPECIAL_USE_TLD = r"(?i-u)\.(?:" + "|".join(SPECIAL_USE_DOMAIN_NAMES) + r")$"


class ValidateConfig(dg.Config):
    """How strict an import is about invalid rows."""

    mode: Literal["lenient", "strict"] = Field(
        default="lenient", description="lenient: invalid rows are set aside; strict: any invalid row fails the import."
    )
    max_error_rate: float = Field(
        default=0.10,
        ge=0.0,
        le=1.0,
        description="Nothing is loaded and the run fails when the file shows more than this share of invalid rows "
        "beyond chance (the lower end of the 95% Wilson interval): a few bad rows in a small file are set aside.",
    )
    phone_region: str = Field(default="US", description="Region of phone numbers written without a country code.")

    @field_validator("phone_region")
    @classmethod
    def _known_region(cls, region: str) -> str:
        if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError("not a region phonenumbers knows; use a two-letter code such as US, GB, FR or DE")
        return region.upper()


def _fast_email(email: pl.Expr) -> pl.Expr:
    return email.str.contains(FAST_EMAIL) & email.str.len_bytes().le(254) & ~email.str.contains(_SPECIAL_USE_TLD)


def _library_accepts(address: str) -> bool:
    return _email_problem(address) is None


def _email_problem(address: str) -> str | None:
    """Why email-validator refuses the address (its own words), or None when it accepts it."""
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError as e:
        return str(e).rstrip(".")  # one sentence in a list of reasons: `...: n` and `; ` follow it
    return None


_EMAIL_SYNTAX = "is not a valid email address"


def _specific_email_problems(checks: pl.DataFrame, records: pl.DataFrame) -> pl.DataFrame:
    """Each email refused by the syntax check with email-validator's reason: `email is not valid: <why>`."""
    refused = checks.filter(pl.col("problem") == f"email {_EMAIL_SYNTAX}")
    if refused.height == 0 or "email" not in records.columns:
        return checks
    emails = records.select(pl.col("email").gather(refused["index"])).to_series()
    why = {address: _email_problem(address) for address in emails.unique().drop_nulls().to_list()}
    specific = [
        f"email is not valid: {why[address]}" if why.get(address) else f"email {_EMAIL_SYNTAX}"
        for address in emails.to_list()
    ]
    return checks.with_columns(
        pl.when(pl.col("problem") == f"email {_EMAIL_SYNTAX}")
        .then(pl.col("index").replace_strict(refused["index"], specific, default=None, return_dtype=pl.String))
        .otherwise(pl.col("problem"))
        .alias("problem")
    )


def valid_email(frame: pl.LazyFrame, email: pl.Expr) -> pl.Expr:
    """Email syntax as email-validator judges it (no deliverability); the library sees each odd value once."""
    # Decided in one pass, the fast pattern once rather than twice (8.6 ms -> 3.8 ms a chunk of 25,000).
    checked = frame.select(email.alias("email"), (email.is_null() | _fast_email(email)).alias("fast")).collect(
        engine="in-memory"
    )
    # Without an @ the library always refuses an address ("must have an @-sign"): the benchmark's 9,925 invalid
    # addresses, each one different, cost 0.1 s of library calls per 1M rows.
    odd = checked.filter(~pl.col("fast") & pl.col("email").str.contains("@", literal=True))["email"].unique()
    accepted = pl.Series([address for address in odd.to_list() if _library_accepts(address)], dtype=pl.String)
    return pl.lit(checked["fast"] | checked["email"].is_in(accepted.implode()))


def normalized_phone(phone: pl.Expr, frame: pl.DataFrame, region: str) -> pl.Expr:
    """E.164 for phones that phonenumbers finds valid (default region for local numbers), else null."""
    return pl.lit(e164(frame.select(phone).to_series(), region))


def bare_host_url(website: pl.Expr) -> pl.Expr:
    """`https://www.Acme.com/about?x` -> `https://www.acme.com`; no scheme means https; no host means null."""
    parts = website.str.strip_chars().str.extract_groups(
        r"^(?:([A-Za-z][A-Za-z0-9+.-]*)://)?([^/?#:\s@]+\.[^/?#:\s@]+)(:\d+)?"
    )
    scheme = parts.struct.field("1").str.to_lowercase().fill_null("https")
    host = parts.struct.field("2").str.to_lowercase()
    return pl.when(host.is_not_null()).then(
        pl.concat_str(scheme, pl.lit("://"), host, parts.struct.field("3").fill_null(""))
    )


def _within_length(data: pa.PolarsData, limit: int) -> pl.LazyFrame:
    return data.lazyframe.select(pl.col(data.key).str.len_chars().fill_null(0) <= limit)


class LeadModel(pa.DataFrameModel):
    """What a lead must look like to be loaded; every field is text, blanks already null."""

    company_name: str = pa.Field(nullable=False)
    first_name: str | None = pa.Field(nullable=True)
    last_name: str | None = pa.Field(nullable=True)
    email: str | None = pa.Field(nullable=True)
    phone: str | None = pa.Field(nullable=True)
    title: str | None = pa.Field(nullable=True)
    industry: str | None = pa.Field(nullable=True)
    company_website: str | None = pa.Field(nullable=True)
    city: str | None = pa.Field(nullable=True)
    state: str | None = pa.Field(nullable=True)
    country: str | None = pa.Field(nullable=True)
    external_id: str | None = pa.Field(nullable=True)
    notes: str | None = pa.Field(nullable=True)

    @pa.check("email", name="email_syntax", error=_EMAIL_SYNTAX)
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


@contextmanager
def _in_memory_engine():
    """polars' in-memory engine for the queries pandera collects."""
    # The default engine ("auto") picks the streaming one, slower on chunk-sized frames: LeadModel.validate of
    # 25,000 rows took 92 ms, 57 ms with the in-memory engine.
    with pl.Config(set_engine_affinity="in-memory"):
        yield


def _model_checks(schema: pa.DataFrameSchema) -> list[tuple[str | None, pa.Check | None]]:
    """The checks of `schema` that can reject a row: (column, check), None for `not_nullable`, column None for frame checks."""
    # What else pandera can do to a row (coerce, defaults, uniqueness...) has no twin in `suspects`: refuse it.
    # Its dtype checks name no row, so they reject none.
    assert not (schema.unique or schema.coerce or schema.add_missing_columns or schema.drop_invalid_rows), "unscreened"
    checks = []
    for name, column in schema.columns.items():
        assert not (column.unique or column.regex or column.coerce or column.default is not None), f"{name}: unscreened"
        assert column.dtype is None or str(column.dtype) == "String", f"{name}: not_nullable differs for floats"
        if not column.nullable:
            checks.append((name, None))
        checks.extend((name, check) for check in column.checks)
    assert not any(getattr(check, "raise_warning", False) for _, check in checks), "unscreened"
    return checks + [(None, check) for check in schema.checks]


_MODEL_CHECKS = _model_checks(LeadModel.to_schema())


def suspects(records: pl.DataFrame) -> pl.Series:
    """Which records LeadModel rejects or have a shape problem: the model's own checks, in one polars query."""
    # A LeadModel.validate call costs 27 ms even for 50 rows (57 ms for 25,000), these checks 16 ms for 25,000:
    # pandera only sees the suspects (`rejected_rows`).
    frame = records.drop(ROW_PROBLEM, strict=False).lazy()
    present = set(frame.collect_schema().names())
    outcomes: list[pl.LazyFrame] = []
    for column, check in _MODEL_CHECKS:
        if column is not None and column not in present:
            continue  # pandera reports a missing column without naming any row
        if check is None:
            assert column is not None, "only columns can be required"
            passed = frame.select(pl.col(column).is_not_null())
        else:
            passed = PolarsCheckBackend(check).apply(PolarsData(frame, column or "*"))
            if isinstance(passed, bool):
                continue  # a check answering for the whole frame names no row
            # As pandera's postprocess: a null outcome passes when the check ignores nulls.
            output = pl.col(CHECK_OUTPUT_KEY)
            passed = passed.select(output | output.is_null() if check.ignore_na else output.fill_null(False))
        outcomes.append(passed.select(pl.first().alias(f"check_{len(outcomes)}")))
    failed = pl.Series("suspect", [False] * records.height, pl.Boolean)
    if outcomes:
        verdicts = pl.concat(outcomes, how="horizontal").collect(engine="in-memory")
        failed = verdicts.select(~pl.all_horizontal(pl.all()).alias("suspect")).to_series()
    if ROW_PROBLEM in records.columns:
        failed = failed | records[ROW_PROBLEM].is_not_null()
    return failed.alias("suspect")


_NO_REJECTS = pl.DataFrame(schema={SOURCE_ROW: pl.Int64, "raw_values": pl.String, "reasons": pl.String})


def _reasons(records: pl.DataFrame) -> pl.DataFrame:
    """Every reason LeadModel and the shape check give a row: `index` (its position), `reasons` (JSON objects)."""
    shape_problems = (
        records.with_row_index("index")
        .filter(pl.col(ROW_PROBLEM).is_not_null())
        .select("index", pl.lit(None, pl.String).alias("column"), pl.col(ROW_PROBLEM).alias("problem"))
        if ROW_PROBLEM in records.columns
        else pl.DataFrame(schema={"index": pl.UInt32, "column": pl.String, "problem": pl.String})
    )
    try:
        with _in_memory_engine():
            LeadModel.validate(records.drop(ROW_PROBLEM, strict=False), lazy=True)
        failures = pl.DataFrame(schema={"index": pl.Int32, "column": pl.String, "check": pl.String})
    except pa.errors.SchemaErrors as e:
        failures = e.failure_cases
    checks = _specific_email_problems(
        failures.filter(pl.col("index").is_not_null()).select(
            pl.col("index").cast(pl.UInt32),
            pl.when(pl.col("column").is_in(CANONICAL_FIELDS)).then(pl.col("column")).alias("column"),
            _problem(pl.col("column"), pl.col("check")).alias("problem"),
        ),
        records,
    )
    return (
        pl.concat([shape_problems.with_columns(pl.col("index").cast(pl.UInt32)), checks])
        .select("index", pl.struct("column", "problem").alias("reason"))
        .group_by("index")
        .agg(pl.col("reason").sort_by(pl.col("reason").struct.field("column")))
        .select("index", pl.col("reason").list.eval(pl.element().struct.json_encode()).list.join(",").alias("reasons"))
    )


def _rejected(indexed: pl.DataFrame, mapping: dict[str, str]) -> pl.DataFrame:
    """Rejected rows (with their `reasons`) as stored: source row, raw values under the source headers, reasons."""
    source_headers = {column: header for header, column in mapping.items()}
    return indexed.select(
        SOURCE_ROW,
        pl.struct(
            pl.col(c).str.replace_all("\x00", NUL_SHOWN_AS, literal=True).alias(h) for c, h in source_headers.items()
        )
        .struct.json_encode()
        .alias("raw_values"),
        pl.concat_str(pl.lit("["), pl.col("reasons"), pl.lit("]")).alias("reasons"),
    )


def split_valid(records: pl.DataFrame, mapping: dict[str, str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(valid records, rejected rows) where rejected rows carry their raw values and every reason as JSON."""
    reasons = _reasons(records)
    records = records.drop(ROW_PROBLEM, strict=False)
    if reasons.height == 0:
        return records, _NO_REJECTS
    indexed = records.with_row_index("index")
    valid = indexed.join(reasons, on="index", how="anti").drop("index")
    return valid, _rejected(indexed.join(reasons, on="index", how="inner").sort(SOURCE_ROW), mapping)


def rejected_rows(suspected: pl.DataFrame, mapping: dict[str, str]) -> pl.DataFrame:
    """The rejected rows of `split_valid` for rows `suspects` flagged, in their order."""
    if suspected.height == 0:
        return _NO_REJECTS
    reasons = _reasons(suspected)
    indexed = (
        suspected.drop(ROW_PROBLEM, strict=False)
        .with_row_index("index")
        .join(reasons, on="index", how="left", maintain_order="left")
    )
    if (unexplained := indexed.filter(pl.col("reasons").is_null())).height:
        # `suspects` and the model disagree: a bug, never a row loaded or rejected for no reason.
        raise RuntimeError(
            f"LeadModel accepts rows the validation screen rejects: {unexplained[SOURCE_ROW].to_list()[:10]}"
        )
    return _rejected(indexed, mapping)


class _Suspects:
    """Suspect rows of consecutive chunks, validated by LeadModel together and written chunk by chunk."""

    # One pandera call per quarter chunk of suspects rather than one per chunk (1M rows, 3% invalid: 5 calls
    # instead of 40).
    def __init__(self, mapping: dict[str, str], rejected: PartsWriter, report: RejectReport):
        self._mapping, self._rejected, self._report = mapping, rejected, report
        self._suspects: list[pl.DataFrame] = []  # one frame per chunk
        self._rows = self._limit = 0

    def add(self, chunk: pl.DataFrame, flagged: pl.Series) -> None:
        self._suspects.append(chunk.filter(flagged))
        self._rows += self._suspects[-1].height
        # A quarter chunk at most: pandera's failure cases of a whole chunk of invalid rows would take much memory.
        self._limit = max(self._limit, chunk.height // 4, 1)
        if self._rows >= self._limit:
            self.flush()

    def flush(self) -> None:
        if not self._suspects:
            return
        rejected = rejected_rows(pl.concat(self._suspects), self._mapping)
        chunks, at = [], 0
        for suspected in self._suspects:
            chunks.append(rejected.slice(at, suspected.height).sort(SOURCE_ROW) if suspected.height else _NO_REJECTS)
            at += suspected.height
        for chunk in chunks:
            self._rejected.write(chunk)  # a part per chunk, as before
        # The report in one write: the same lines in the same order as chunk by chunk, one report query fewer each.
        together = pl.concat(chunks)
        for part in [together] if together[SOURCE_ROW].is_sorted() else chunks:
            self._report.write(part)
        self._suspects, self._rows = [], 0


# 95% two-sided: a 6-row file with 1 invalid row is imported (its invalid share is at least 3.0%), one with 3
# is refused (at least 18.8%); from 10,000 rows the cut is within a point of `max_error_rate`.
_CONFIDENCE_Z = 1.96


def invalid_share_floor(invalid: int, rows: int) -> float:
    """The lower end of the Wilson score interval of the invalid share: what the file shows beyond chance."""
    if rows == 0 or invalid == 0:
        return 0.0
    z2, share = _CONFIDENCE_Z**2, invalid / rows
    centre = share + z2 / (2 * rows)
    spread = _CONFIDENCE_Z * math.sqrt(share * (1 - share) / rows + z2 / (4 * rows * rows))
    return max(0.0, (centre - spread) / (1 + z2 / rows))


@dataclass(frozen=True)
class ErrorRateRule:
    """How the error-rate guard judged a file: its invalid share, the share it shows beyond chance, the limit."""

    invalid: int
    rows: int
    allowed: float

    @property
    def share(self) -> float:
        return self.invalid / self.rows if self.rows else 0.0

    @property
    def floor(self) -> float:
        return invalid_share_floor(self.invalid, self.rows)

    @property
    def refuses(self) -> bool:
        # With no invalid row allowed, one is enough: the floor of any invalid row is above 0.
        return self.floor > self.allowed

    def explained(self) -> str:
        """One line for the run's metadata: the numbers and the decision."""
        verdict = "refused" if self.refuses else "within the limit"
        return (
            f"{self.invalid:,} of {self.rows:,} rows invalid ({self.share:.1%}); at least {self.floor:.1%} with 95% "
            f"confidence, {'above' if self.refuses else 'not above'} the {self.allowed:.1%} allowed: {verdict}"
        )


def _too_many_invalid(
    name: str, rejected: Parts, reasons: pl.DataFrame, rows: int, config: ValidateConfig
) -> str | None:
    """Why the whole import must stop, or None."""
    counts = "; ".join(f"{problem}: {n:,}" for problem, n in reasons.iter_rows())
    if config.mode == "strict" and rejected.rows:
        return f"{name}: strict mode and {rejected.rows:,} of {rows:,} rows are invalid: {counts}"
    rule = ErrorRateRule(rejected.rows, rows, config.max_error_rate)
    if rule.refuses:
        return (
            f"{name}: {rule.invalid:,} of {rows:,} rows are invalid ({rule.share:.1%}; at least {rule.floor:.1%} with "
            f"95% confidence > {config.max_error_rate:.1%} allowed): {counts}"
        )
    return None


def normalized(valid: pl.DataFrame, region: str) -> pl.DataFrame:
    """Valid records with their E.164 phone and the website reduced to its scheme and host."""
    # Each distinct website once: a file repeats its companies' websites (the benchmark: 997 distinct in a chunk
    # of 25,000), and the pattern over every value took 1.06 s for 1M rows, 0.04 s over the distinct ones.
    sites = valid["company_website"].drop_nulls().unique()
    hosts = sites.to_frame().select(bare_host_url(pl.col("company_website"))).to_series()
    return valid.with_columns(
        normalized_phone(pl.col("phone"), valid, region).alias(PHONE_E164),
        pl.col("company_website")
        .replace_strict(sites, hosts, default=None, return_dtype=pl.String)
        .alias("company_website"),
    )


# Records validated together: the checks and the phone numbers cost a fixed part per call (1M rows, two parts of
# 25,000 at a time: suspects 0.88 s -> 0.54 s, normalized 1.12 s -> 0.78 s; the step's peak RSS 30 MB more).
# Parts are still read, and written, one by one.
_TOGETHER = 50_000


def _together(parts: Iterator[pl.DataFrame]) -> Iterator[list[pl.DataFrame]]:
    group: list[pl.DataFrame] = []
    for part in parts:
        group.append(part)
        if sum(p.height for p in group) >= _TOGETHER:
            yield group
            group = []
    if group:
        yield group


def _pieces(frame: pl.DataFrame | pl.Series, parts: list[pl.DataFrame]) -> Iterator:
    """`frame`, made of `parts` put together, in pieces as long as each."""
    at = 0
    for part in parts:
        yield frame.slice(at, part.height)
        at += part.height


def _write_normalized(valid: PartsWriter, parts: list[pl.DataFrame], region: str) -> None:
    for piece in _pieces(normalized(pl.concat(parts, rechunk=False), region), parts):
        valid.write(piece)


def split_parts(
    records: Parts,
    mapping: dict[str, str],
    region: str,
    valid: PartsWriter,
    rejected: PartsWriter,
    report: RejectReport,
) -> None:
    """`split_valid` and `normalized` part by part: a part each of valid and rejected rows per part of records."""
    # Two cores: parts are screened while the ones before are normalized and written (polars releases the GIL).
    # At 1M rows the step's peak RSS is 297 MB, 244 MB chunk by chunk.
    with ThreadPoolExecutor(1) as writer:
        batch = _Suspects(mapping, rejected, report)
        written: Future | None = None
        for parts in _together(records.frames()):
            try:
                flagged = suspects(pl.concat(parts, rechunk=False))
            except Exception:
                flagged = None
            valid_rows = []
            if flagged is None:
                # A check that fails to run rejects no row of the frame pandera ran it on: chunk by chunk, as before.
                batch.flush()
                for part in parts:
                    valid_part, rejected_part = split_valid(part, mapping)
                    rejected.write(rejected_part)
                    report.write(rejected_part)
                    valid_rows.append(valid_part)
            else:
                for part, part_flagged in zip(parts, _pieces(flagged, parts), strict=True):
                    batch.add(part, part_flagged)
                    valid_rows.append(part.filter(~part_flagged).drop(ROW_PROBLEM, strict=False))
            if written is not None:
                written.result()
            written = writer.submit(_write_normalized, valid, valid_rows, region)
        if written is not None:
            written.result()
        batch.flush()


@dg.op(out={"valid": dg.Out(), "rejected": dg.Out(), "summary": dg.Out()})
def validate(
    context: dg.OpExecutionContext, config: ValidateConfig, state: StateFolder, records: Parts, summary: FileSummary
):
    """Split records into valid leads and rejected rows, with a report of every rejected row."""
    started = time.perf_counter()
    outputs = step_output_dir(state.home, context.run_id, str(context.op_handle))
    valid_writer, rejected_writer = PartsWriter(outputs / "valid"), PartsWriter(outputs / "rejected")
    report_path = state.reports_path / f"{summary.partition_key}.rejects.csv"
    with RejectReport(report_path, list(summary.mapping), summary.partition_key) as report:
        split_parts(records, summary.mapping, config.phone_region, valid_writer, rejected_writer, report)
    valid, rejected = valid_writer.parts(), rejected_writer.parts()
    reasons = top_reasons(rejected.scan())
    metadata: dict[str, Any] = {"rows_rejected": rejected.rows}
    sample = rejected_sample(rejected.scan(), list(summary.mapping)) if rejected.rows else ()
    if rejected.rows:
        metadata |= {
            "reject_report": dg.MetadataValue.path(str(report_path)),
            "top_reasons": dg.MetadataValue.md(top_reasons_markdown(reasons)),
            "rejected_rows": sample_table(sample),
        }
    if rejected.rows and config.mode == "lenient":
        metadata["error_rate"] = ErrorRateRule(rejected.rows, summary.rows_read, config.max_error_rate).explained()
    stop = _too_many_invalid(Path(summary.source_file).name, rejected, reasons, summary.rows_read, config)
    if stop:
        raise dg.Failure(description=stop + "; nothing was loaded", metadata=metadata)
    summary = summary.after(
        "validate",
        started,
        rows_valid=valid.rows,
        rows_rejected=rejected.rows,
        rejected_sample=sample,
        reject_report=str(report_path) if rejected.rows else "",
    )
    context.add_output_metadata({"rows_valid": valid.rows}, output_name="valid")
    context.add_output_metadata(metadata, output_name="rejected")
    yield dg.Output(valid, "valid")
    yield dg.Output(rejected, "rejected")
    yield dg.Output(summary, "summary")
