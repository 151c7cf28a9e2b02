"""Archive: a file imported successfully moves to `processed/YYYY/MM/DD/`."""

import datetime
from pathlib import Path

import dagster as dg

from import_pipeline.state import StateFolder
from import_pipeline.summary import LoadResult


@dg.op
def archive_file(context: dg.OpExecutionContext, state: StateFolder, result: LoadResult) -> str | None:
    """Move a successfully imported landed file to `processed/YYYY/MM/DD/`; it is never deleted. Returns where to."""
    moved = state.archive(Path(result.source_file), datetime.date.today())
    if moved:
        context.add_output_metadata({"archived_to": dg.MetadataValue.path(str(moved))})
    return str(moved) if moved else None
