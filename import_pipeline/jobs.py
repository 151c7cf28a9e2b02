"""The import job: check its config, then parse, validate, dedupe and load one landed file, one partition per file."""

import dagster as dg

from import_pipeline.archive import archive_file
from import_pipeline.dedupe import choose_match_keys
from import_pipeline.landing import landed_files_partitions_def
from import_pipeline.load import load
from import_pipeline.parse import parse
from import_pipeline.run_config import check_config
from import_pipeline.validate import validate


# In-process: the multiprocess executor spends about 2.5 s starting each step on two cores.
@dg.job(
    partitions_def=landed_files_partitions_def,
    executor_def=dg.in_process_executor,
    tags={"import_pipeline/target": "leads"},
)
def import_leads_job():
    """Import one landed file of leads."""
    records, parsed = parse(check_config())
    valid, rejected, validated = validate(records, parsed)
    leads, deduped = choose_match_keys(valid, validated)
    archive_file(load(leads, rejected, deduped))
