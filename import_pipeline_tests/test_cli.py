"""The `import-pipeline` command, run as a user runs it: a separate process, JSON on stdout."""

import json
import subprocess

from import_pipeline_tests.shared import CLI, SAMPLES

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
