"""Dedupe: normalized match keys per record, and the SQL that keeps one row per key within the file and
matches rows to existing leads; the load runs that SQL inside its transaction, on the staged file."""

import time

import dagster as dg
import polars as pl
import psycopg
from psycopg import sql

from import_pipeline.config import DedupeConfig, MatchKey
from import_pipeline.resources import LandingFolder, Parts, PartsWriter, step_output_dir

EMAIL_KEY, EXTERNAL_KEY, PHONE_COMPANY_KEY = "email_key", "external_key", "phone_company_key"
KEY_COLUMNS = {"email": EMAIL_KEY, "external_id": EXTERNAL_KEY, "phone_company": PHONE_COMPANY_KEY}


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


def _move_losers(cur: psycopg.Cursor, staging: sql.Identifier, group: sql.Identifier, keep: str, lead: sql.Composable) -> None:
    """Move the staged rows that share `group` with a kept row (`keep`: the first or last) into `outcomes`."""
    order = sql.SQL("ASC" if keep == "first" else "DESC")
    cur.execute(
        sql.SQL(
            """
            WITH ranked AS (
                SELECT source_row, {lead} AS lead_id,
                       first_value(source_row) OVER (PARTITION BY {group} ORDER BY source_row {order}) AS kept
                FROM {staging} WHERE {group} IS NOT NULL
            ), moved AS (
                INSERT INTO outcomes (source_row, lead_id, action, duplicate_of_row, survivor_row)
                SELECT source_row, lead_id, 'duplicate_in_file', kept, kept FROM ranked WHERE source_row <> kept
                RETURNING source_row
            )
            DELETE FROM {staging} WHERE source_row IN (SELECT source_row FROM moved)
            """
        ).format(lead=lead, group=group, order=order, staging=staging)
    )


def drop_in_file_duplicates(cur: psycopg.Cursor, staging: sql.Identifier, keys: list[str], keep: str = "first") -> None:
    """Move staged rows that repeat an earlier row's key (`keep`: or a later one's) into `outcomes`.

    Keys apply in priority order; a row without a key is never a duplicate by that key. Each duplicate
    names the line it repeats and, following the chain when that line lost to a later key, the line
    that survived. Runs in PostgreSQL: the whole file is never in memory at once.
    """
    for name in keys:
        _move_losers(cur, staging, sql.Identifier(KEY_COLUMNS[name]), keep, lead=sql.SQL("NULL::bigint"))
    # A row kept by one key may lose to another later: follow the chain to the row that survived.
    for _ in keys[1:]:
        cur.execute(
            """
            UPDATE outcomes d SET survivor_row = n.duplicate_of_row FROM outcomes n
            WHERE d.action = 'duplicate_in_file' AND n.action = 'duplicate_in_file' AND n.source_row = d.survivor_row
            """
        )


def match_existing(cur: psycopg.Cursor, staging: sql.Identifier, keys: list[str], keep: str) -> None:
    """Point each staged row at the live lead it matches, key by key in priority order.

    Two rows matching one lead keep only one (`keep`); the others become in-file duplicates. Runs in
    the load's transaction: only there is the answer exact while other imports write at the same time.
    """
    for name in keys:
        key = sql.Identifier(KEY_COLUMNS[name])
        # Email is unique among live leads; the weaker keys may match several, and the oldest wins.
        candidates = sql.SQL(
            "leads" if name == "email" else "(SELECT DISTINCT ON ({key}) * FROM leads "
            "WHERE {key} IN (SELECT {key} FROM {staging}) AND deleted_at IS NULL AND duplicate_of IS NULL "
            "ORDER BY {key}, id)"
        ).format(key=key, staging=staging)
        cur.execute(
            sql.SQL(
                """
                UPDATE {staging} s SET match_id = l.id
                FROM {candidates} l
                WHERE s.match_id IS NULL AND l.{key} = s.{key} AND l.deleted_at IS NULL AND l.duplicate_of IS NULL
                """
            ).format(staging=staging, candidates=candidates, key=key)
        )
    _move_losers(cur, staging, sql.Identifier("match_id"), keep, lead=sql.Identifier("match_id"))


@dg.op(out={"leads": dg.Out(), "summary": dg.Out()})
def dedupe(context: dg.OpExecutionContext, config: DedupeConfig, landing: LandingFolder, valid: Parts, summary: dict):
    """Compute each valid record's match keys, chunk by chunk; the load drops duplicates by them."""
    started = time.perf_counter()
    keys = [MatchKey(k).value for k in config.match_keys]
    keyed = PartsWriter(step_output_dir(landing.home, context.run_id, str(context.op_handle)) / "leads")
    for chunk in valid.frames():
        keyed.write(with_keys(chunk, config.source))
    keyed = keyed.parts()
    summary = summary | {"match_keys": keys, "keep": config.keep}
    summary["seconds"] = summary["seconds"] | {"dedupe": time.perf_counter() - started}
    context.add_output_metadata({"rows_keyed": keyed.rows, "match_keys": ", ".join(keys), "keep": config.keep}, output_name="leads")
    yield dg.Output(keyed, "leads")
    yield dg.Output(summary, "summary")
