"""Cleanup: a nightly job that removes what outlived its retention; a dry run only counts."""

import datetime
import shutil
import time
from pathlib import Path

import dagster as dg
from psycopg import sql
from pydantic import Field

from import_pipeline.config import dagster_dir
from import_pipeline.database import LeadsDatabase
from import_pipeline.landing import LANDED_FILES
from import_pipeline.state import StateFolder

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


class CleanupConfig(dg.Config):
    """What the nightly cleanup keeps."""

    retention_days: int = Field(default=90, description="Anything older is removed.")
    dry_run: bool = Field(default=False, description="Count what would be removed; remove nothing.")


# Names listed per kind in the metadata: a run's metadata stays small after a year of nightly files.
MAX_NAMES = 100


def _old_files(folder: Path, cutoff: float, dry_run: bool) -> list[Path]:
    """Delete (or list) files under `folder` last modified before `cutoff`; links are removed, never followed."""
    old = [p for p in folder.rglob("*") if p.is_file() and p.lstat().st_mtime < cutoff] if folder.is_dir() else []
    if not dry_run:
        for path in old:
            path.unlink()
    return sorted(old)


def _old_rejected_rows(conn, days: int, dry_run: bool) -> dict[str, int]:
    """Rejected rows of imports older than the retention, counted per import (partition key)."""
    past_retention = "i.id = r.import_id AND i.imported_at < now() - make_interval(days => %s)"
    if dry_run:
        query = sql.SQL(
            "SELECT i.partition_key, count(*) FROM rejected_rows r JOIN imports i ON {past} GROUP BY 1 ORDER BY 1"
        )
    else:
        query = sql.SQL(
            "WITH gone AS (DELETE FROM rejected_rows r USING imports i WHERE {past} RETURNING i.partition_key) "
            "SELECT partition_key, count(*) FROM gone GROUP BY 1 ORDER BY 1"
        )
    return dict(conn.execute(query.format(past=sql.SQL(past_retention)), (days,)).fetchall())


def _listed(names: list[str]) -> list[str]:
    """At most MAX_NAMES names, then how many more."""
    more = [f"... and {len(names) - MAX_NAMES:,} more"] if len(names) > MAX_NAMES else []
    return names[:MAX_NAMES] + more


def _finished_runs_before(instance: dg.DagsterInstance, cutoff: float) -> list[dg.RunRecord]:
    before = datetime.datetime.fromtimestamp(cutoff, tz=datetime.UTC)
    return list(instance.get_run_records(filters=dg.RunsFilter(statuses=FINISHED, updated_before=before)))


@dg.op
def clean_up(
    context: dg.OpExecutionContext, config: CleanupConfig, leads_db: LeadsDatabase, state: StateFolder
) -> dict:
    """Remove processed, quarantined and report files, rejected rows, run storage and partitions past retention."""
    # Only what the pipeline made. No table is dropped by name: the load's staging tables are temporary
    # (staging.create_work_tables) and end with its session, and a `staging_*` table is someone else's.
    cutoff = time.time() - config.retention_days * 86_400
    dry = config.dry_run
    home = Path(state.home).resolve()
    files = {
        "processed_files_deleted": _old_files(state.processed_path, cutoff, dry),
        "quarantined_files_deleted": _old_files(state.quarantine_path, cutoff, dry),
        "reports_deleted": _old_files(state.reports_path, cutoff, dry),
    }
    removed = {kind: _listed([str(p.relative_to(home)) for p in paths]) for kind, paths in files.items()}
    counts = {kind: len(paths) for kind, paths in files.items()}
    with leads_db.connect() as conn:
        rejected = _old_rejected_rows(conn, config.retention_days, dry)
    counts["rejected_rows_deleted"] = sum(rejected.values())
    removed["rejected_rows_deleted"] = _listed([f"{key}: {n:,} rows" for key, n in rejected.items()])
    storage = dagster_dir(home) / "storage"
    finished = _finished_runs_before(context.instance, cutoff)
    run_dirs = [storage / r.dagster_run.run_id for r in finished if (storage / r.dagster_run.run_id).is_dir()]
    if not dry:
        for folder in run_dirs:
            shutil.rmtree(folder)
    counts["run_storage_deleted"] = len(run_dirs)
    removed["run_storage_deleted"] = _listed([str(folder.relative_to(home)) for folder in sorted(run_dirs)])
    # A partition goes once its newest run finished before the cutoff; its runs stay in Dagster's records.
    stale = []
    for key in context.instance.get_dynamic_partitions(LANDED_FILES):
        latest = context.instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/partition": key}), limit=1)
        if latest and latest[0].dagster_run.status in FINISHED and latest[0].update_timestamp.timestamp() < cutoff:
            stale.append(key)
    if not dry:
        for key in stale:
            context.instance.delete_dynamic_partition(LANDED_FILES, key)
    counts["partitions_deleted"] = len(stale)
    removed["partitions_deleted"] = _listed(sorted(stale))
    context.add_output_metadata(
        counts
        | {
            "removed": dg.MetadataValue.json(removed),
            "dry_run": dry,
            "retention_days": config.retention_days,
        }
    )
    return counts


@dg.job
def cleanup_job():
    """Remove everything older than the retention (default 90 days)."""
    clean_up()


cleanup_schedule = dg.ScheduleDefinition(
    name="cleanup_schedule", job=cleanup_job, cron_schedule="0 3 * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)
