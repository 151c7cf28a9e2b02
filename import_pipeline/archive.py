"""Archive: a file imported successfully moves to `processed/YYYY/MM/DD/`; the import's record is its materialization."""

import dataclasses
import datetime
from pathlib import Path

import dagster as dg

from import_pipeline.load import as_metadata
from import_pipeline.state import StateFolder
from import_pipeline.summary import LoadResult


# The last step of the `leads` asset: its output's metadata is the partition's materialization, so the record
# names where the file is now (processed/...), not where it landed.
@dg.op
def archive_file(context: dg.OpExecutionContext, state: StateFolder, result: LoadResult) -> dg.Output[LoadResult]:
    """Move a successfully imported landed file to `processed/YYYY/MM/DD/` (never deleted); record the import."""
    moved = state.archive(Path(result.source_file), datetime.date.today())
    record = dict(result.record)
    if moved:
        record |= {"source_file": str(moved), "landed_as": result.source_file, "archived_to": str(moved)}
    return dg.Output(dataclasses.replace(result, record=record), metadata=as_metadata(record))
