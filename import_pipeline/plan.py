"""Plan: what a load would change, field by field, written before its transaction is rolled back."""

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


class PlanReport:
    """The plan of one import: every field change in a CSV beside the reject report, the first ones in metadata."""

    def __init__(self, path: Path):
        self.path = path
        self.changes = 0
        self.sample: list[dict[str, Any]] = []

    def write(self, cur: psycopg.Cursor) -> None:
        """Write the plan from the load's work tables, inside its transaction (before the rollback)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("wb") as out:
            out.write("\ufeff".encode())  # the byte-order mark makes Excel read the file as UTF-8
            with cur.copy(sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER)").format(_CHANGES)) as copy:
                for data in copy:
                    out.write(data)
        cur.execute(sql.SQL("SELECT count(*) FROM ({}) c").format(_CHANGES))
        row = cur.fetchone()
        self.changes = int(row[0]) if row else 0
        cur.execute(sql.SQL("{} LIMIT {}").format(_CHANGES, sql.Literal(SAMPLE_CHANGES)))
        self.sample = [dict(zip(PLAN_COLUMNS, values, strict=True)) for values in cur.fetchall()]

    def record(self) -> dict[str, Any]:
        """The plan's part of the import's record (JSON-ready)."""
        return {"planned": True, "planned_changes": self.changes, "plan_report": str(self.path), "changes": self.sample}


def markdown_cell(value: Any) -> str:
    """A value as one cell of a markdown table."""
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def changes_markdown(sample: list[dict[str, Any]], total: int) -> dg.MarkdownMetadataValue:
    """The first planned field changes as a markdown table."""
    lines = ["| line | lead | action | field | old value | new value |", "| ---: | ---: | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(markdown_cell(change[c]) for c in PLAN_COLUMNS) + " |" for change in sample]
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
