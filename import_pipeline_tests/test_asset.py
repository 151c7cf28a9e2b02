"""The `leads` asset as the catalog launches it: a file named by partition, refused paths, checks and metadata."""

import dagster as dg
import pytest
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

from import_pipeline.definitions import defs, resolved_import_leads_job
from import_pipeline.history import import_history, import_summary
from import_pipeline.landing import LANDED_FILES, landed_files_partitions_def
from import_pipeline.launch import import_file
from import_pipeline.load import LEADS_ASSET
from import_pipeline.run_config import RunConfigError, check_run_config, job_run_config
from import_pipeline_tests.shared import HANDMADE, HANDMADE_COUNTS


def _materialize(pipeline, key: str, run_config: dict | None = None) -> str:
    """Materialize one partition of `leads` as the catalog's Materialize does (Dagster's `__ASSET_JOB`)."""
    pipeline.instance.add_dynamic_partitions(LANDED_FILES, [key])
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=pipeline.instance, partition_key=key, run_config=run_config or {}, raise_on_error=False
    )
    return result.run_id


def _check_results(pipeline, run_id: str) -> dict[str, dg.AssetCheckEvaluation]:
    records = pipeline.instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    return {
        r.event_log_entry.dagster_event.event_specific_data.check_name: r.event_log_entry.dagster_event.event_specific_data
        for r in records.records
    }


def _failed_partitions(pipeline) -> set[str]:
    value = get_and_update_asset_status_cache_value(pipeline.instance, LEADS_ASSET, landed_files_partitions_def)
    return set(value.deserialize_failed_partition_subsets(landed_files_partitions_def).get_partition_keys())


def test_asset_partition_named_by_file_imports_it_with_checks_and_metadata(pipeline):
    # A folder inside the landing folder: the landing sensor leaves it alone; a user names the file.
    (pipeline.landing / "uploads").mkdir()
    (pipeline.landing / "uploads" / "handmade.csv").write_text(HANDMADE)

    run_id = _materialize(pipeline, "uploads/handmade.csv")

    summary = import_summary(pipeline.instance, run_id)
    assert summary["status"] == "success", summary["error"]
    assert {k: summary[k] for k in HANDMADE_COUNTS} == HANDMADE_COUNTS
    assert not (pipeline.landing / "uploads" / "handmade.csv").exists(), "archived to processed/"
    assert [row["run_id"] for row in import_history(pipeline.instance)] == [run_id], "the catalog's runs are imports"
    record = pipeline.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=LEADS_ASSET, asset_partitions=["uploads/handmade.csv"]), limit=1
    ).records[0]
    metadata = record.asset_materialization.metadata
    assert metadata["dagster/row_count"].value == HANDMADE_COUNTS["inserted"]
    assert "/processed/" in metadata["source_file"].value, "the link follows the file to processed/"
    assert metadata["landed_as"].value == str(pipeline.landing / "uploads" / "handmade.csv")
    columns = {c.name: c.type for c in metadata["dagster/column_schema"].value.columns}
    assert columns["email"] == "text" and columns["created_by_import"] == "bigint"
    rejected = metadata["rejected_rows"].value
    assert len(rejected.records) == HANDMADE_COUNTS["rows_rejected"]
    first = rejected.records[0].data
    first_line = pipeline.scalar("SELECT min(source_row) FROM rejected_rows")
    assert first["Rejected line"] == str(first_line)
    assert first["Why rejected"] == summary_reason(pipeline, first_line)
    assert metadata["reject_report"].value == str(pipeline.home / "reports" / "uploads" / "handmade.csv.rejects.csv")

    checks = _check_results(pipeline, run_id)
    assert checks["rows_conserved"].passed
    assert checks["rows_conserved"].partition == "uploads/handmade.csv"
    read = HANDMADE_COUNTS["rows_read"]
    assert checks["rows_conserved"].description == f"{read} rows read, {read} committed outcomes"
    # 5 of the 20 handmade rows are rejected: above the default 5%, so a warning, and the import stands.
    assert not checks["reject_rate"].passed
    assert checks["reject_rate"].severity == dg.AssetCheckSeverity.WARN
    assert checks["reject_rate"].description == (
        f"{HANDMADE_COUNTS['rows_rejected']} of {read} rows rejected "
        f"({HANDMADE_COUNTS['rows_rejected'] / read:.1%}; warning above 5%)"
    )


def summary_reason(pipeline, line: int) -> str:
    """The reasons the ledger holds for a rejected line, as the reject report joins them."""
    reasons = pipeline.scalar("SELECT reasons FROM rejected_rows WHERE source_row = %s", (line,))
    return "; ".join(r["problem"] for r in reasons)


def test_asset_reject_rate_threshold_is_config(pipeline):
    (pipeline.landing / "handmade.csv").write_text(HANDMADE)

    run_id = _materialize(
        pipeline, "handmade.csv", job_run_config({"ops": {"archive_file": {"config": {"warn_reject_rate": 0.5}}}})
    )

    assert _check_results(pipeline, run_id)["reject_rate"].passed


def test_asset_rows_conserved_fails_when_the_ledger_lost_a_row(pipeline, tmp_path):
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)
    first = import_file(path)
    pipeline.execute("DELETE FROM rejected_rows WHERE source_row = (SELECT min(source_row) FROM rejected_rows)")

    # The last step again (as "Re-execute → Selected step" runs it): its check reads the tables as they are now.
    with dg.execute_job(
        dg.reconstructable(resolved_import_leads_job),
        instance=pipeline.instance,
        reexecution_options=dg.ReexecutionOptions(first["run_id"], step_selection=["leads.archive_file"]),
        tags=pipeline.instance.get_run_by_id(first["run_id"]).tags,
    ) as rerun:
        evaluation = _check_results(pipeline, rerun.run_id)["rows_conserved"]

    assert not evaluation.passed
    read = HANDMADE_COUNTS["rows_read"]
    assert evaluation.description == f"{read} rows read, {read - 1} committed outcomes: +1 rows unaccounted for"
    assert evaluation.metadata["rows_rejected"].value == HANDMADE_COUNTS["rows_rejected"] - 1


@pytest.mark.parametrize(
    ("partition", "config", "refusal"),
    [
        ("../outside.csv", {}, "'../outside.csv' is not a file in the landing folder"),
        ("/etc/passwd", {}, "'/etc/passwd' is not a file in the landing folder"),
        ("missing.csv", {}, "no file named 'missing.csv' in the landing folder"),
        (
            "any.csv",
            {"ops": {"parse": {"config": {"source_path": "/etc/passwd"}}}},
            "/etc/passwd is outside the landing folder",
        ),
        (
            "any.csv",
            {"ops": {"parse": {"config": {"source_path": "s3://someone-elses-bucket/x.csv"}}}},
            "s3://someone-elses-bucket/x.csv is outside the landing folder",
        ),
    ],
)
def test_asset_refuses_files_outside_the_landing_folder_and_bucket(pipeline, tmp_path, partition, config, refusal):
    (tmp_path / "outside.csv").write_text(HANDMADE)

    run_id = _materialize(pipeline, partition, job_run_config(config))

    summary = import_summary(pipeline.instance, run_id)
    assert summary["status"] == "failed"
    assert summary["error"].startswith(refusal), summary["error"]
    assert partition in _failed_partitions(pipeline), "a Failed partition in the catalog, with its run"
    assert pipeline.scalar("SELECT count(*) FROM imports") == 0


def test_asset_file_named_on_the_command_line_may_lie_outside(pipeline, tmp_path):
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)
    assert import_file(path)["status"] == "success"
    other = tmp_path / "other.csv"
    other.write_text(HANDMADE.replace("acme.com", "acme.org"))

    # The grant is for the file the CLI named, not for its folder.
    run_id = _materialize(
        pipeline, "x.csv", job_run_config({"ops": {"parse": {"config": {"source_path": str(other)}}}})
    )

    assert import_summary(pipeline.instance, run_id)["error"].startswith(f"{other} is outside the landing folder")


def test_asset_run_without_a_partition_says_what_to_do(pipeline):
    job = defs.resolve_job_def("import_leads_job")

    result = job.execute_in_process(instance=pipeline.instance, raise_on_error=False)

    error = import_summary(pipeline.instance, result.run_id)["error"]
    assert error.startswith("This run has no partition, so it does not know which file to import."), error


def test_run_config_short_form_is_the_jobs_form():
    short = {"ops": {"parse": {"config": {"sheet": "Leads"}}, "archive_file": {"config": {"warn_reject_rate": 0.1}}}}

    nested = job_run_config(short)

    assert nested == {
        "ops": {
            "leads": {
                "ops": {"parse": {"config": {"sheet": "Leads"}}, "archive_file": {"config": {"warn_reject_rate": 0.1}}}
            },
        }
    }
    assert job_run_config(nested) == nested
    check_run_config(nested)
    with pytest.raises(RunConfigError) as refused:
        check_run_config({"ops": {"leads": {"ops": {"load": {"config": {"on_existing": "upsert"}}}}}})
    assert str(refused.value).startswith("ops.load.config.on_existing = 'upsert'")
