"""Archive: a file imported successfully moves to `processed/YYYY/MM/DD/`; the import's record is its materialization."""

import dataclasses
import datetime
from pathlib import Path

import dagster as dg
from pydantic import Field

from import_pipeline.checks import DEFAULT_REJECT_WARNING, IMPORT_CHECKS, reject_rate, rows_conserved
from import_pipeline.database import LeadsDatabase
from import_pipeline.load import LEADS_ASSET, as_metadata
from import_pipeline.state import StateFolder
from import_pipeline.summary import LoadResult


class ArchiveConfig(dg.Config):
    """When the import's `reject_rate` check warns."""

    warn_reject_rate: float = Field(
        default=DEFAULT_REJECT_WARNING,
        ge=0,
        le=1,
        description="The reject_rate check warns when more than this share of the rows is rejected.",
    )


# The last step of the `leads` asset: its output's metadata is the partition's materialization, so the record
# names where the file is now (processed/...), not where it landed; the import's checks follow it.
@dg.op(
    out={
        # Not materialized by a plan: the partition stays as it was.
        "result": dg.Out(LoadResult, is_required=False),
        **{f"leads_{spec.name}": dg.Out(dg.Nothing, is_required=False) for spec in IMPORT_CHECKS},
    }
)
def archive_file(
    context: dg.OpExecutionContext,
    config: ArchiveConfig,
    state: StateFolder,
    leads_db: LeadsDatabase,
    result: LoadResult,
):
    """Move a successfully imported landed file to `processed/YYYY/MM/DD/` (never deleted); record and check the import."""
    if result.status == "planned":
        # A plan is an observation of the partition, not its materialization; the file stays where it is.
        context.log_event(
            dg.AssetObservation(LEADS_ASSET, partition=context.partition_key, metadata=as_metadata(result.record))
        )
        return
    moved = state.archive(Path(result.source_file), datetime.date.today())
    record = dict(result.record)
    if moved:
        record |= {"source_file": str(moved), "landed_as": result.source_file, "archived_to": str(moved)}
    yield dg.Output(dataclasses.replace(result, record=record), "result", metadata=as_metadata(record))
    yield rows_conserved(leads_db, result)
    yield reject_rate(result, config.warn_reject_rate)
