"""Checks of each import, shown per partition in the `leads` asset's Checks tab: read back from what was committed.

They are evaluated by the asset's last step (`archive_file`), not as steps of their own: two more steps cost
0.22 s of every import's 1.4 s (measured on the suite's 20-row file), for checks that take milliseconds.
"""

import warnings

import dagster as dg
import psycopg

from import_pipeline.database import LeadsDatabase
from import_pipeline.landing import landed_files_partitions_def
from import_pipeline.ledger import earlier_import
from import_pipeline.schema import OUTCOME_COUNTS
from import_pipeline.summary import LoadResult

DEFAULT_REJECT_WARNING = 0.05
ROWS_CONSERVED, REJECT_RATE = "rows_conserved", "reject_rate"

# A check per partition (per import) is a preview feature of Dagster 1.13; its warning would reach every
# command's terminal.
warnings.filterwarnings(
    "ignore", category=dg.PreviewWarning, message="Specifying a partitions_def on an AssetCheckSpec"
)

IMPORT_CHECKS = (
    dg.AssetCheckSpec(
        ROWS_CONSERVED,
        asset="leads",
        partitions_def=landed_files_partitions_def,
        description="Every row read has exactly one committed outcome: rows read = rejected + inserted + updated "
        "+ ... (counted in the tables).",
    ),
    dg.AssetCheckSpec(
        REJECT_RATE,
        asset="leads",
        partitions_def=landed_files_partitions_def,
        description="The share of the file's rows rejected stays at or below the warning threshold "
        "(a warning, not a failure of the import).",
    ),
)


def committed_counts(cur: psycopg.Cursor, result: LoadResult) -> tuple[str, dict[str, int]] | None:
    """The import's partition and its counts as the tables hold them now (rows rejected and each outcome's rows)."""
    summary = result.summary
    earlier = earlier_import(cur, summary.partition_key, summary.content_hash, summary.sheet)
    if earlier is None:
        return None
    cur.execute(
        """
        SELECT action, count(*) FROM import_outcomes WHERE import_id = %(id)s GROUP BY action
        UNION ALL
        SELECT 'rejected', count(*) FROM rejected_rows WHERE import_id = %(id)s
        """,
        {"id": earlier["id"]},
    )
    rows: dict[str, int] = dict(cur.fetchall())
    counts = {count: rows.get(action, 0) for action, count in OUTCOME_COUNTS.items()}
    counts["rows_rejected"] = rows.get("rejected", 0)
    counts["rows_read"] = int(earlier["counts"].get("rows_read", 0))
    return earlier["partition_key"], counts


def rows_conserved(leads_db: LeadsDatabase, result: LoadResult) -> dg.AssetCheckResult:
    """Whether the rows read equal the outcomes committed for them, counted in the tables."""
    with leads_db.connect() as conn, conn.cursor() as cur:
        found = committed_counts(cur, result)
    if found is None:
        return dg.AssetCheckResult(
            check_name=ROWS_CONSERVED, passed=False, description="no committed import of this file in `imports`"
        )
    partition, counts = found
    outcomes = sum(n for key, n in counts.items() if key != "rows_read")
    passed = outcomes == counts["rows_read"]
    summary = f"{counts['rows_read']:,} rows read, {outcomes:,} committed outcomes"
    return dg.AssetCheckResult(
        check_name=ROWS_CONSERVED,
        passed=passed,
        description=summary if passed else f"{summary}: {counts['rows_read'] - outcomes:+,} rows unaccounted for",
        metadata={**counts, "outcomes": outcomes, "import": partition},
    )


def reject_rate(result: LoadResult, warn_above: float) -> dg.AssetCheckResult:
    """Whether the share of the file's rows rejected stays at or below `warn_above`; a warning when not."""
    read, rejected = result.counts.get("rows_read", 0), result.counts.get("rows_rejected", 0)
    rate = rejected / read if read else 0.0
    return dg.AssetCheckResult(
        check_name=REJECT_RATE,
        passed=rate <= warn_above,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{rejected:,} of {read:,} rows rejected ({rate:.1%}; warning above {warn_above:.0%})",
        metadata={"rows_read": read, "rows_rejected": rejected, "reject_rate": round(rate, 4)},
    )
