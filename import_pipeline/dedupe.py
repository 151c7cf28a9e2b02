"""Dedupe: normalized match keys, and one record per key within the file.

Which existing lead a record matches is decided by the load, inside its transaction: only there is
the answer exact while other imports write at the same time.
"""

import time

import dagster as dg
import polars as pl

from import_pipeline.config import DedupeConfig, MatchKey
from import_pipeline.parse import SOURCE_ROW

EMAIL_KEY, EXTERNAL_KEY, PHONE_COMPANY_KEY = "email_key", "external_key", "phone_company_key"
KEY_COLUMNS = {"email": EMAIL_KEY, "external_id": EXTERNAL_KEY, "phone_company": PHONE_COMPANY_KEY}
DUPLICATE_OF_ROW, SURVIVOR_ROW = "duplicate_of_row", "survivor_row"


def email_key(email: pl.Expr) -> pl.Expr:
    """Email without any Unicode whitespace, NFC-normalized and lower-cased; null stays null."""
    return email.str.replace_all(r"\s+", "").str.normalize("NFC").str.to_lowercase().replace("", None)


def external_key(external_id: pl.Expr, source: str) -> pl.Expr:
    """`<source>:<id>`: ids are only unique within the system that issued them."""
    return pl.concat_str(pl.lit(f"{source}:"), external_id.str.strip_chars())


def phone_company_key(phone_e164: pl.Expr, phone: pl.Expr, company: pl.Expr) -> pl.Expr:
    """E.164 phone (digits of the raw phone when it did not parse) with the company's letters and digits."""
    number = pl.coalesce(phone_e164, phone.str.replace_all(r"[^0-9+]", "").replace("", None))
    name = company.str.normalize("NFKD").str.to_lowercase().str.replace_all(r"[^\p{L}\p{N}]", "").replace("", None)
    return pl.concat_str(number, pl.lit("|"), name)


def with_keys(valid: pl.DataFrame, source: str) -> pl.DataFrame:
    """Valid records with every match key column (null where the record lacks the fields)."""
    e164 = pl.col("phone_e164") if "phone_e164" in valid.columns else pl.lit(None, pl.String)
    return valid.with_columns(
        email_key(pl.col("email")).alias(EMAIL_KEY),
        external_key(pl.col("external_id"), source).alias(EXTERNAL_KEY),
        phone_company_key(e164, pl.col("phone"), pl.col("company_name")).alias(PHONE_COMPANY_KEY),
    )


def drop_in_file_duplicates(
    keyed: pl.DataFrame, keys: list[str], keep: str = "first"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept records, duplicates) where each duplicate names the line it repeats and the row that survived.

    Keys apply in priority order; a record without a key is never a duplicate by that key.
    """
    kept = keyed.sort(SOURCE_ROW)
    duplicates = []
    for key in (KEY_COLUMNS[k] for k in keys):
        winner = (pl.col(SOURCE_ROW).first() if keep == "first" else pl.col(SOURCE_ROW).last()).over(key)
        kept = kept.with_columns(pl.when(pl.col(key).is_not_null()).then(winner).alias(DUPLICATE_OF_ROW))
        losers = pl.col(DUPLICATE_OF_ROW).is_not_null() & (pl.col(DUPLICATE_OF_ROW) != pl.col(SOURCE_ROW))
        duplicates.append(kept.filter(losers).select(SOURCE_ROW, DUPLICATE_OF_ROW))
        kept = kept.filter(~losers).drop(DUPLICATE_OF_ROW)
    found = pl.concat(duplicates) if duplicates else pl.DataFrame(schema={SOURCE_ROW: pl.Int64, DUPLICATE_OF_ROW: pl.Int64})
    # A row kept by one key may lose to another later: follow the chain to the row that survived.
    survivors = found.with_columns(pl.col(DUPLICATE_OF_ROW).alias(SURVIVOR_ROW))
    for _ in keys:
        survivors = survivors.join(
            found.select(pl.col(SOURCE_ROW).alias(SURVIVOR_ROW), pl.col(DUPLICATE_OF_ROW).alias("next")),
            on=SURVIVOR_ROW,
            how="left",
        ).select(SOURCE_ROW, DUPLICATE_OF_ROW, pl.coalesce("next", SURVIVOR_ROW).alias(SURVIVOR_ROW))
    return kept, survivors.sort(SOURCE_ROW)


@dg.op(out={"leads": dg.Out(), "duplicates": dg.Out(), "summary": dg.Out()})
def dedupe(context: dg.OpExecutionContext, config: DedupeConfig, valid: pl.DataFrame, summary: dict):
    """Compute the match keys and keep one record per key within the file."""
    started = time.perf_counter()
    keys = [MatchKey(k).value for k in config.match_keys]
    unique, duplicates = drop_in_file_duplicates(with_keys(valid, config.source), keys, config.keep)
    summary = summary | {"duplicates_in_file": duplicates.height, "match_keys": keys, "keep": config.keep}
    summary["seconds"] = summary["seconds"] | {"dedupe": time.perf_counter() - started}
    context.add_output_metadata({"unique_in_file": unique.height}, output_name="leads")
    context.add_output_metadata(
        {"duplicates_in_file": duplicates.height, "first_duplicates": dg.MetadataValue.md(_markdown(duplicates.head(10)))},
        output_name="duplicates",
    )
    yield dg.Output(unique, "leads")
    yield dg.Output(duplicates, "duplicates")
    yield dg.Output(summary, "summary")


def _markdown(frame: pl.DataFrame) -> str:
    lines = ["| line | duplicate of line |", "| --- | --- |"]
    lines += [f"| {row} | {of} |" for row, of, _ in frame.iter_rows()]
    return "\n".join(lines)
