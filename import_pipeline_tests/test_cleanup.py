"""The nightly cleanup: what is past retention goes, the rest stays, and a dry run only counts."""

import os
import time

from import_pipeline.definitions import defs
from import_pipeline.landing import landed_files_partitions_def
from import_pipeline.launch import import_file
from import_pipeline_tests.shared import HANDMADE

DAY = 86_400


def _clean(pipeline, **config) -> dict:
    result = defs.get_job_def("cleanup_job").execute_in_process(
        instance=pipeline.instance, run_config={"ops": {"clean_up": {"config": config}}}
    )
    assert result.success
    return result.output_for_node("clean_up")


def _aged(path, days: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    then = time.time() - days * DAY
    os.utime(path, (then, then))
    return path


def test_cleanup_removes_only_what_is_past_retention(pipeline, tmp_path):
    path = pipeline.landing / "handmade.csv"
    path.write_text(HANDMADE)
    import_file(path)
    old_import = tmp_path / "old.csv"
    old_import.write_text(HANDMADE.replace("Acme", "Old"))
    import_file(old_import)
    pipeline.execute("UPDATE imports SET imported_at = now() - interval '100 days' WHERE source_file LIKE '%old.csv'")
    pipeline.execute("CREATE TABLE staging_deadbeef (x int)")
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

    counts = _clean(pipeline)

    assert counts == {
        "processed_files_deleted": 1,
        "quarantined_files_deleted": 2,
        "reports_deleted": 1,
        "rejected_rows_deleted": 5,
        "staging_tables_dropped": 1,
        "run_storage_deleted": 0,
        "partitions_deleted": 0,
    }
    assert not any(p.exists() for p in old) and all(p.exists() for p in recent)
    assert pipeline.scalar("SELECT count(*) FROM rejected_rows") == 5, "the recent import keeps its rejects"
    assert pipeline.scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'staging_deadbeef'") == 0
    assert len(list((pipeline.home / "processed").rglob("handmade.csv"))) == 1, "today's processed file stays"


def test_cleanup_dry_run_counts_then_run_storage_and_partitions_go(pipeline, tmp_path):
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)
    run_id = import_file(path)["run_id"]
    storage = pipeline.home / "dagster" / "storage" / run_id
    assert storage.is_dir()

    dry = _clean(pipeline, retention_days=0, dry_run=True)
    assert (dry["run_storage_deleted"], dry["partitions_deleted"], dry["rejected_rows_deleted"]) == (1, 1, 5)
    assert storage.is_dir() and pipeline.scalar("SELECT count(*) FROM rejected_rows") == 5

    done = _clean(pipeline, retention_days=0)
    # The dry run has finished too: its own output storage goes with the import's.
    assert done == dry | {"run_storage_deleted": 2}
    assert not storage.exists()
    assert pipeline.instance.get_dynamic_partitions(landed_files_partitions_def.name) == []
    assert pipeline.instance.get_run_by_id(run_id) is not None, "run history stays"
