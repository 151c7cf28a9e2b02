"""The `leads` asset and its job: one materialization per landed file, made by the import's steps in order.

The asset is graph-backed so that each step stays a step: "Re-execute from failure" runs only the failed
one and those after it, reading what the others produced from the parent run.
"""

import dagster as dg

from import_pipeline.archive import archive_file
from import_pipeline.checks import IMPORT_CHECKS
from import_pipeline.dedupe import choose_match_keys
from import_pipeline.landing import landed_files_partitions_def
from import_pipeline.load import APPROVE_JOB, LEADS_ASSET
from import_pipeline.load import load as load_leads
from import_pipeline.parse import parse
from import_pipeline.run_config import check_config
from import_pipeline.validate import validate


@dg.graph_asset(
    name=LEADS_ASSET.path[-1],
    partitions_def=landed_files_partitions_def,
    kinds={"postgres", "polars"},
    check_specs=IMPORT_CHECKS,
    metadata={"dagster/table_name": "leads"},
    description="Deduplicated leads in PostgreSQL (table `leads`), shared with the application. One partition "
    "per landed file: materializing a partition imports that file. Materialize → Add partition takes a file "
    "name from the landing folder (or an s3:// URI in the bucket).",
)
def leads():
    """Import one landed file of leads: check the config, parse, validate, choose match keys, load, archive."""
    records, parsed = parse(check_config())
    valid, rejected, validated = validate(records, parsed)
    keyed, deduped = choose_match_keys(valid, validated)
    result, conserved, rejected_share = archive_file(load_leads(keyed, rejected, deduped))
    return {"result": result, "leads_rows_conserved": conserved, "leads_reject_rate": rejected_share}


# In-process: the multiprocess executor spends about 2.5 s starting each step on two cores.
import_leads_job = dg.define_asset_job(
    "import_leads_job",
    selection=dg.AssetSelection.assets(leads),
    executor_def=dg.in_process_executor,
    tags={"import_pipeline/target": "leads"},
    description="Import one landed file of leads (one partition of `leads`).",
)


# Approval of a plan that waits for it (`review`): the same import, committed, with the options chosen here.
approve_import_job = dg.define_asset_job(
    APPROVE_JOB,
    selection=dg.AssetSelection.assets(leads),
    executor_def=dg.in_process_executor,
    tags={"import_pipeline/target": "leads", "import_pipeline/action": "approve"},
    description="Approve an import awaiting approval: pick its partition and Launch. The Launchpad's config "
    "may add on_existing, assign and owners under load: config; the import commits against the table as it "
    "is now and reports any difference from its plan.",
)
