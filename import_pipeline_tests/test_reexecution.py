"""Re-execution from failure: the final tables equal those of a clean run, and nothing upstream re-runs."""

import dagster as dg
import pytest
import yaml

from import_pipeline.config import PROJECT_ROOT
from import_pipeline.definitions import resolved_import_leads_job
from import_pipeline.launch import import_file, reexecute_from_failure
from import_pipeline_tests.shared import FAIL_FIRST_LOAD, HANDMADE, started_steps, tables


def test_reexecution_from_failure_equals_clean_run(make_pipeline, tmp_path):
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)
    clean = make_pipeline()
    assert import_file(path)["status"] == "success"
    failing = make_pipeline()
    failing.execute(FAIL_FIRST_LOAD)

    first = import_file(path)

    assert first["status"] == "failed"
    assert "injected failure: connection to the leads database lost" in first["error"]
    assert failing.scalar("SELECT count(*) FROM imports") == 0, "a failed load leaves nothing behind"
    assert failing.scalar("SELECT count(*) FROM rejected_rows") == 0

    retried = reexecute_from_failure(first["run_id"])

    assert retried["status"] == "success", retried["error"]
    assert retried["partition_key"] == first["partition_key"]
    assert started_steps(failing.instance, retried["run_id"]) == ["load", "archive_file"]
    assert tables(failing) == tables(clean)
    # Both runs name workspace.yaml's code location, which the UI's "Re-execute" needs.
    workspace = yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text())
    location = workspace["load_from"][0]["python_module"]["location_name"]
    for run_id in (first["run_id"], retried["run_id"]):
        origin = failing.instance.get_run_by_id(run_id).remote_job_origin
        assert (origin.location_name, origin.job_name) == (location, "import_leads_job")


# Each op fails for a real reason: its input is gone for a moment (the file, or the upstream output on disk).
UNREADABLE_INPUT = {
    "parse": None,
    "validate": ("parse", "records"),  # the folder of its parquet parts
    "dedupe": ("validate", "valid"),
    "load": ("validate", "valid"),  # the parts the dedupe step handed on, which the load stages
    "archive_file": ("load", "result.json"),
}


@pytest.mark.parametrize("failing_op", list(UNREADABLE_INPUT))
def test_reexecution_from_failure_works_from_every_op(make_pipeline, tmp_path, failing_op):
    source = tmp_path / "handmade.csv"
    source.write_text(HANDMADE)
    expected = _tables_after_clean_run(make_pipeline, source)
    pipeline = make_pipeline()
    path = pipeline.landing / "handmade.csv"
    path.write_text(HANDMADE)
    first = import_file(path)
    assert first["status"] == "success"
    run_id = first["run_id"]
    # Rewind to before the failing op (the load commits; the file move comes after it), then replay
    # from there with the fault in place.
    if failing_op != "archive_file":
        pipeline.execute("TRUNCATE leads, lead_history, rejected_rows, imports CASCADE")
    archived = next((pipeline.home / "processed").rglob("handmade.csv"))
    archived.rename(path)
    outputs = pipeline.home / "dagster" / "storage" / run_id / "outputs"
    hidden = tmp_path / "hidden"

    if UNREADABLE_INPUT[failing_op] is None:
        path.rename(hidden)
    else:
        step, name = UNREADABLE_INPUT[failing_op]
        (outputs / f"leads.{step}" / name).rename(hidden)
    steps_before = _op_index(failing_op)
    with dg.execute_job(
        dg.reconstructable(resolved_import_leads_job),
        instance=pipeline.instance,
        reexecution_options=dg.ReexecutionOptions(
            parent_run_id=run_id, step_selection=[f"leads.{op}" for op in list(UNREADABLE_INPUT)[steps_before:]]
        ),
        tags=pipeline.instance.get_run_by_id(run_id).tags,
    ) as broken:
        assert not broken.success
        broken_id = broken.run_id
    if UNREADABLE_INPUT[failing_op] is None:
        hidden.rename(path)
    else:
        hidden.rename(outputs / f"leads.{step}" / name)

    retried = reexecute_from_failure(broken_id)

    assert retried["status"] == "success", retried["error"]
    assert started_steps(pipeline.instance, retried["run_id"]) == list(UNREADABLE_INPUT)[steps_before:]
    assert _without_source_file(tables(pipeline)) == _without_source_file(expected)
    assert not path.exists() and len(list((pipeline.home / "processed").rglob("handmade.csv"))) == 1


def _without_source_file(tables: dict) -> dict:
    """The two pipelines read the file from different folders; everything else must match."""
    return tables | {"leads": [row[:-1] for row in tables["leads"]], "imports": [row[1:] for row in tables["imports"]]}


def _op_index(op: str) -> int:
    return list(UNREADABLE_INPUT).index(op)


def _tables_after_clean_run(make_pipeline, path) -> dict:
    clean = make_pipeline()
    assert import_file(path)["status"] == "success"
    return tables(clean)
