"""Launch: import one file through the import job on the Dagster instance, outside the sensor."""

import os
from pathlib import Path

import dagster as dg
import psutil
import psycopg

from import_pipeline.config import DATABASE_URL_ENV
from import_pipeline.definitions import resolved_import_leads_job
from import_pipeline.history import COUNT_KEYS, import_summary
from import_pipeline.landing import content_hash, landed_files_partitions_def, partition_key
from import_pipeline.load import earlier_import


def _with_source_path(run_config: dict, path: Path) -> dict:
    ops = dict(run_config.get("ops", {}))
    parse = dict(ops.get("parse", {}))
    parse["config"] = {**parse.get("config", {}), "source_path": str(path)}
    return {**run_config, "ops": {**ops, "parse": parse}}


def import_file(path: Path, run_config: dict | None = None) -> dict:
    """Import `path` as its own partition and return the import's summary (see `history.import_summary`).

    Bytes imported before, under any name, are not imported again: the summary says `skipped`.
    """
    path = path.resolve()
    if not path.is_file():
        return {"run_id": None, "partition_key": None, "status": "failed", **dict.fromkeys(COUNT_KEYS),
                "error": f"{path}: no such file"}
    digest = content_hash(path)
    key = partition_key(path.name, digest)
    with psycopg.connect(os.environ[DATABASE_URL_ENV]) as conn, conn.cursor() as cur:
        earlier = earlier_import(cur, key, digest)
    if earlier:
        return {
            "run_id": earlier["run_id"],
            "partition_key": key,
            "status": "skipped",
            **{k: earlier["counts"].get(k) for k in COUNT_KEYS},
            "already_imported_as": earlier["partition_key"],
            "error": None,
        }
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(landed_files_partitions_def.name, [key])
        with dg.execute_job(
            dg.reconstructable(resolved_import_leads_job),
            instance=instance,
            run_config=_with_source_path(run_config or {}, path),
            tags={"dagster/partition": key, "import_pipeline/source_file": path.name},
        ) as result:
            run_id = result.run_id
        return import_summary(instance, run_id)


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records:
        pid = record.event_log_entry.dagster_event.engine_event_data.metadata.get("pid")
        if pid is not None:
            return int(pid.value)
    return None


def fail_if_process_died(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRun:
    """Mark a run failed when it claims to be running but its process is gone (killed, machine restarted)."""
    if run.status not in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING):
        return run
    pid = _worker_pid(instance, run.run_id)
    if pid is None or psutil.pid_exists(pid):
        return run
    instance.report_run_failed(run, message=f"the run's process (pid {pid}) is gone: it was killed or crashed")
    return instance.get_run_by_id(run.run_id)


def reexecute_from_failure(run_id: str) -> dict:
    """Re-execute a failed import from its failed step, as the UI's "Re-execute from failure" does.

    The child run keeps the parent's tags (its partition among them); steps that succeeded are not
    run again, their outputs are reloaded from the parent run.
    """
    with dg.DagsterInstance.get() as instance:
        parent = instance.get_run_by_id(run_id)
        if parent is None:
            raise ValueError(f"no run {run_id}")
        parent = fail_if_process_died(instance, parent)
        if parent.status != dg.DagsterRunStatus.FAILURE:
            raise ValueError(f"run {run_id} is {parent.status.value.lower()}, not failed: nothing to re-execute")
        with dg.execute_job(
            dg.reconstructable(resolved_import_leads_job),
            instance=instance,
            reexecution_options=dg.ReexecutionOptions.from_failure(run_id, instance),
            tags=parent.tags,
        ) as result:
            child_id = result.run_id
        return import_summary(instance, child_id)
