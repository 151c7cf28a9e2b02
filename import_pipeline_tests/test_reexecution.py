"""Re-execution from failure: the final tables equal those of a clean run, and nothing upstream re-runs."""

import dagster as dg

from import_pipeline.launch import import_file, reexecute_from_failure
from import_pipeline_tests.test_import_job import HANDMADE

# A real database error on the first load attempt only: sequences ignore rollbacks.
FAIL_FIRST_LOAD = """
CREATE SEQUENCE load_attempts;
CREATE FUNCTION fail_first_load() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('load_attempts') = 1 THEN
        RAISE EXCEPTION 'injected failure: connection to the leads database lost';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER fail_first_load BEFORE INSERT ON leads FOR EACH STATEMENT EXECUTE FUNCTION fail_first_load();
"""


def _tables(pipeline) -> dict:
    return {
        "leads": pipeline.query(
            "SELECT source_row, company_name, first_name, last_name, email, email_key, phone, notes, source_file "
            "FROM leads ORDER BY source_row"
        ),
        "rejected": pipeline.query("SELECT source_row, raw_values, reasons FROM rejected_rows ORDER BY source_row"),
        "imports": pipeline.query("SELECT partition_key, content_hash, counts FROM imports"),
    }


def _started_steps(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
    return [r.event_log_entry.dagster_event.step_key for r in records]


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
    assert _started_steps(failing.instance, retried["run_id"]) == ["load", "archive_file"]
    assert _tables(failing) == _tables(clean)
