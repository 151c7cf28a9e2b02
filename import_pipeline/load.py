"""Load: one transaction that COPYs the file's leads into a private staging table, merges them into
`leads`, stores the rejected rows, and records the import, so a file is loaded entirely or not at all."""

import io
import json
import time

import dagster as dg
import polars as pl
import psycopg
from psycopg import sql

from import_pipeline.dedupe import EMAIL_KEY
from import_pipeline.parse import EXTRA_PREFIX, SOURCE_ROW
from import_pipeline.resources import LeadsDatabase
from import_pipeline.schema import CANONICAL_FIELDS
from import_pipeline.validate import NUL_SHOWN_AS

LEADS_ASSET = dg.AssetKey("leads")
PHONE_E164, EXTRA = "phone_e164", "extra"
STAGED_COLUMNS = (SOURCE_ROW, *CANONICAL_FIELDS, EMAIL_KEY, PHONE_E164, EXTRA)
_STAGED_TYPES = {SOURCE_ROW: "integer", EXTRA: "jsonb"}
COPY_SLICE_ROWS = 100_000


class CountsDoNotAddUp(Exception):
    """Rows read differ from the sum of their outcomes: a bug, so nothing is committed."""


def copy_frame(cur: psycopg.Cursor, table: sql.Composable, frame: pl.DataFrame) -> int:
    """COPY a frame's columns into `table` as CSV, slice by slice; returns the rows the server took."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        table, sql.SQL(", ").join(map(sql.Identifier, frame.columns))
    )
    with cur.copy(statement) as copy:
        for part in frame.iter_slices(COPY_SLICE_ROWS):
            buffer = io.BytesIO()
            part.write_csv(buffer, include_header=False)
            copy.write(buffer.getbuffer())
    return cur.rowcount


def _claim_import(cur: psycopg.Cursor, summary: dict, run_id: str) -> int | None:
    """Record the import; None when this partition or these bytes were imported already."""
    cur.execute(
        """
        INSERT INTO imports (partition_key, content_hash, run_id, source_file)
        VALUES (%s, %s, %s, %s)
        ON CONFLICT DO NOTHING
        RETURNING id
        """,
        (summary["partition_key"], summary["content_hash"], run_id, summary["source_file"]),
    )
    row = cur.fetchone()
    return row[0] if row else None


def earlier_import(cur: psycopg.Cursor, partition_key: str, content_hash: str) -> dict | None:
    """The committed import of this partition or of these bytes, if any."""
    cur.execute(
        "SELECT partition_key, run_id, counts FROM imports WHERE partition_key = %s OR content_hash = %s",
        (partition_key, content_hash),
    )
    row = cur.fetchone()
    return {"partition_key": row[0], "run_id": row[1], "counts": row[2]} if row else None


def staged_frame(leads: pl.DataFrame) -> pl.DataFrame:
    """The columns the staging table takes; unmapped `extra.*` columns become one JSON object per lead."""
    extras = [c for c in leads.columns if c.startswith(EXTRA_PREFIX)]
    extra = (
        pl.struct(pl.col(c).str.replace_all("\x00", NUL_SHOWN_AS, literal=True).alias(c.removeprefix(EXTRA_PREFIX)) for c in extras)
        .struct.json_encode()
        if extras
        else pl.lit(None, pl.String)
    )
    phone = pl.col(PHONE_E164) if PHONE_E164 in leads.columns else pl.lit(None, pl.String)
    return leads.select(SOURCE_ROW, *CANONICAL_FIELDS, EMAIL_KEY, phone.alias(PHONE_E164), extra.alias(EXTRA))


def _insert_new_leads(cur: psycopg.Cursor, staging: sql.Identifier, import_id: int, source_file: str) -> int:
    fields = sql.SQL(", ").join(map(sql.Identifier, STAGED_COLUMNS[1:]))
    cur.execute(
        sql.SQL(
            """
            INSERT INTO leads ({fields}, created_by_import, updated_by_import, source_file, source_row)
            SELECT {fields}, %(import_id)s, %(import_id)s, %(source_file)s, source_row
            FROM {staging}
            -- Key order keeps concurrent imports from locking the same keys in opposite orders.
            ORDER BY email_key, source_row
            ON CONFLICT (email_key) WHERE email_key IS NOT NULL AND deleted_at IS NULL DO NOTHING
            """
        ).format(fields=fields, staging=staging),
        {"import_id": import_id, "source_file": source_file},
    )
    return cur.rowcount


def check_conservation(counts: dict) -> None:
    """Every row read is inserted, updated, a duplicate or rejected; anything else is a bug."""
    outcomes = ("inserted", "updated", "rows_rejected", "duplicates_in_file", "duplicates_existing")
    total = sum(counts[k] for k in outcomes)
    if total != counts["rows_read"]:
        detail = ", ".join(f"{k}={counts[k]}" for k in outcomes)
        raise CountsDoNotAddUp(f"rows_read={counts['rows_read']} but {detail} add up to {total}")


def load_import(conn: psycopg.Connection, leads: pl.DataFrame, rejected: pl.DataFrame, summary: dict, run_id: str) -> dict:
    """Load one file's leads and rejects in one transaction; returns its counts.

    Loading a partition that is already committed changes nothing and returns the committed counts,
    with `already_imported_as` naming the partition that holds these bytes.
    """
    with conn.transaction(), conn.cursor() as cur:
        import_id = _claim_import(cur, summary, run_id)
        if import_id is None:
            earlier = earlier_import(cur, summary["partition_key"], summary["content_hash"])
            return earlier["counts"] | {"already_imported_as": earlier["partition_key"], "first_run_id": earlier["run_id"]}

        staging = sql.Identifier(f"staging_{run_id}")
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_STAGED_TYPES.get(c, "text")))
            for c in STAGED_COLUMNS
        )
        # A temporary table is private to this connection and vanishes with it, even if the run dies.
        cur.execute(sql.SQL("CREATE TEMPORARY TABLE {} ({}) ON COMMIT DROP").format(staging, columns))
        staged = copy_frame(cur, staging, staged_frame(leads))
        inserted = _insert_new_leads(cur, staging, import_id, summary["source_file"])
        stored_rejects = copy_frame(
            cur,
            sql.Identifier("rejected_rows"),
            rejected.select(pl.lit(import_id).alias("import_id"), SOURCE_ROW, "raw_values", "reasons"),
        )
        counts = {
            "rows_read": summary["rows_read"],
            "rows_valid": summary["rows_valid"],
            "rows_rejected": stored_rejects,
            "duplicates_in_file": summary["duplicates_in_file"],
            "duplicates_existing": staged - inserted,
            "inserted": inserted,
            "updated": 0,
        }
        check_conservation(counts)
        cur.execute("UPDATE imports SET counts = %s WHERE id = %s", (json.dumps(counts), import_id))
    return counts


@dg.op
def load(context: dg.OpExecutionContext, leads_db: LeadsDatabase, leads: pl.DataFrame, rejected: pl.DataFrame, summary: dict) -> dict:
    """Commit the file's new leads and rejected rows, and record the import in the `leads` asset."""
    started = time.perf_counter()
    with leads_db.connect() as conn:
        try:
            counts = load_import(conn, leads, rejected, summary, context.run_id)
        except CountsDoNotAddUp as e:
            raise dg.Failure(description=f"{summary['source_file']}: counts do not add up, nothing was loaded: {e}") from e
    seconds = summary["seconds"] | {"load": time.perf_counter() - started}
    result = summary | counts | {"seconds": seconds}
    if "already_imported_as" in counts and counts["already_imported_as"] != summary["partition_key"]:
        context.log.info(f"{summary['source_file']}: the same bytes were imported as {counts['already_imported_as']}; skipped")
        context.add_output_metadata({"skipped": True, "already_imported_as": counts["already_imported_as"]})
        return result | {"status": "skipped"}

    duration = sum(seconds.values())
    metadata = {
        **{k: counts[k] for k in ("rows_read", "rows_valid", "rows_rejected", "duplicates_in_file", "duplicates_existing", "inserted", "updated")},
        "duration_s": round(duration, 3),
        "rows_per_s": round(counts["rows_read"] / duration) if duration else 0,
        "source_file": dg.MetadataValue.path(summary["source_file"]),
        "content_hash": summary["content_hash"],
    }
    context.log_event(dg.AssetMaterialization(asset_key=LEADS_ASSET, partition=context.partition_key, metadata=metadata))
    context.add_output_metadata(metadata)
    return result | {"status": "success"}
