"""The application writing `leads` beside an import: never blocked, never duplicated, matched like an import."""

import json
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg
import yaml

from import_pipeline.database import migrate_once
from import_pipeline.launch import import_file
from import_pipeline_tests.shared import CLI

FILE = (
    "Company,Email,Title\n"
    "Acme,ann@acme.com,CEO\n"  # 2: an existing lead that the application deletes during the load
    "Beta,bob@beta.com,CTO\n"  # 3: the application inserts this email during the load
    "Gamma,gus@gamma.com,Buyer\n"  # 4: new
    "Delta,dan@delta.com,Buyer\n"  # 5: new
)
# The strongest lock an ordinary INSERT, UPDATE or DELETE takes on a table.
ORDINARY_WRITE_LOCKS = {"AccessShareLock", "RowExclusiveLock"}


def _import(path: Path, config: dict | None = None) -> subprocess.Popen:
    command = [*CLI, "import", str(path), "--json"]
    if config:
        config_path = path.with_suffix(".yaml")
        config_path.write_text(yaml.safe_dump(config))
        command += ["--config", str(config_path)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


@contextmanager
def _load_waiting_for(url: str, process: subprocess.Popen) -> int:
    """Yield the import's backend pid once its load waits for a lock the application holds."""
    with psycopg.connect(url, autocommit=True) as watcher:
        deadline = time.monotonic() + 120
        while not (
            row := watcher.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                " AND state = 'active' AND query LIKE '%leads%'"
            ).fetchone()
        ):
            assert process.poll() is None, "the import ended without waiting for the application"
            assert time.monotonic() < deadline, "the import never waited for the application's transaction"
            time.sleep(0.05)
        yield row[0]


@contextmanager
def _import_behind_an_application_insert(pipeline, path: Path):
    """Yield (the application's connection, the import) once the import waits for the application's uncommitted Bob."""
    path.write_text(FILE)
    with psycopg.connect(pipeline.leads_url) as app:
        app.execute("INSERT INTO leads (company_name, email) VALUES ('Beta (app)', 'bob@beta.com')")
        process = _import(path)
        with _load_waiting_for(pipeline.leads_url, process):
            yield app, process


def _lead_locks(url: str, pid: int) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT mode FROM pg_locks WHERE pid = %s AND relation = 'leads'::regclass", (pid,)
        ).fetchall()
    return {mode for (mode,) in rows}


def _application_writes(url: str) -> None:
    """One INSERT, UPDATE and DELETE of leads the import does not touch; each fails if it waits over 1 s."""
    with psycopg.connect(url, autocommit=True) as app:
        app.execute("SET lock_timeout = '1s'")
        (lead_id,) = app.execute(
            "INSERT INTO leads (company_name, email) VALUES ('Probe', 'probe@app.example') RETURNING id"
        ).fetchone()
        app.execute("UPDATE leads SET title = 'Owner' WHERE email = 'zed@zeta.com'")
        app.execute("DELETE FROM leads WHERE id = %s", (lead_id,))


def test_application_lead_without_bookkeeping_is_matched_like_an_imported_one(pipeline, tmp_path):
    pipeline.execute(
        "INSERT INTO leads (company_name, email, external_id, title) VALUES ('Acme', ' ANN@Acme.com ', 'A-1', 'CEO');"
        "INSERT INTO leads (company_name, email, external_source, external_id) VALUES ('Beta', NULL, 'crm', 'B-2')"
    )
    assert pipeline.query("SELECT email_key, external_key FROM leads ORDER BY id") == [
        ("ann@acme.com", "default:A-1"),
        (None, "crm:B-2"),
    ]
    path = tmp_path / "app.csv"
    path.write_text("Company,Email,External ID,Title\nAcme,ann@acme.com,,Founder\nBeta Corp,bea@beta.com,B-2,CFO\n")

    result = import_file(
        path,
        {
            "ops": {
                "dedupe": {"config": {"match_keys": ["email", "external_id"], "source": "crm"}},
                "load": {"config": {"on_existing": "update"}},
            }
        },
    )

    assert result["status"] == "success", result["error"]
    assert (result["updated"], result["inserted"]) == (2, 0)
    assert pipeline.query(
        "SELECT company_name, email, title, updated_by_import IS NOT NULL FROM leads ORDER BY id"
    ) == [("Acme", "ann@acme.com", "Founder", True), ("Beta Corp", "bea@beta.com", "CFO", True)]
    # The external key's index was built for this import, concurrently.
    assert pipeline.scalar("SELECT count(*) FROM pg_indexes WHERE indexname = 'leads_external_key_live'") == 1


def test_application_writes_during_the_load_stay_exact_and_unblocked(pipeline, tmp_path):
    pipeline.execute(
        "INSERT INTO leads (company_name, email) VALUES ('Acme', 'ann@acme.com'), ('Zeta', 'zed@zeta.com')"
    )
    path = tmp_path / "race.csv"
    path.write_text(FILE)
    with psycopg.connect(pipeline.leads_url) as app:
        # Both uncommitted while the import matches: it cannot see them, and must wait for their outcome.
        app.execute("UPDATE leads SET deleted_at = now() WHERE email = 'ann@acme.com'")
        app.execute("INSERT INTO leads (company_name, email) VALUES ('Beta (app)', 'BOB@beta.com')")
        process = _import(path, {"ops": {"load": {"config": {"on_existing": "update"}}}})
        with _load_waiting_for(pipeline.leads_url, process) as pid:
            assert _lead_locks(pipeline.leads_url, pid) <= ORDINARY_WRITE_LOCKS
            _application_writes(pipeline.leads_url)
        app.commit()
        result = json.loads(process.communicate(timeout=300)[0])

    assert result["status"] == "success", result["error"]
    # Ann's lead was deleted under the import: her row became a new lead. Bob's email was taken by the
    # application first: his row updated the application's lead instead of duplicating it.
    assert {
        k: result[k] for k in ("rows_read", "inserted", "updated", "duplicates_existing", "duplicates_in_file")
    } == {"rows_read": 4, "inserted": 3, "updated": 1, "duplicates_existing": 0, "duplicates_in_file": 0}
    live = pipeline.query(
        "SELECT email_key, company_name, title, created_by_import IS NULL FROM leads WHERE deleted_at IS NULL ORDER BY email_key"
    )
    assert live == [
        ("ann@acme.com", "Acme", "CEO", False),
        ("bob@beta.com", "Beta", "CTO", True),
        ("dan@delta.com", "Delta", "Buyer", False),
        ("gus@gamma.com", "Gamma", "Buyer", False),
        ("zed@zeta.com", "Zeta", "Owner", True),
    ]
    assert pipeline.query(
        "SELECT o.source_row, o.action FROM import_outcomes o JOIN imports i ON i.id = o.import_id ORDER BY 1"
    ) == [(2, "inserted"), (3, "updated"), (4, "inserted"), (5, "inserted")]


def test_application_lead_inserted_during_the_load_makes_the_row_a_duplicate(pipeline, tmp_path):
    with _import_behind_an_application_insert(pipeline, tmp_path / "skip.csv") as (app, process):
        app.commit()
    result = json.loads(process.communicate(timeout=300)[0])

    assert result["status"] == "success", result["error"]
    assert (result["inserted"], result["duplicates_existing"]) == (3, 1)
    assert pipeline.scalar("SELECT count(*) FROM leads") == 4
    assert pipeline.query("SELECT company_name FROM leads WHERE email_key = 'bob@beta.com'") == [("Beta (app)",)]
    assert pipeline.query(
        "SELECT o.action, l.company_name FROM import_outcomes o JOIN leads l ON l.id = o.lead_id WHERE o.source_row = 3"
    ) == [("skipped", "Beta (app)")]


def test_application_migration_6_recomputes_keys_of_existing_leads(server_url, tmp_path):
    from import_pipeline.schema import MIGRATIONS

    url = server_url.replace("/postgres?", "/migration_6_check?", 1)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS migration_6_check")
        conn.execute("CREATE DATABASE migration_6_check")
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, statement in MIGRATIONS[:5]:
            conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
        conn.execute(
            "INSERT INTO imports (partition_key, content_hash, run_id, source_file) VALUES ('p', 'h', 'r', 'f.csv')"
        )
        conn.execute(
            "INSERT INTO leads (company_name, email, email_key, external_id, external_key, phone, phone_company_key,"
            " created_by_import, updated_by_import, source_file, source_row)"
            " VALUES ('Acme', 'Ann@Acme.com', 'ann@acme.com', ' 42 ', 'crm:a:42', '+1 555', '+1555|acme', 1, 1, 'f.csv', 2)"
        )
    migrate_once(url)
    with psycopg.connect(url) as conn:
        assert conn.execute(
            "SELECT email_key, external_source, external_key, phone_company_key FROM leads"
        ).fetchall() == [("ann@acme.com", "crm:a", "crm:a:42", "+1555|acme")]
        assert conn.execute("SELECT action, source_row FROM import_outcomes").fetchall() == [("inserted", 2)]


def test_application_import_killed_while_waiting_for_the_application_then_retried(pipeline, tmp_path):
    with _import_behind_an_application_insert(pipeline, tmp_path / "killed.csv") as (app, process):
        process.kill()
        process.wait()
        app.commit()
    assert pipeline.scalar("SELECT count(*) FROM imports") == 0
    assert pipeline.scalar("SELECT count(*) FROM leads") == 1, "nothing of the killed load was committed"
    run = pipeline.instance.get_runs(limit=1)[0]

    retry = subprocess.run([*CLI, "retry", run.run_id, "--json"], capture_output=True, text=True, timeout=300)
    result = json.loads(retry.stdout)

    assert result["status"] == "success", result["error"]
    assert (result["inserted"], result["duplicates_existing"]) == (3, 1)
    assert pipeline.query("SELECT email_key FROM leads ORDER BY email_key") == [
        ("ann@acme.com",),
        ("bob@beta.com",),
        ("dan@delta.com",),
        ("gus@gamma.com",),
    ]
