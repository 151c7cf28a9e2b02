"""History: what each import did, read back from Dagster's run records and the load step's metadata."""

from typing import Any

import dagster as dg

from import_pipeline.approval import decline_import_job
from import_pipeline.jobs import approve_import_job, import_leads_job
from import_pipeline.load import REPLACES_RUN_TAG
from import_pipeline.possible_duplicates import DUPLICATE_COUNTS
from import_pipeline.revert import revert_import_job
from import_pipeline.schema import COUNT_KEYS, REVERT_COUNTS


def step_name(step_key: str) -> str:
    """The op a step runs: `load` for the `leads` asset's step `leads.load`."""
    return step_key.rsplit(".", 1)[-1]


# Imports are runs of the import job, or of the job the asset catalog's Materialize launches (Dagster's
# implicit job of every asset: here `leads` alone).
IMPORT_JOBS = (import_leads_job.name, "__ASSET_JOB", approve_import_job.name)


def is_import(run: dg.DagsterRun) -> bool:
    """Whether `run` imports a file (a run of an import job with a partition)."""
    return run.job_name in IMPORT_JOBS and "dagster/partition" in run.tags


_STATUS = {dg.DagsterRunStatus.SUCCESS: "success", dg.DagsterRunStatus.FAILURE: "failed"}


def _step_metadata(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict]:
    """Each step's output metadata, its outputs' together, by the step's op name (`load` for `leads.load`)."""
    found: dict[str, dict] = {}
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT).records:
        event = record.event_log_entry.get_dagster_event()
        found.setdefault(step_name(event.step_key or ""), {}).update(
            {k: v.value for k, v in event.step_output_data.metadata.items()}
        )
    return found


def _first_error(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The root cause of the first failed step, on one line; our own `dg.Failure`s without their class."""
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records:
        error = record.event_log_entry.get_dagster_event().step_failure_data.error
        if error is None:
            continue
        # Our Failures carry the user-facing wording; for anything else the root cause is what matters.
        while error.cause is not None and error.cls_name != dg.Failure.__name__:
            error = error.cause
        message = error.message.removeprefix(f"{dg.Failure.__module__}.{dg.Failure.__name__}: ")
        return " ".join(message.split())
    return None


def _reject_report(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """The run's reject report: its validate step's, or that of the run it re-executed (which validated)."""
    current: dg.DagsterRun | None = run
    while current is not None:
        report = _step_metadata(instance, current.run_id).get("validate", {}).get("reject_report")
        if report or current.parent_run_id is None:
            return report
        current = instance.get_run_by_id(current.parent_run_id)
    return None


def import_summary(instance: dg.DagsterInstance, run_id: str) -> dict:
    """One import as a flat record: run, partition, status, counts, duration and the first error."""
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        raise ValueError(f"no run {run_id}")
    run = record.dagster_run
    steps = _step_metadata(instance, run_id)
    # The last step's record names where the file is now (processed/...); a run that failed after the load
    # still has the load's.
    metadata = steps.get("archive_file") or steps.get("load", {})
    status = _STATUS.get(run.status, run.status.value.lower())
    if status == "success" and metadata.get("skipped"):
        status = "skipped"
    if status == "success" and metadata.get("planned"):
        # Nothing committed: the plan report says what a load would change.
        status = "awaiting approval" if metadata.get("awaiting_approval") else "planned"
    error = _first_error(instance, run_id) if status == "failed" else None
    if status == "failed" and error is None:
        error = "the run failed before any step reported an error; see its logs in the Dagster UI"
    return {
        "run_id": run_id,
        "partition_key": run.tags.get("dagster/partition"),
        "status": status,
        **{k: metadata.get(k) for k in COUNT_KEYS},
        **{k: metadata[k] for k in DUPLICATE_COUNTS if k in metadata},
        "duration_s": metadata.get("duration_s"),
        "step_seconds": metadata.get("step_seconds"),
        "load_seconds": metadata.get("load_seconds"),
        "source_file": metadata.get("source_file"),
        "already_imported_as": metadata.get("already_imported_as"),
        "reject_report": _reject_report(instance, run),
        "plan_report": metadata.get("plan_report"),
        # Imported again after a revert: the run of the import this one replaces.
        "replaces_run_id": run.tags.get(REPLACES_RUN_TAG),
        "plan_difference": metadata.get("plan_difference"),
        "started_at": record.start_time,
        "error": error,
        # The parse step's too: a run that fails later (too many invalid rows) warned of garbled values before.
        "warnings": metadata.get("warnings") or steps.get("parse", {}).get("warnings") or [],
    }


def _action_summary(instance: dg.DagsterInstance, run_id: str, action: str, done: str) -> tuple[dict, dict]:
    """A run of one op (`revert`, `decline`) as a flat record, and that op's output metadata."""
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        raise ValueError(f"no run {run_id}")
    run = record.dagster_run
    status = done if run.status == dg.DagsterRunStatus.SUCCESS else _STATUS.get(run.status, "failed")
    summary: dict[str, Any] = {
        "run_id": run_id,
        "partition_key": run.tags.get("dagster/partition"),
        "status": status,
        "action": action,
        "started_at": record.start_time,
        "duration_s": (record.end_time - record.start_time) if record.end_time and record.start_time else None,
        "error": _first_error(instance, run_id) if status == "failed" else None,
        "warnings": [],
    }
    return summary, _step_metadata(instance, run_id).get(action, {})


def revert_summary(instance: dg.DagsterInstance, run_id: str) -> dict:
    """One revert as a flat record: run, partition, status (reverted or failed), what it did, the import it reverted."""
    summary, metadata = _action_summary(instance, run_id, "revert", "reverted")
    return summary | {
        **{k: metadata.get(k) for k in REVERT_COUNTS},
        "already_reverted": metadata.get("already_reverted"),
        "reverted_run_id": metadata.get("reverted_run_id"),
        "revert_report": metadata.get("revert_report"),
    }


def decline_summary(instance: dg.DagsterInstance, run_id: str) -> dict:
    """One declined import: run, partition, status (declined or failed), the reason and where the file went."""
    summary, metadata = _action_summary(instance, run_id, "decline", "declined")
    return summary | {"reason": metadata.get("reason"), "source_file": metadata.get("moved_to") or None}


def import_history(instance: dg.DagsterInstance, limit: int = 20) -> list[dict]:
    """The most recent imports, reverts and declines, newest first."""
    records = sorted(
        (
            record
            for job in (*IMPORT_JOBS, revert_import_job.name, decline_import_job.name)
            for record in instance.get_run_records(filters=dg.RunsFilter(job_name=job), limit=limit)
        ),
        key=lambda record: record.create_timestamp,
        reverse=True,
    )[:limit]
    summaries = {revert_import_job.name: revert_summary, decline_import_job.name: decline_summary}
    rows = [summaries.get(r.dagster_run.job_name, import_summary)(instance, r.dagster_run.run_id) for r in records]
    # Newest first: the first row of a partition is its latest outcome (a failed run retried since says so).
    latest: dict[str, dict] = {}
    for row in rows:
        latest.setdefault(row["partition_key"], row)
        row["latest_status"] = latest[row["partition_key"]]["status"]
        row["latest_run_id"] = latest[row["partition_key"]]["run_id"]
    return rows
