"""Approval: an import that requires it plans and waits; `decline_import_job` refuses its file with a reason.

Approving is `approve_import_job` (jobs.py): the same import, committed, with the options chosen then.
"""

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from import_pipeline.database import LeadsDatabase
from import_pipeline.landing import find_landed_file, is_landed_key, landed_files_partitions_def, named_landed_file
from import_pipeline.ledger import earlier_import
from import_pipeline.load import LEADS_ASSET
from import_pipeline.state import StateFolder


class DeclineConfig(dg.Config):
    """Why the file is declined: kept beside it and in the partition's record."""

    reason: str = Field(default="declined in review", description="Why the import is declined.")


def _file_of(state: StateFolder, partition: str) -> Path | None:
    """The landed file a partition names, if it is still in the landing folder."""
    try:
        if is_landed_key(partition):
            return find_landed_file(state.landing_path, partition)
        return named_landed_file(state.landing_path, partition)
    except dg.Failure:
        return None


@dg.op
def decline(context: dg.OpExecutionContext, config: DeclineConfig, leads_db: LeadsDatabase, state: StateFolder) -> None:
    """Decline the import of this run's partition: its file moves to `declined/` with the reason beside it."""
    if not context.has_partition_key:
        raise dg.Failure(
            description="pick the partition (the file awaiting approval) in the Launchpad of decline_import_job",
            allow_retries=False,
        )
    key = context.partition_key
    with leads_db.connect() as conn, conn.cursor() as cur:
        committed = earlier_import(cur, key, "", None)
    if committed is not None:
        raise dg.Failure(
            description=f"{key} was imported already (run {committed['run_id']}): nothing awaits approval; "
            "to take the import back, launch revert_import_job for it",
            allow_retries=False,
        )
    path = _file_of(state, key)
    moved = state.quarantine(path, config.reason, state.declined_path) if path is not None else None
    where = f"moved to {moved}" if moved else "not in the landing folder (moved before, or read from elsewhere)"
    context.log.info(f"{key}: declined ({config.reason}); the file was {where}")
    metadata: dict[str, Any] = {
        "declined": True,
        "reason": config.reason,
        "moved_to": dg.MetadataValue.path(str(moved or "")),
    }
    context.add_output_metadata(metadata)
    context.log_event(dg.AssetObservation(LEADS_ASSET, partition=key, metadata=metadata))


@dg.job(
    partitions_def=landed_files_partitions_def,
    tags={"import_pipeline/action": "decline"},
    description="Decline an import awaiting approval: pick its partition and Launch (config: reason). Its file "
    "moves to declined/ with the reason beside it; nothing is committed.",
)
def decline_import_job():
    """Decline one partition's import."""
    decline()
