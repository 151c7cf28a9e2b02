"""Dedupe: the SQL that keeps one row per match key within the file and matches rows to live leads.

The keys themselves are computed by the database (`schema.KEY_EXPRESSIONS`), for leads and for the
load's staging table alike; the load runs this SQL inside its transaction, on the staged file.
"""

import time
from collections.abc import Sequence
from enum import StrEnum
from typing import Literal

import dagster as dg
import polars as pl
import psycopg
from psycopg import sql
from pydantic import Field, field_validator

from import_pipeline.parts import Parts
from import_pipeline.possible_duplicates import DuplicateScoring, PossibleDuplicatesConfig
from import_pipeline.schema import LIVE, build_index_concurrently
from import_pipeline.summary import FileSummary

EMAIL_KEY, EXTERNAL_KEY, PHONE_COMPANY_KEY = "email_key", "external_key", "phone_company_key"
KEY_COLUMNS = {"email": EMAIL_KEY, "external_id": EXTERNAL_KEY, "phone_company": PHONE_COMPANY_KEY}
# The fields each key is computed from (schema.KEY_EXPRESSIONS).
KEY_FIELDS = {"email": ("email",), "external_id": ("external_id",), "phone_company": ("phone", "company_name")}
EVERY_ROW = sql.SQL("TRUE")


class MatchKey(StrEnum):
    """A way to recognise the same lead twice."""

    email = "email"
    external_id = "external_id"
    phone_company = "phone_company"


class DedupeConfig(dg.Config):
    """How rows are matched to each other and to existing leads."""

    match_keys: list[MatchKey] = Field(
        default=["email"],  # type: ignore[list-item]  # Dagster keeps defaults as plain values, not enum members
        min_length=1,
        description="Match keys in priority order: normalized email; external_id within `source`; "
        "phone (E.164) with the normalized company name (weaker, opt in).",
    )
    keep: Literal["first", "last"] = Field(
        default="first",
        description="Which occurrence of a key within the file is kept; the others are in-file duplicates.",
    )
    source: str = Field(default="default", description="The source that external ids belong to.")
    possible_duplicates: PossibleDuplicatesConfig = Field(
        default_factory=PossibleDuplicatesConfig,
        description="Rows no match key matched, scored against similar leads: flagged, queued for review or new.",
    )

    @field_validator("match_keys")
    @classmethod
    def _each_key_once(cls, keys: list[MatchKey]) -> list[MatchKey]:
        if len(set(keys)) != len(keys):
            raise ValueError(f"each match key at most once: {[str(k) for k in keys]}")
        return keys


def keys_with_email(keys: Sequence[str]) -> list[str]:
    """The configured keys, then email: the live-email index decides races whatever the configured keys."""
    return [*keys, *([] if "email" in keys else ["email"])]


def ensure_key_indexes(conn: psycopg.Connection, keys: Sequence[str]) -> list[str]:
    """Build the index of each weaker key an import matches by, concurrently (writes go on); return those built.

    Only email's is kept from the start: each index costs seconds per million leads inserted.
    """
    built = []
    for name in keys:
        if name == "email":
            continue
        column = KEY_COLUMNS[name]
        if build_index_concurrently(conn, f"leads_{column}_live", sql.Identifier(column)):
            built.append(f"leads_{column}_live")
    return built


def move_losers(
    cur: psycopg.Cursor,
    staging: sql.Identifier,
    group: sql.Identifier,
    keep: str,
    lead: sql.Composable,
    scope: sql.Composable = EVERY_ROW,
) -> None:
    """Move the staged rows in `scope` that share `group` with a kept row (`keep`: the first or last) into `outcomes`."""
    # Grouped by hashing, not ranked by sorting: a window over the sorted staged rows took 4.3 s of the
    # 1M-row load, when only 2% of the rows share a key.
    kept = sql.SQL("min" if keep == "first" else "max")
    cur.execute(
        sql.SQL(
            """
            WITH shared AS (
                SELECT {group} AS value, {kept}(source_row) AS kept
                FROM {staging} s WHERE {group} IS NOT NULL AND {scope}
                GROUP BY {group} HAVING count(*) > 1
            ), moved AS (
                INSERT INTO outcomes (source_row, lead_id, action, duplicate_of_row, survivor_row)
                SELECT s.source_row, {lead}, 'duplicate_in_file', shared.kept, shared.kept
                FROM {staging} s JOIN shared ON s.{group} = shared.value
                WHERE s.source_row <> shared.kept AND {scope}
                RETURNING source_row
            )
            DELETE FROM {staging} WHERE source_row IN (SELECT source_row FROM moved)
            """
        ).format(lead=lead, group=group, kept=kept, staging=staging, scope=scope)
    )


def drop_in_file_duplicates(
    cur: psycopg.Cursor, staging: sql.Identifier, keys: Sequence[str], keep: str = "first"
) -> None:
    """Move staged rows that repeat an earlier row's key (`keep`: or a later one's) into `outcomes`.

    Keys apply in priority order; a row without a key is never a duplicate by that key. Each duplicate
    names the line it repeats and, following the chain when that line lost to a later key, the line
    that survived. Runs in PostgreSQL: the whole file is never in memory at once.
    """
    for name in keys:
        move_losers(cur, staging, sql.Identifier(KEY_COLUMNS[name]), keep, lead=sql.SQL("NULL::bigint"))
    # A row kept by one key may lose to another later: follow the chain to the row that survived.
    for _ in keys[1:]:
        cur.execute(
            """
            UPDATE outcomes d SET survivor_row = n.duplicate_of_row FROM outcomes n
            WHERE d.action = 'duplicate_in_file' AND n.action = 'duplicate_in_file' AND n.source_row = d.survivor_row
            """
        )


def match_existing(
    cur: psycopg.Cursor, staging: sql.Identifier, keys: Sequence[str], keep: str, scope: sql.Composable = EVERY_ROW
) -> None:
    """Point each staged row in `scope` at the live lead it matches, key by key in priority order.

    Two rows matching one lead keep only one (`keep`); the others become in-file duplicates. Runs in
    the load's transaction, each statement seeing what other sessions committed before it.
    """
    for name in keys:
        key = sql.Identifier(KEY_COLUMNS[name])
        # Email is unique among live leads; the weaker keys may match several, and the oldest wins.
        candidates = sql.SQL(
            "leads"
            if name == "email"
            else "(SELECT DISTINCT ON ({key}) * FROM leads "
            "WHERE {key} IN (SELECT {key} FROM {staging} s WHERE {scope}) AND {live} ORDER BY {key}, id)"
        ).format(key=key, staging=staging, scope=scope, live=LIVE)
        cur.execute(
            sql.SQL(
                """
                UPDATE {staging} s SET match_id = l.id
                FROM {candidates} l
                WHERE s.match_id IS NULL AND l.{key} = s.{key} AND l.deleted_at IS NULL AND l.duplicate_of IS NULL
                  AND {scope}
                """
            ).format(staging=staging, candidates=candidates, key=key, scope=scope)
        )
    move_losers(cur, staging, sql.Identifier("match_id"), keep, lead=sql.SQL("s.match_id"), scope=scope)


def still_matches(keys: Sequence[str]) -> sql.Composable:
    """The lead `l` is live and still shares a key with the staged row `s` (it may have changed since matching),
    or is the candidate `s` is auto-merged into."""
    shared = sql.SQL(" OR ").join(
        [sql.SQL("l.{k} = s.{k}").format(k=sql.Identifier(KEY_COLUMNS[n])) for n in keys] + [sql.SQL("s.fuzzy_match")]
    )
    return sql.SQL("l.deleted_at IS NULL AND l.duplicate_of IS NULL AND ({})").format(shared)


# The step keeps the name `dedupe`: it is the step users configure (`ops: dedupe: config: match_keys`) and
# the step key that re-execution of earlier runs looks for.
@dg.op(name="dedupe", out={"leads": dg.Out(), "summary": dg.Out()})
def choose_match_keys(context: dg.OpExecutionContext, config: DedupeConfig, valid: Parts, summary: FileSummary):
    """Choose how rows are matched to each other and to live leads; the load applies it in SQL."""
    started = time.perf_counter()
    keys = [MatchKey(k).value for k in config.match_keys]
    # Every part the load will stage is there and has what the keys are computed from (reads footers only).
    needed = {field for key in keys for field in KEY_FIELDS[key]}
    for path in valid.paths:
        missing = needed - set(pl.read_parquet_schema(path))
        if missing:
            raise dg.Failure(description=f"{path}: the valid records lack {sorted(missing)}, needed by the match keys")
    summary = summary.after(
        "dedupe",
        started,
        match_keys=tuple(keys),
        keep=config.keep,
        source=config.source,
        scoring=DuplicateScoring.from_config(config.possible_duplicates),
    )
    context.add_output_metadata(
        {"rows": valid.rows, "match_keys": ", ".join(keys), "keep": config.keep}, output_name="leads"
    )
    yield dg.Output(valid, "leads")
    yield dg.Output(summary, "summary")
