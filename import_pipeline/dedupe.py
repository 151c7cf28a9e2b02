"""Dedupe: the normalized match key, and one lead per key within a file (first valid occurrence wins).

Duplicates of leads already in the database are decided by the load, inside its transaction:
only there is the answer exact while other imports write at the same time.
"""

import time

import dagster as dg
import polars as pl

EMAIL_KEY = "email_key"


def email_key(email: pl.Expr) -> pl.Expr:
    """Email without any Unicode whitespace, NFC-normalized and lower-cased; null stays null."""
    return email.str.replace_all(r"\s+", "").str.normalize("NFC").str.to_lowercase().replace("", None)


def drop_in_file_duplicates(valid: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Valid records with their email key, keeping the first of each key; and how many were dropped.

    Records without an email are never duplicates of each other by this key.
    """
    keyed = valid.with_columns(email_key(pl.col("email")).alias(EMAIL_KEY))
    unique = keyed.filter(pl.col(EMAIL_KEY).is_null() | pl.col(EMAIL_KEY).is_first_distinct())
    return unique, keyed.height - unique.height


@dg.op(out={"leads": dg.Out(), "summary": dg.Out()})
def dedupe(context: dg.OpExecutionContext, valid: pl.DataFrame, summary: dict):
    """Keep one record per email key within the file."""
    started = time.perf_counter()
    unique, duplicates = drop_in_file_duplicates(valid)
    summary = summary | {"duplicates_in_file": duplicates}
    summary["seconds"] = summary["seconds"] | {"dedupe": time.perf_counter() - started}
    context.add_output_metadata({"unique_in_file": unique.height, "duplicates_in_file": duplicates}, output_name="leads")
    yield dg.Output(unique, "leads")
    yield dg.Output(summary, "summary")
