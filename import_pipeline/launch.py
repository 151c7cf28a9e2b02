"""Launch: import one file through the import job on the Dagster instance, outside the sensor."""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import psycopg
from dagster._core.execution.api import create_execution_plan, execute_run
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.remote_origin import ManagedGrpcPythonEnvCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from import_pipeline.config import CODE_LOCATION, DATABASE_URL_ENV, HOME_ENV, PROJECT_ROOT, home_dir
from import_pipeline.definitions import resolved_import_leads_job, resolved_revert_import_job
from import_pipeline.formats import FileRejected, detect_format
from import_pipeline.history import import_summary, revert_summary
from import_pipeline.landing import LANDED_FILES, content_hash, partition_key
from import_pipeline.ledger import earlier_import
from import_pipeline.revert import revert_import_job
from import_pipeline.run_config import check_against_job, job_run_config, short_form
from import_pipeline.schema import COUNT_KEYS
from import_pipeline.state import StateFolder


def _with_source_path(run_config: Mapping[str, Any], path: Path) -> dict:
    ops = short_form(run_config)
    parse = dict(ops.get("parse") or {})
    parse["config"] = {**(parse.get("config") or {}), "source_path": str(path)}
    return job_run_config({**run_config, "ops": {**ops, "parse": parse}})


def _remote_origin(job_name: str) -> RemoteJobOrigin:
    """The origin runs launched by the UI or a sensor carry (workspace.yaml's code location).

    The UI's "Re-execute" looks the job up by it; `dg.execute_job` leaves it empty.
    """
    location = ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(module_name="import_pipeline.definitions", working_directory=str(PROJECT_ROOT)),
        CODE_LOCATION,
    )
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), job_name)


def run_here(
    instance: dg.DagsterInstance,
    run_config: Mapping[str, Any],
    tags: Mapping[str, str],
    parent: dg.DagsterRun | None = None,
    resolved_job=resolved_import_leads_job,
) -> str:
    """Run the import job (or `resolved_job`) in this process, as a run the UI can re-execute; from the failed
    step when `parent` is given."""
    job = dg.reconstructable(resolved_job)
    job_def = job.get_definition()
    run_config = job_run_config(run_config)
    check_against_job(job_def, run_config)
    lineage: dict[str, Any] = {}
    if parent is not None:
        step_keys, known_state = KnownExecutionState.build_resume_retry_reexecution(instance, parent)
        lineage = {
            "execution_plan": create_execution_plan(
                job, run_config, step_keys_to_execute=step_keys, known_state=known_state, tags=parent.tags
            ),
            "root_run_id": parent.root_run_id or parent.run_id,
            "parent_run_id": parent.run_id,
        }
    run = instance.create_run_for_job(
        job_def=job_def,
        run_config=run_config,
        tags=tags,
        job_code_origin=job.get_python_origin(),
        remote_job_origin=_remote_origin(job_def.name),
        **lineage,
    )
    execute_run(job, run, instance)
    return run.run_id


def _is_workbook(path: Path) -> bool:
    try:
        return detect_format(path) in ("xlsx", "xls")
    except FileRejected:
        return False  # the run refuses it with its reason


def import_file(path: Path, run_config: dict | None = None) -> dict:
    """Import `path` as its own partition and return the import's summary (see `history.import_summary`).

    Bytes imported before, under any name, are not imported again: the summary says `skipped`.
    """
    path = path.resolve()
    if not path.is_file():
        return {
            "run_id": None,
            "partition_key": None,
            "status": "failed",
            **dict.fromkeys(COUNT_KEYS),
            "error": f"{path}: no such file",
            "warnings": [],
        }
    digest = content_hash(path)
    # A sheet named in run config is an import of its own; which sheet the file gives is known once it is read.
    sheet = str(((short_form(run_config or {}).get("parse") or {}).get("config") or {}).get("sheet") or "")
    workbook = _is_workbook(path)
    key = partition_key(path.name, digest, sheet if workbook else "")
    with psycopg.connect(os.environ[DATABASE_URL_ENV]) as conn, conn.cursor() as cur:
        earlier = earlier_import(cur, key, digest, None if workbook else "")
    if earlier:
        return {
            "run_id": earlier["run_id"],
            "partition_key": key,
            "status": "skipped",
            **{k: earlier["counts"].get(k) for k in COUNT_KEYS},
            "already_imported_as": earlier["partition_key"],
            "error": None,
            "warnings": [],
        }
    # Named on this machine's command line: runs may read it, though it may lie outside the landing folder.
    StateFolder(home=os.environ.get(HOME_ENV) or str(home_dir())).grant(path)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(LANDED_FILES, [key])
        run_id = run_here(
            instance,
            _with_source_path(run_config or {}, path),
            {"dagster/partition": key, "import_pipeline/source_file": path.name},
        )
        return import_summary(instance, run_id)


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records:
        pid = record.event_log_entry.get_dagster_event().engine_event_data.metadata.get("pid")
        if pid is not None:
            return int(str(pid.value))  # text or int metadata, by Dagster version
    return None


def fail_if_process_died(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRun:
    """Mark a run failed when it claims to be running but its process is gone (killed, machine restarted)."""
    if run.status not in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING):
        return run
    pid = _worker_pid(instance, run.run_id)
    if pid is None or psutil.pid_exists(pid):
        return run
    instance.report_run_failed(run, message=f"the run's process (pid {pid}) is gone: it was killed or crashed")
    return instance.get_run_by_id(run.run_id) or run


def reexecute_from_failure(run_id: str) -> dict:
    """Re-execute a failed import (or revert) from its failed step, as the UI's "Re-execute from failure" does.

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
        if parent.job_name == revert_import_job.name:
            run_id = run_here(instance, parent.run_config, parent.tags, parent, resolved_revert_import_job)
            return revert_summary(instance, run_id)
        return import_summary(instance, run_here(instance, parent.run_config, parent.tags, parent))


def revert_partition(partition_key: str, force: bool = False) -> dict:
    """Revert the committed import of a partition through `revert_import_job`, as its Launchpad does."""
    with dg.DagsterInstance.get() as instance:
        if not instance.has_dynamic_partition(LANDED_FILES, partition_key):
            raise ValueError(f"no partition {partition_key!r}: `import-pipeline history` lists the imported ones")
        run_id = run_here(
            instance,
            {"ops": {"revert": {"config": {"force": force}}}},
            {"dagster/partition": partition_key},
            resolved_job=resolved_revert_import_job,
        )
        return revert_summary(instance, run_id)
