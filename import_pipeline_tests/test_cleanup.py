"""The nightly cleanup: what is past retention goes, the rest stays, and a dry run only counts."""

import os
import time

import dagster as dg

from import_pipeline.definitions import defs
from import_pipeline.landing import landed_files_partitions_def
from import_pipeline.launch import import_file
from import_pipeline_tests.shared import HANDMADE

DAY = 86_400


def _clean(pipeline, **config) -> tuple[dict, dict]:
    """The cleanup's counts and its metadata's list of what it removed."""
    result = defs.get_job_def("cleanup_job").execute_in_process(
        instance=pipeline.instance, run_config={"ops": {"clean_up": {"config": config}}}
    )
    assert result.success
    (output,) = [e for e in result.events_for_node("clean_up") if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
    return result.output_for_node("clean_up"), output.step_output_data.metadata["removed"].value


def _aged(path, days: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    then = time.time() - days * DAY
    os.utime(path, (then, then))
    return path


def test_cleanup_removes_only_its_own_things_past_retention_and_lists_them(pipeline, tmp_path):
    path = pipeline.landing / "handmade.csv"
    path.write_text(HANDMADE)
    import_file(path)
    old_import = tmp_path / "old.csv"
    old_import.write_text(HANDMADE.replace("Acme", "Old"))
    old_key = import_file(old_import)["partition_key"]
    pipeline.execute("UPDATE imports SET imported_at = now() - interval '100 days' WHERE source_file LIKE '%old.csv'")
    # A DBA's table that only shares the prefix of the load's (temporary) staging tables.
    pipeline.execute("CREATE TABLE staging_accounts (id int); INSERT INTO staging_accounts VALUES (1)")
    old = [
        _aged(pipeline.home / "processed" / "2026" / "01" / "01" / "a.csv", 100),
        _aged(pipeline.home / "quarantine" / "bad.csv", 120),
        _aged(pipeline.home / "quarantine" / "bad.csv.reason.txt", 120),
        _aged(pipeline.home / "reports" / "x.rejects.csv", 91),
    ]
    recent = [
        _aged(pipeline.home / "quarantine" / "new.csv", 3),
        _aged(pipeline.home / "reports" / "y.rejects.csv", 89),
    ]

    counts, removed = _clean(pipeline)

    assert counts == {
        "processed_files_deleted": 1,
        "quarantined_files_deleted": 2,
        "reports_deleted": 1,
        "rejected_rows_deleted": 5,
        "run_storage_deleted": 0,
        "partitions_deleted": 0,
    }
    assert removed == {
        "processed_files_deleted": ["processed/2026/01/01/a.csv"],
        "quarantined_files_deleted": ["quarantine/bad.csv", "quarantine/bad.csv.reason.txt"],
        "reports_deleted": ["reports/x.rejects.csv"],
        "rejected_rows_deleted": [f"{old_key}: 5 rows"],
        "run_storage_deleted": [],
        "partitions_deleted": [],
    }
    assert not any(p.exists() for p in old) and all(p.exists() for p in recent)
    assert pipeline.scalar("SELECT count(*) FROM rejected_rows") == 5, "the recent import keeps its rejects"
    assert pipeline.query("SELECT id FROM staging_accounts") == [(1,)]
    assert len(list((pipeline.home / "processed").rglob("handmade.csv"))) == 1, "today's processed file stays"


def test_cleanup_dry_run_counts_then_run_storage_and_partitions_go(pipeline, tmp_path):
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)
    imported = import_file(path)
    run_id, key = imported["run_id"], imported["partition_key"]
    storage = pipeline.home / "dagster" / "storage" / run_id
    assert storage.is_dir()

    dry, would = _clean(pipeline, retention_days=0, dry_run=True)
    assert (dry["run_storage_deleted"], dry["partitions_deleted"], dry["rejected_rows_deleted"]) == (1, 1, 5)
    assert would["run_storage_deleted"] == [f"dagster/storage/{run_id}"]
    assert would["partitions_deleted"] == [key] and would["rejected_rows_deleted"] == [f"{key}: 5 rows"]
    assert storage.is_dir() and pipeline.scalar("SELECT count(*) FROM rejected_rows") == 5

    done, removed = _clean(pipeline, retention_days=0)
    # The dry run has finished too: its own output storage goes with the import's.
    assert done == dry | {"run_storage_deleted": 2}
    assert f"dagster/storage/{run_id}" in removed["run_storage_deleted"]
    assert len(removed["run_storage_deleted"]) == 2 and removed["partitions_deleted"] == [key]
    assert not storage.exists()
    assert pipeline.instance.get_dynamic_partitions(landed_files_partitions_def.name) == []
    assert pipeline.instance.get_run_by_id(run_id) is not None, "run history stays"
