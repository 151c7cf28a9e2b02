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


def _old_files(folder: Path, cutoff: float, dry_run: bool) -> int:
    """Delete (or count) files under `folder` last modified before `cutoff`."""
    old = [p for p in folder.rglob("*") if p.is_file() and p.stat().st_mtime < cutoff] if folder.is_dir() else []
    if not dry_run:
        for path in old:
            path.unlink()
    return len(old)


def _old_rejected_rows(conn, days: int, dry_run: bool) -> int:
    """Rejected rows of imports older than the retention."""
    if dry_run:
        return conn.execute(
            "SELECT count(*) FROM rejected_rows r JOIN imports i ON i.id = r.import_id "
            "WHERE i.imported_at < now() - make_interval(days => %s)",
            (days,),
        ).fetchone()[0]
    return conn.execute(
        "DELETE FROM rejected_rows r USING imports i "
        "WHERE i.id = r.import_id AND i.imported_at < now() - make_interval(days => %s)",
        (days,),
    ).rowcount


def _leftover_staging_tables(conn, dry_run: bool) -> int:
    """Real tables named staging_*; the load's own staging tables are temporary and vanish with their session."""
    names = [
        row[0]
        for row in conn.execute(
            r"SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'staging\_%'"
        )
    ]
    if not dry_run:
        for name in names:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
    return len(names)


def _finished_runs_before(instance: dg.DagsterInstance, cutoff: float) -> list[dg.RunRecord]:
    before = datetime.datetime.fromtimestamp(cutoff, tz=datetime.UTC)
    return list(instance.get_run_records(filters=dg.RunsFilter(statuses=FINISHED, updated_before=before)))


@dg.op
def clean_up(
    context: dg.OpExecutionContext, config: CleanupConfig, leads_db: LeadsDatabase, state: StateFolder
) -> dict:
    """Remove processed, quarantined and report files, rejected rows, run storage and partitions past retention."""
    cutoff = time.time() - config.retention_days * 86_400
    dry = config.dry_run
    counts = {
        "processed_files_deleted": _old_files(state.processed_path, cutoff, dry),
        "quarantined_files_deleted": _old_files(state.quarantine_path, cutoff, dry),
        "reports_deleted": _old_files(state.reports_path, cutoff, dry),
    }
    with leads_db.connect() as conn:
        counts["rejected_rows_deleted"] = _old_rejected_rows(conn, config.retention_days, dry)
        counts["staging_tables_dropped"] = _leftover_staging_tables(conn, dry)
    storage = dagster_dir(Path(state.home).resolve()) / "storage"
    finished = _finished_runs_before(context.instance, cutoff)
    run_dirs = [storage / r.dagster_run.run_id for r in finished if (storage / r.dagster_run.run_id).is_dir()]
    if not dry:
        for folder in run_dirs:
            shutil.rmtree(folder)
    counts["run_storage_deleted"] = len(run_dirs)
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
    context.add_output_metadata(counts | {"dry_run": dry, "retention_days": config.retention_days})
    return counts


@dg.job
def cleanup_job():
    """Remove everything older than the retention (default 90 days)."""
    clean_up()


cleanup_schedule = dg.ScheduleDefinition(
    name="cleanup_schedule", job=cleanup_job, cron_schedule="0 3 * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)
