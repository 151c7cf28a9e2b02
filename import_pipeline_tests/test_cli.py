"""The `import-pipeline` command, run as a user runs it: a separate process, JSON on stdout."""

import json
import subprocess

import pytest

from import_pipeline.launch import import_file
from import_pipeline.run_config import RunConfigError, check_run_config
from import_pipeline_tests.shared import CLI, FAIL_FIRST_LOAD, HANDMADE, SAMPLES, started_steps

# samples/README.md: what bench/generate.py predicts for these seeded files.
SAMPLE_COUNTS = {
    "rows_read": 1000,
    "rows_valid": 968,
    "rows_rejected": 32,
    "duplicates_in_file": 32,
    "duplicates_existing": 0,
    "inserted": 936,
    "updated": 0,
    "merged": 0,
    "created": 0,
}
JSON_KEYS = {"run_id", "partition_key", "status", *SAMPLE_COUNTS, "error", "warnings"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def test_cli_import_json_on_the_sample(pipeline):
    done = _cli("import", str(SAMPLES / "leads_sample.csv"), "--json")

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result.keys() >= JSON_KEYS
    assert result["status"] == "success" and result["error"] is None and result["warnings"] == []
    assert {k: result[k] for k in SAMPLE_COUNTS} == SAMPLE_COUNTS
    assert pipeline.scalar("SELECT count(*) FROM leads") == SAMPLE_COUNTS["inserted"]
    assert pipeline.scalar("SELECT count(*) FROM rejected_rows") == SAMPLE_COUNTS["rows_rejected"]

    again = _cli("import", str(SAMPLES / "leads_sample.csv"), "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout)["status"] == "skipped"

    history = _cli("history", "--json")
    assert history.returncode == 0
    rows = json.loads(history.stdout)
    assert [(r["run_id"], r["status"], r["inserted"]) for r in rows] == [(result["run_id"], "success", 936)]

    overlap = _cli("import", str(SAMPLES / "leads_sample_overlap.csv"), "--json")
    counts = json.loads(overlap.stdout)
    assert (counts["rows_read"], counts["rows_rejected"], counts["duplicates_in_file"]) == (200, 8, 3)
    assert (counts["duplicates_existing"], counts["inserted"]) == (40, 149)
    assert pipeline.scalar("SELECT count(*) FROM leads") == 936 + 149
    assert pipeline.scalar("SELECT count(*) - count(DISTINCT email_key) FROM leads") == 0


def test_cli_import_failure_exits_nonzero_with_one_line_error(pipeline, tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_text("Name,Email\nAnn,ann@x.com\n")

    done = _cli("import", str(path), "--json")

    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["status"] == "failed"
    assert result["error"] == "contacts.csv: no column maps to company_name; the headers found are ['Name', 'Email']"
    assert pipeline.scalar("SELECT count(*) FROM leads") == 0


def test_cli_dsn_prints_a_working_connection_string(pipeline):
    done = _cli("dsn")

    assert done.returncode == 0
    assert done.stdout.strip() == pipeline.leads_url


BAD_CONFIGS = [
    (
        {"validate": {"config": {"max_error_rate": -1}}},
        "ops.validate.config.max_error_rate = -1: Input should be greater than or equal to 0",
    ),
    (
        {"parse": {"config": {"max_file_mb": 0}}},
        "ops.parse.config.max_file_mb = 0: Input should be greater than or equal to 1",
    ),
    (
        {"validate": {"config": {"phone_region": "ZZ"}}},
        "ops.validate.config.phone_region = 'ZZ': not a region phonenumbers knows; use a two-letter code such as "
        "US, GB, FR or DE",
    ),
    (
        {"dedupe": {"config": {"match_keys": []}}},
        "ops.dedupe.config.match_keys = []: List should have at least 1 item after validation, not 0",
    ),
    (
        {"load": {"config": {"assign": "single"}}},
        "ops.load.config: assign: single needs `owners` (a list of owner names)",
    ),
    (
        {"load": {"config": {"on_existing": "upsert"}}},
        "ops.load.config.on_existing = 'upsert': Input should be 'skip', 'update', 'merge' or 'create'",
    ),
    (
        {"load": {"config": {"owner": "ann"}}},
        "ops.load.config.owner: no such setting; load takes on_existing, assign, owners, owner_column, reassign_existing, plan, review",
    ),
    (
        {"parse": {"config": {"encoding": "klingon"}}},
        "ops.parse.config.encoding = 'klingon': not an encoding Python knows; e.g. cp1252, latin-1, utf-16, utf-8",
    ),
    ({"lod": {}}, "ops.lod: no such op with config; the import job's are parse, validate, dedupe, load, archive_file"),
]


@pytest.mark.parametrize(("ops", "error"), BAD_CONFIGS)
def test_check_run_config_names_the_field_the_value_and_what_is_allowed(ops, error):
    with pytest.raises(RunConfigError) as refused:
        check_run_config({"ops": ops})
    assert str(refused.value) == error


# Through the CLI as a user meets it: each case is a process (about 3 s), so two stand for the rules above.
@pytest.mark.parametrize(
    ("config", "error"),
    [
        (
            "ops:\n  validate:\n    config:\n      max_error_rate: -1\n",
            "ops.validate.config.max_error_rate = -1: Input should be greater than or equal to 0",
        ),
        ("ops: [\n", "not valid YAML at line 2, column 1: expected the node content, but found '<stream end>'"),
    ],
)
def test_cli_bad_config_is_one_json_object_before_anything_runs(pipeline, tmp_path, config, error):
    path = tmp_path / "run.yaml"
    path.write_text(config)

    done = _cli("import", str(SAMPLES / "leads_sample.csv"), "--config", str(path), "--json")

    assert done.returncode == 2
    assert json.loads(done.stdout) == {
        "run_id": None,
        "partition_key": None,
        "status": "failed",
        "error": f"--config {path}: {error}",
    }
    assert "Traceback" not in done.stderr
    assert pipeline.instance.get_runs() == [], "nothing ran"


def test_cli_bad_arguments_and_missing_config_are_one_json_object(pipeline, tmp_path):
    missing = _cli("import", str(SAMPLES / "leads_sample.csv"), "--config", str(tmp_path / "no.yaml"), "--json")
    no_path = _cli("import", "--json")
    unknown = _cli("history", "--json", "--limit", "many")

    assert [d.returncode for d in (missing, no_path, unknown)] == [2, 2, 2]
    assert json.loads(missing.stdout)["error"] == f"--config {tmp_path / 'no.yaml'}: No such file or directory"
    assert json.loads(no_path.stdout)["error"] == "import-pipeline import: the following arguments are required: path"
    assert json.loads(unknown.stdout)["error"] == "import-pipeline history: argument --limit: invalid int value: 'many'"
    assert all("Traceback" not in d.stderr for d in (missing, no_path, unknown))


def test_cli_database_unreachable_is_one_json_object(pipeline, monkeypatch):
    # Nothing listens on port 9 of the loopback: the connection is refused at once.
    monkeypatch.setenv("IMPORT_PIPELINE_DATABASE_URL", "postgresql://leads:secret@127.0.0.1:9/leads")

    done = _cli("import", str(SAMPLES / "leads_sample.csv"), "--json")

    assert done.returncode == 3
    result = json.loads(done.stdout)
    assert result["status"] == "failed"
    assert result["error"].startswith("the leads database at 127.0.0.1:9/leads is unreachable: connection failed")
    assert "secret" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_cli_rule_broken_in_the_launchpad_fails_the_first_step_at_once(pipeline, tmp_path):
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)

    # What a run launched from the Launchpad meets: Dagster's schema accepts it, the config's rules do not.
    result = import_file(path, {"ops": {"load": {"config": {"assign": "round_robin"}}}})

    assert result["status"] == "failed"
    assert result["error"] == "ops.load.config: assign: round_robin needs `owners` (a list of owner names)"
    assert started_steps(pipeline.instance, result["run_id"]) == ["check_config"]
    assert pipeline.scalar("SELECT count(*) FROM leads") == 0


def test_cli_import_is_quiet_and_history_shows_the_latest_outcome(pipeline, tmp_path):
    pipeline.execute(FAIL_FIRST_LOAD)
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)

    failed = _cli("import", str(path))
    first = json.loads(_cli("history", "--json").stdout)[0]
    retried = _cli("retry", first["run_id"], "--json")
    history = json.loads(_cli("history", "--json").stdout)
    other = tmp_path / "other.csv"
    other.write_text(HANDMADE.replace("Acme", "Acme Two"))
    verbose = _cli("import", str(other), "--verbose")

    assert failed.returncode == 1
    assert "DEBUG" not in failed.stderr and "STEP_START" not in failed.stderr, "Dagster's lines go to the log"
    assert failed.stdout.startswith(f"FAILED  {first['partition_key']}  run {first['run_id']}  ")
    assert "the database refused the load (RaiseException)" in failed.stdout
    assert json.loads(retried.stdout)["status"] == "success"
    assert [(h["run_id"], h["status"], h["latest_status"]) for h in history] == [
        (json.loads(retried.stdout)["run_id"], "success", "success"),
        (first["run_id"], "failed", "success"),
    ]
    assert history[0]["reject_report"] == str(pipeline.home / "reports" / f"{first['partition_key']}.rejects.csv")
    assert "STEP_START" in verbose.stderr
