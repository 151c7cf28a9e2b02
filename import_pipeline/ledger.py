"""Ledger: the `imports` table, which records each committed import once, with counts that must add up."""

import psycopg

from import_pipeline.schema import OUTCOME_COUNTS
from import_pipeline.summary import FileSummary


class CountsDoNotAddUp(Exception):
    """Rows read differ from the sum of their outcomes: a bug, so nothing is committed."""


def earlier_import(cur: psycopg.Cursor, partition_key: str, content_hash: str, sheet: str | None = "") -> dict | None:
    """The committed import of this partition or of these bytes (this sheet of them), if any.

    `sheet` None: the sheet is not known yet, so only the partition is looked for.
    """
    cur.execute(
        """
        SELECT partition_key, run_id, counts FROM imports
        WHERE partition_key = %(key)s OR (content_hash = %(hash)s AND sheet = %(sheet)s)
        ORDER BY partition_key = %(key)s DESC
        LIMIT 1
        """,
        {"key": partition_key, "hash": content_hash, "sheet": sheet},
    )
    row = cur.fetchone()
    return {"partition_key": row[0], "run_id": row[1], "counts": row[2]} if row else None


def claim_import(cur: psycopg.Cursor, summary: FileSummary, run_id: str) -> int | None:
    """Record the import; None when this partition or these bytes were imported already."""
    cur.execute(
        """
        INSERT INTO imports (partition_key, content_hash, sheet, run_id, source_file)
        VALUES (%s, %s, %s, %s, %s)
        ON CONFLICT DO NOTHING
        RETURNING id
        """,
        (summary.partition_key, summary.content_hash, summary.sheet, run_id, summary.source_file),
    )
    row = cur.fetchone()
    return row[0] if row else None


def check_conservation(counts: dict) -> None:
    """Every row read is inserted, updated, merged, created, a duplicate or rejected; anything else is a bug."""
    outcomes = ("rows_rejected", *OUTCOME_COUNTS.values())
    total = sum(counts.get(k, 0) for k in outcomes)
    if total != counts["rows_read"]:
        detail = ", ".join(f"{k}={counts.get(k, 0)}" for k in outcomes)
        raise CountsDoNotAddUp(f"rows_read={counts['rows_read']} but {detail} add up to {total}")
