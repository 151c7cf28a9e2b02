"""Ledger: the `imports` table, which records each committed import once, with counts that must add up."""

import psycopg

from import_pipeline.schema import OUTCOME_COUNTS
from import_pipeline.summary import FileSummary


class CountsDoNotAddUp(Exception):
    """Rows read differ from the sum of their outcomes: a bug, so nothing is committed."""


def earlier_import(cur: psycopg.Cursor, partition_key: str, content_hash: str, sheet: str | None = "") -> dict | None:
    """The committed, not reverted import of this partition or of these bytes (this sheet of them), if any.

    `sheet` None: the sheet is not known yet, so only the partition is looked for.
    """
    cur.execute(
        """
        SELECT id, partition_key, run_id, counts FROM imports
        WHERE reverted_at IS NULL AND (partition_key = %(key)s OR (content_hash = %(hash)s AND sheet = %(sheet)s))
        ORDER BY partition_key = %(key)s DESC
        LIMIT 1
        """,
        {"key": partition_key, "hash": content_hash, "sheet": sheet},
    )
    row = cur.fetchone()
    return {"id": row[0], "partition_key": row[1], "run_id": row[2], "counts": row[3]} if row else None


def latest_import(cur: psycopg.Cursor, partition_key: str) -> dict | None:
    """The partition's newest import, reverted or not."""
    cur.execute(
        "SELECT id, run_id, counts, reverted_at, xids FROM imports WHERE partition_key = %s ORDER BY id DESC LIMIT 1",
        (partition_key,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return {"id": row[0], "run_id": row[1], "counts": row[2], "reverted_at": row[3], "xids": row[4]}


def claim_import(cur: psycopg.Cursor, summary: FileSummary, run_id: str) -> tuple[int, str | None] | None:
    """Record the import: its id, and the run of the reverted import of this partition it imports again, if
    any; None when this partition or these bytes were imported already (and not reverted)."""
    cur.execute(
        """
        INSERT INTO imports (partition_key, content_hash, sheet, run_id, source_file, replaces_import)
        VALUES (%(key)s, %(hash)s, %(sheet)s, %(run_id)s, %(source_file)s, (
            SELECT max(id) FROM imports WHERE partition_key = %(key)s AND reverted_at IS NOT NULL
        ))
        ON CONFLICT DO NOTHING
        RETURNING id, (SELECT run_id FROM imports r WHERE r.id = imports.replaces_import)
        """,
        {
            "key": summary.partition_key,
            "hash": summary.content_hash,
            "sheet": summary.sheet,
            "run_id": run_id,
            "source_file": summary.source_file,
        },
    )
    row = cur.fetchone()
    return (row[0], row[1]) if row else None


def record_xids(cur: psycopg.Cursor, import_id: int, savepoint_xid: int | None) -> None:
    """Remember the transaction ids this load writes leads under: its own, and its savepoint's (`xmin` of the
    leads the savepoint inserted) when it inserted any."""
    cur.execute(
        """
        UPDATE imports SET xids = array_remove(ARRAY[pg_current_xact_id()::text::bigint %% 4294967296, %s], NULL)
        WHERE id = %s
        """,
        (savepoint_xid, import_id),
    )


def check_conservation(counts: dict) -> None:
    """Every row read is inserted, updated, merged, created, a duplicate or rejected; anything else is a bug."""
    outcomes = ("rows_rejected", *OUTCOME_COUNTS.values())
    total = sum(counts.get(k, 0) for k in outcomes)
    if total != counts["rows_read"]:
        detail = ", ".join(f"{k}={counts.get(k, 0)}" for k in outcomes)
        raise CountsDoNotAddUp(f"rows_read={counts['rows_read']} but {detail} add up to {total}")
