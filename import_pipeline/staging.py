"""Staging: the load's private tables, and the file's valid leads COPYed into one of them."""

import io
from collections.abc import Iterable, Mapping, Sequence

import polars as pl
import psycopg
from psycopg import sql

from import_pipeline.dedupe import KEY_COLUMNS
from import_pipeline.progress import Progress
from import_pipeline.schema import (
    CANONICAL_FIELDS,
    EXTERNAL_SOURCE,
    EXTRA,
    EXTRA_PREFIX,
    KEY_EXPRESSIONS,
    OWNER,
    PHONE_E164,
    SOURCE_ROW,
)
from import_pipeline.validate import NUL_SHOWN_AS

# Columns a lead takes from its source row.
LEAD_VALUES = (*CANONICAL_FIELDS, PHONE_E164, EXTRA)
STAGED_COLUMNS = (SOURCE_ROW, *LEAD_VALUES, OWNER)
_STAGED_TYPES = {SOURCE_ROW: "integer", EXTRA: "jsonb"}
COPY_SLICE_ROWS = 100_000
COPY_SLICE_BYTES = 64 * 1024 * 1024
JSON_GROUP_FIELDS = 1000


def copy_frames(
    cur: psycopg.Cursor,
    table: sql.Composable,
    columns: Sequence[str],
    frames: Iterable[pl.DataFrame],
    total: int,
    log=None,
) -> int:
    """COPY frames with these columns into `table` as CSV, slice by slice; returns the rows the server took."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        table, sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    progress = Progress(log, f"copying into {table.as_string(cur)}", total)
    done = 0
    with cur.copy(statement) as copy:
        for frame in frames:
            frame = frame.select(columns)
            # Slices of at most about COPY_SLICE_BYTES too: the CSV of 1,000 leads of 20,000 extra fields is 570 MB.
            rows = int(COPY_SLICE_BYTES * frame.height // max(frame.estimated_size(), 1))
            for part in frame.iter_slices(max(1, min(COPY_SLICE_ROWS, rows))):
                buffer = io.BytesIO()
                part.write_csv(buffer, include_header=False)
                copy.write(buffer.getbuffer())
                done += part.height
                progress.update(done)
    return cur.rowcount


def read_frame(cur: psycopg.Cursor, query: sql.Composable, schema: Mapping[str, type[pl.DataType]]) -> pl.DataFrame:
    """The rows of `query` (its columns named and typed by `schema`), through COPY as CSV."""
    buffer = io.BytesIO()
    with cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(query)) as copy:
        for data in copy:
            buffer.write(data)
    if not buffer.tell():
        return pl.DataFrame(schema=schema)
    # Quoted empty text stays "" (missing_is_null only takes an unquoted empty field, COPY's NULL, as null).
    return pl.read_csv(buffer.getvalue(), has_header=False, new_columns=list(schema), schema=schema)


def _json_object(columns: Sequence[str]) -> pl.Expr:
    """The `extra.*` columns as one JSON object, keyed by the source header."""
    fields = [
        pl.col(c).str.replace_all("\x00", NUL_SHOWN_AS, literal=True).alias(c.removeprefix(EXTRA_PREFIX))
        for c in columns
    ]
    if len(fields) <= JSON_GROUP_FIELDS:
        return pl.struct(fields).struct.json_encode()
    # Encoding a struct of 20,000 fields took 6.3 s for 1,000 rows, 2.0 s as 20 objects of 1,000 joined.
    groups = [
        pl.struct(fields[i : i + JSON_GROUP_FIELDS]).struct.json_encode().str.slice(1).str.head(-1)
        for i in range(0, len(fields), JSON_GROUP_FIELDS)
    ]
    return pl.concat_str([pl.lit("{"), pl.concat_str(groups, separator=","), pl.lit("}")])


def staged_frame(leads: pl.DataFrame, mapping: dict[str, str], assign: str, owner_column: str) -> pl.DataFrame:
    """The columns the staging table takes; unmapped `extra.*` columns become one JSON object per lead."""
    extras = [c for c in leads.columns if c.startswith(EXTRA_PREFIX)]
    extra = _json_object(extras) if extras else pl.lit(None, pl.String)
    phone = pl.col(PHONE_E164) if PHONE_E164 in leads.columns else pl.lit(None, pl.String)
    owner = (
        pl.col(mapping[owner_column]) if assign == "by_column" and owner_column in mapping else pl.lit(None, pl.String)
    )
    return leads.select(SOURCE_ROW, *CANONICAL_FIELDS, phone.alias(PHONE_E164), extra.alias(EXTRA), owner.alias(OWNER))


def create_work_tables(
    cur: psycopg.Cursor, staging: sql.Identifier, keys: Sequence[str], source: str = "default"
) -> None:
    """The staging table for the file's leads, `outcomes` (one row per source row's fate) and `losers`.

    The staging table computes the match keys `keys` with the same expressions as `leads`. Temporary
    tables are private to this connection and vanish with it, even if the run dies.
    """
    columns: list[sql.Composable] = [
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_STAGED_TYPES.get(c, "text"))) for c in STAGED_COLUMNS
    ]
    columns.append(sql.SQL("{} text DEFAULT {}").format(sql.Identifier(EXTERNAL_SOURCE), sql.Literal(source)))
    columns += [
        sql.SQL("{} text GENERATED ALWAYS AS ({}) STORED").format(
            sql.Identifier(KEY_COLUMNS[k]), KEY_EXPRESSIONS[KEY_COLUMNS[k]]
        )
        for k in keys
    ]
    # fuzzy_match: `match_id` is the candidate a flagged row is auto-merged into, not a lead sharing its key.
    cur.execute(
        sql.SQL(
            "CREATE TEMPORARY TABLE {} ({}, match_id bigint, fuzzy_match boolean NOT NULL DEFAULT false) ON COMMIT DROP"
        ).format(staging, sql.SQL(", ").join(columns))
    )
    cur.execute(
        """
        CREATE TEMPORARY TABLE outcomes (
            source_row integer PRIMARY KEY, lead_id bigint, action text NOT NULL,
            duplicate_of_row integer, survivor_row integer, changes jsonb
        ) ON COMMIT DROP
        """
    )
    # Rows whose match is looked up again in a round: they lost a race with another session in the one before.
    cur.execute(
        "CREATE TEMPORARY TABLE losers (round integer, source_row integer, PRIMARY KEY (round, source_row)) ON COMMIT DROP"
    )
