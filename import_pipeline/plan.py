"""Plan: what a load would change, field by field, written before its transaction is rolled back."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
from psycopg import sql

from import_pipeline.report import FORMULA_START
from import_pipeline.schema import COUNT_KEYS

SAMPLE_CHANGES = 20
PLAN_COLUMNS = ("line", "lead_id", "action", "field", "old_value", "new_value")


def spreadsheet_safe(value: str) -> sql.Composed:
    """A SQL text expression quoted as the reject report quotes cells: a value starting a formula gets a `'`."""
    # The report opens in spreadsheets like the reject report: a value starting a formula is quoted.
    return sql.SQL("CASE WHEN ({v}) ~ {start} THEN '''' || ({v}) ELSE ({v}) END").format(
        v=sql.SQL(value), start=sql.Literal(FORMULA_START)
    )


# Each changed field of each updated or merged lead, in the order of the file's lines (the load's
# `outcomes` table holds every row's outcome and, for `update`/`merge`, each field's old and new value).
_CHANGES = sql.SQL(
    """
    SELECT o.source_row AS line, o.lead_id, o.action, c.key AS field,
           {old} AS old_value, {new} AS new_value
    FROM outcomes o CROSS JOIN LATERAL jsonb_each(o.changes) c
    WHERE o.changes IS NOT NULL
    ORDER BY o.source_row, c.key
    """
).format(old=spreadsheet_safe("c.value->>'old'"), new=spreadsheet_safe("c.value->>'new'"))


def report_from_query(
    cur: psycopg.Cursor, query: sql.Composable, path: Path, columns: Sequence[str], first: int
) -> tuple[int, list[dict[str, Any]]]:
    """Write every row of `query` (which ends in ORDER BY) to the CSV `path`; return how many, and the first ones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        out.write("\ufeff".encode())  # the byte-order mark makes Excel read the file as UTF-8
        with cur.copy(sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER)").format(query)) as copy:
            for data in copy:
                out.write(data)
    total = cur.rowcount  # COPY's own count of the rows it wrote
    cur.execute(sql.SQL("{} LIMIT {}").format(query, sql.Literal(first)))
    return total, [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


def markdown_table(header: str, columns: Sequence[str], rows: list[dict[str, Any]]) -> list[str]:
    """The lines of a markdown table: `header` (`| a | b |`, numbers right-aligned by `---:`), one line per row."""
    align = ["---:" if name in ("line", "lead_id") else "---" for name in columns]
    lines = [header, "| " + " | ".join(align) + " |"]
    return lines + ["| " + " | ".join(markdown_cell(row[c]) for c in columns) + " |" for row in rows]


class PlanReport:
    """The plan of one import: every field change in a CSV beside the reject report, the first ones in metadata."""

    def __init__(self, path: Path):
        self.path = path
        self.changes = 0
        self.sample: list[dict[str, Any]] = []

    def write(self, cur: psycopg.Cursor) -> None:
        """Write the plan from the load's work tables, inside its transaction (before the rollback)."""
        self.changes, self.sample = report_from_query(cur, _CHANGES, self.path, PLAN_COLUMNS, SAMPLE_CHANGES)

    def record(self) -> dict[str, Any]:
        """The plan's part of the import's record (JSON-ready)."""
        return {"planned": True, "planned_changes": self.changes, "plan_report": str(self.path), "changes": self.sample}


def markdown_cell(value: Any) -> str:
    """A value as one cell of a markdown table."""
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def changes_markdown(sample: list[dict[str, Any]], total: int) -> dg.MarkdownMetadataValue:
    """The first planned field changes as a markdown table."""
    lines = markdown_table("| line | lead | action | field | old value | new value |", PLAN_COLUMNS, sample)
    if total > len(sample):
        lines.append(f"\n{len(sample)} of {total:,} field changes; every one is in the plan report.")
    elif not sample:
        lines = ["No existing lead would change."]
    return dg.MetadataValue.md("\n".join(lines))


def latest_plan(instance: dg.DagsterInstance, asset: dg.AssetKey, partition: str) -> tuple[str, dict[str, int]] | None:
    """The run and counts of the partition's newest plan (an observation of the asset), if any."""
    records = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[partition]), limit=20
    ).records
    for record in records:  # newest first; reverts and declines are observations too
        metadata = record.asset_observation.metadata if record.asset_observation else {}
        if "planned" in metadata:
            return record.run_id, {k: int(str(metadata[k].value)) for k in COUNT_KEYS if k in metadata}
    return None


def plan_difference(planned: dict[str, int], committed: dict[str, int]) -> dict[str, dict[str, int]]:
    """Each count the commit reached differently from the plan: {count: {planned, committed}}."""
    return {
        k: {"planned": planned.get(k, 0), "committed": committed.get(k, 0)}
        for k in COUNT_KEYS
        if planned.get(k, 0) != committed.get(k, 0)
    }
