"""Plan and revert of imports, on real PostgreSQL and a real Dagster instance: exact tables before and after."""

import csv
import json
import subprocess

import dagster as dg
import pytest

from import_pipeline.definitions import defs
from import_pipeline.history import import_history, import_summary
from import_pipeline.landing import LANDED_FILES, content_hash, partition_key
from import_pipeline.launch import import_file, revert_partition
from import_pipeline.run_config import with_plan
from import_pipeline.schema import REVERT_COUNTS
from import_pipeline_tests.shared import CLI

EXISTING = (
    "Company,Email,Title,City\n"
    "Acme,ann@acme.com,CEO,\n"  # 2
    "Beta,bob@beta.com,,Lyon\n"  # 3
    "Delta,dan@delta.com,CTO,Nice\n"  # 4
)
INCOMING = (
    "Company,Email,Title,City\n"
    "Acme Corp,ANN@acme.com,,Paris\n"  # 2 matches Ann: company and city change under update
    "Beta,bob@beta.com,VP,\n"  # 3 matches Bob: a title under update and merge
    "Gamma,gus@gamma.com,,\n"  # 4 new
    "Gamma bis,gus@gamma.com,,\n"  # 5 duplicate of line 4
    "Echo,eve@echo.com,CFO,Rome\n"  # 6 new
)
LEADS = "SELECT email, company_name, title, city, duplicate_of IS NOT NULL FROM leads ORDER BY id"


def _import(tmp_path, name: str, text: str, **load) -> dict:
    path = tmp_path / name
    path.write_text(text)
    result = import_file(path, {"ops": {"load": {"config": load}}})
    assert result["status"] in ("success", "planned"), result["error"]
    return result


def _leads(pipeline) -> list[tuple]:
    return pipeline.query(LEADS)


def _revert_rows(pipeline, partition_key: str) -> list[tuple]:
    return pipeline.query(
        "SELECT h.source_row, h.action, h.detail FROM revert_history h JOIN import_reverts r ON r.id = h.revert_id "
        "JOIN imports i ON i.id = r.import_id WHERE i.partition_key = %s ORDER BY h.source_row",
        (partition_key,),
    )


@pytest.mark.parametrize("on_existing", ["skip", "update", "merge", "create"])
def test_plan_load_and_revert_agree_for_each_strategy(pipeline, tmp_path, on_existing):
    _import(tmp_path, "existing.csv", EXISTING)
    before = _leads(pipeline)
    imports_before = pipeline.scalar("SELECT count(*) FROM imports")

    plan = _import(tmp_path, "incoming.csv", INCOMING, on_existing=on_existing, plan=True)

    assert plan["status"] == "planned"
    assert _leads(pipeline) == before, "a plan commits nothing"
    assert pipeline.scalar("SELECT count(*) FROM imports") == imports_before
    real = _import(tmp_path, "incoming.csv", INCOMING, on_existing=on_existing)
    assert real["partition_key"] == plan["partition_key"]
    counted = ("rows_read", "rows_rejected", "duplicates_in_file", "duplicates_existing", "inserted", "updated")
    assert {k: plan[k] for k in (*counted, "merged", "created")} == {
        k: real[k] for k in (*counted, "merged", "created")
    }
    with open(plan["plan_report"], encoding="utf-8-sig", newline="") as f:
        planned = [
            (int(p["line"]), p["field"], p["old_value"] or None, p["new_value"] or None) for p in csv.DictReader(f)
        ]
    committed = pipeline.query(
        "SELECT o.source_row, c.key, c.value->>'old', c.value->>'new' FROM import_outcomes o "
        "JOIN imports i ON i.id = o.import_id CROSS JOIN LATERAL jsonb_each(o.changes) c "
        "WHERE i.partition_key = %s ORDER BY 1, 2",
        (real["partition_key"],),
    )
    assert planned == committed
    assert (len(planned) > 0) == (on_existing in ("update", "merge"))

    reverted = revert_partition(real["partition_key"])

    assert reverted["status"] == "reverted", reverted["error"]
    assert _leads(pipeline) == before, "the table is as it was before the import"
    changed = {"skip": 2, "update": 4, "merge": 4, "create": 4}[on_existing]
    assert (reverted["rows_changed"], reverted["conflict"], reverted["untouched"]) == (changed, 0, 0)
    assert reverted["removed"] == {"skip": 2, "update": 2, "merge": 2, "create": 4}[on_existing]
    assert reverted["removed"] + reverted["restored"] == changed
    assert [action for _, action, _ in _revert_rows(pipeline, real["partition_key"])].count("removed") == reverted[
        "removed"
    ]
    assert pipeline.scalar(
        "SELECT reverted_at IS NOT NULL FROM imports WHERE partition_key = %s", (real["partition_key"],)
    )

    again = revert_partition(real["partition_key"])

    assert again["status"] == "reverted" and again["already_reverted"] is True
    assert _leads(pipeline) == before
    assert {k: again[k] for k in REVERT_COUNTS} == {k: reverted[k] for k in REVERT_COUNTS}
    assert pipeline.scalar("SELECT count(*) FROM import_reverts") == 1
    if on_existing == "update":
        _assert_plan_is_an_observation(pipeline, plan)


def _assert_plan_is_an_observation(pipeline, plan: dict) -> None:
    run = pipeline.instance.get_run_by_id(plan["run_id"])
    assert run.tags["import_pipeline/planned_updated"] == "2"
    assert "import_pipeline/updated" not in run.tags
    records = pipeline.instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("leads"), asset_partitions=[plan["partition_key"]]), limit=5
    ).records
    planned = [r.asset_observation.metadata for r in records if "planned" in r.asset_observation.metadata]
    assert planned[0]["planned_changes"].value == 4
    assert "| 2 |" in planned[0]["changes"].value and "Acme Corp" in planned[0]["changes"].value
    materialized = pipeline.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("leads"), asset_partitions=[plan["partition_key"]]), limit=5
    ).records
    assert [r.run_id for r in materialized] != [] and plan["run_id"] not in [r.run_id for r in materialized]


# After each strategy's import, the application changes Ann's and Bob's city and Eve's title; the revert
# leaves what it must, and the table it leaves, lead by lead (by id), with the conflicts it reports.
AFTER_CONFLICTS = {
    "skip": (
        (1, 0, 1),  # removed, restored, conflicts: Gus removed; Eve (inserted, then changed) kept
        [
            ("ann@acme.com", "Acme", "CEO", "Berlin", False),
            ("bob@beta.com", "Beta", None, "Paris", False),
            ("dan@delta.com", "Delta", "CTO", "Nice", False),
            ("eve@echo.com", "Echo", "CEO", "Rome", False),
        ],
        [("6", "(lead)", "a new lead", "changed since")],
    ),
    "update": (
        (1, 1, 2),  # Ann's city is not the import's any more: kept whole; Bob's title undone, his city kept
        [
            ("ANN@acme.com", "Acme Corp", "CEO", "Berlin", False),
            ("bob@beta.com", "Beta", None, "Paris", False),
            ("dan@delta.com", "Delta", "CTO", "Nice", False),
            ("eve@echo.com", "Echo", "CEO", "Rome", False),
        ],
        [("2", "city", "Paris", "Berlin"), ("6", "(lead)", "a new lead", "changed since")],
    ),
    "merge": (
        (1, 1, 2),
        [
            ("ann@acme.com", "Acme", "CEO", "Berlin", False),
            ("bob@beta.com", "Beta", None, "Paris", False),
            ("dan@delta.com", "Delta", "CTO", "Nice", False),
            ("eve@echo.com", "Echo", "CEO", "Rome", False),
        ],
        [("2", "city", "Paris", "Berlin"), ("6", "(lead)", "a new lead", "changed since")],
    ),
    "create": (
        (1, 0, 3),  # the flagged copies of Ann and Bob were changed too (same email): kept, like Eve
        [
            ("ann@acme.com", "Acme", "CEO", "Berlin", False),
            ("bob@beta.com", "Beta", None, "Paris", False),
            ("dan@delta.com", "Delta", "CTO", "Nice", False),
            ("eve@echo.com", "Echo", "CEO", "Rome", False),  # new leads first, in email order, then the copies
            ("ANN@acme.com", "Acme Corp", None, "Berlin", True),
            ("bob@beta.com", "Beta", "VP", "Paris", True),
        ],
        [
            ("2", "(lead)", "a new lead", "changed since"),
            ("3", "(lead)", "a new lead", "changed since"),
            ("6", "(lead)", "a new lead", "changed since"),
        ],
    ),
}


@pytest.mark.parametrize("on_existing", list(AFTER_CONFLICTS))
def test_revert_leaves_leads_changed_since_and_lists_them(pipeline, tmp_path, on_existing):
    _import(tmp_path, "existing.csv", EXISTING)
    result = _import(tmp_path, "incoming.csv", INCOMING, on_existing=on_existing)
    pipeline.execute("UPDATE leads SET city = 'Berlin' WHERE email_key = 'ann@acme.com'")
    pipeline.execute("UPDATE leads SET city = 'Paris' WHERE email_key = 'bob@beta.com'")
    pipeline.execute("UPDATE leads SET title = 'CEO' WHERE email_key = 'eve@echo.com'")

    reverted = revert_partition(result["partition_key"])

    counts, table, conflicts = AFTER_CONFLICTS[on_existing]
    assert (reverted["removed"], reverted["restored"], reverted["conflict"], reverted["untouched"]) == (*counts, 0)
    assert _leads(pipeline) == table
    with open(reverted["revert_report"], encoding="utf-8-sig", newline="") as f:
        report = [(r["line"], r["field"], r["written_by_import"], r["current_value"]) for r in csv.DictReader(f)]
    assert report == conflicts
    assert pipeline.instance.get_run_by_id(reverted["run_id"]).tags["import_pipeline/conflict"] == str(counts[2])


def test_revert_with_force_overrides_changes_since(pipeline, tmp_path):
    _import(tmp_path, "existing.csv", EXISTING)
    before = _leads(pipeline)
    result = _import(tmp_path, "incoming.csv", INCOMING, on_existing="update")
    pipeline.execute("UPDATE leads SET city = 'Berlin' WHERE email_key = 'ann@acme.com'")
    pipeline.execute("UPDATE leads SET title = 'CEO' WHERE email_key = 'eve@echo.com'")

    reverted = revert_partition(result["partition_key"], force=True)

    assert (reverted["removed"], reverted["restored"], reverted["conflict"], reverted["overridden"]) == (2, 2, 0, 2)
    assert _leads(pipeline) == before


def test_revert_keeps_a_lead_a_later_import_matched(pipeline, tmp_path):
    first = _import(tmp_path, "first.csv", "Company,Email\nGamma,gus@gamma.com\n")
    second = _import(tmp_path, "second.csv", "Company,Email,City\nGamma,gus@gamma.com,Oslo\n", on_existing="merge")

    reverted = revert_partition(first["partition_key"])

    assert (reverted["removed"], reverted["conflict"]) == (0, 1)
    assert _leads(pipeline) == [("gus@gamma.com", "Gamma", None, "Oslo", False)]
    detail = _revert_rows(pipeline, first["partition_key"])[0][2]
    assert detail["city"]["why"] == f"changed since by import {second['partition_key']}"


def test_revert_then_import_again_with_other_settings_is_linked(pipeline, tmp_path):
    _import(tmp_path, "existing.csv", EXISTING)
    # From the landing folder: the import moves the file to processed/, where the same partition finds it again.
    result = _import(pipeline.landing, "incoming.csv", INCOMING, on_existing="skip")
    assert not (pipeline.landing / "incoming.csv").exists()
    revert_partition(result["partition_key"])

    with dg.DagsterInstance.get() as instance:
        from import_pipeline.launch import run_here

        run_id = run_here(
            instance,
            {"ops": {"load": {"config": {"on_existing": "update"}}}},
            {"dagster/partition": result["partition_key"]},
        )
    history = import_history(pipeline.instance)
    again = next(row for row in history if row["run_id"] == run_id)
    assert again["status"] == "success", again["error"]
    assert (again["updated"], again["inserted"]) == (2, 2)
    assert again["replaces_run_id"] == result["run_id"]
    assert pipeline.instance.get_run_by_id(run_id).tags["import_pipeline/replaces_run"] == result["run_id"]
    assert [row["status"] for row in history[:3]] == ["success", "reverted", "success"]
    assert (
        pipeline.scalar(
            "SELECT count(*) FROM imports WHERE partition_key = %s AND reverted_at IS NULL", (result["partition_key"],)
        )
        == 1
    )


def test_cli_plan_and_revert_report_counts_and_refuse_an_unknown_partition(pipeline, tmp_path):
    _import(tmp_path, "existing.csv", EXISTING)
    (tmp_path / "incoming.csv").write_text(INCOMING)
    planned = subprocess.run([*CLI, "import", str(tmp_path / "incoming.csv"), "--plan", "--json"], capture_output=True)
    result = _import(tmp_path, "incoming.csv", INCOMING)

    done = subprocess.run([*CLI, "revert", result["partition_key"], "--json"], capture_output=True, text=True)

    assert planned.returncode == 0, planned.stderr
    assert (json.loads(planned.stdout)["status"], json.loads(planned.stdout)["inserted"]) == ("planned", 2)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["removed"] == 2
    with pytest.raises(ValueError, match=r"no partition 'nothing\.csv@0123456789abcdef'"):
        revert_partition("nothing.csv@0123456789abcdef")


REVIEWED_PROFILE = 'name = "vendor_lists"\nfile_pattern = "*vendor*"\nreview = true\n'


def _land_for_review(pipeline, name: str, text: str) -> str:
    """A landed file that a user profile marks for review, added as its partition (as the landing sensor does)."""
    profiles = pipeline.home / "mapping_profiles"
    profiles.mkdir(exist_ok=True)
    (profiles / "vendor_lists.toml").write_text(REVIEWED_PROFILE)
    path = pipeline.landing / name
    path.write_text(text)
    key = partition_key(path.name, content_hash(path))
    pipeline.instance.add_dynamic_partitions(LANDED_FILES, [key])
    return key


def _run_job(pipeline, job_name: str, key: str, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(job_name)
    return job.execute_in_process(
        instance=pipeline.instance, partition_key=key, run_config=run_config or {}, raise_on_error=False
    )


def test_review_plans_and_waits_then_approval_commits_with_its_options(pipeline, tmp_path):
    _import(tmp_path, "existing.csv", EXISTING)
    before = _leads(pipeline)
    key = _land_for_review(pipeline, "vendor_may.csv", INCOMING)

    waiting = _run_job(pipeline, "import_leads_job", key)

    assert waiting.success
    summary = import_summary(pipeline.instance, waiting.run_id)
    assert summary["status"] == "awaiting approval"
    assert (
        "approve_import_job"
        in pipeline.instance.get_run_by_id(waiting.run_id).tags["import_pipeline/awaiting_approval"]
    )
    assert _leads(pipeline) == before and (pipeline.landing / "vendor_may.csv").exists()
    # Meanwhile the application adds one of the leads the plan would have inserted.
    pipeline.execute("INSERT INTO leads (company_name, email) VALUES ('Echo', 'eve@echo.com')")

    approved = _run_job(
        pipeline,
        "approve_import_job",
        key,
        {"ops": {"leads": {"ops": {"load": {"config": {"on_existing": "update"}}}}}},
    )

    assert approved.success
    result = import_summary(pipeline.instance, approved.run_id)
    assert result["status"] == "success", result["error"]
    assert (result["inserted"], result["updated"]) == (1, 3), "approved with on_existing: update, chosen then"
    assert result["plan_difference"] == {
        "inserted": {"planned": 2, "committed": 1},
        "updated": {"planned": 0, "committed": 3},
        "duplicates_existing": {"planned": 2, "committed": 0},
    }
    assert pipeline.instance.get_run_by_id(approved.run_id).tags["import_pipeline/approved_plan_run"] == waiting.run_id
    assert not (pipeline.landing / "vendor_may.csv").exists(), "committed: archived to processed/"
    assert pipeline.scalar("SELECT title FROM leads WHERE email_key = 'bob@beta.com'") == "VP"


def test_decline_moves_the_file_aside_with_its_reason_and_commits_nothing(pipeline, tmp_path):
    key = _land_for_review(pipeline, "vendor_june.csv", INCOMING)
    assert _run_job(pipeline, "import_leads_job", key).success

    declined = _run_job(pipeline, "decline_import_job", key, {"ops": {"decline": {"config": {"reason": "wrong list"}}}})

    assert declined.success
    moved = list((pipeline.home / "declined").glob("vendor_june*"))
    assert sorted(p.name for p in moved) == ["vendor_june.csv", "vendor_june.csv.reason.txt"]
    assert (pipeline.home / "declined" / "vendor_june.csv.reason.txt").read_text() == "wrong list\n"
    assert pipeline.scalar("SELECT count(*) FROM leads") == 0
    history = import_history(pipeline.instance)
    assert (history[0]["status"], history[0]["reason"], history[1]["status"]) == (
        "declined",
        "wrong list",
        "awaiting approval",
    )
    # A committed import is reverted, not declined.
    committed = _import(tmp_path, "plain.csv", EXISTING)
    refused = _run_job(pipeline, "decline_import_job", committed["partition_key"])
    assert not refused.success
    assert "was imported already" in import_history(pipeline.instance)[0]["error"]


def test_with_plan_keeps_the_rest_of_the_run_config():
    short = {"ops": {"load": {"config": {"on_existing": "merge"}}, "parse": {"config": {"sheet": "Leads"}}}}

    planned = with_plan(short)

    assert planned == {
        "ops": {
            "leads": {
                "ops": {
                    "load": {"config": {"on_existing": "merge", "plan": True}},
                    "parse": {"config": {"sheet": "Leads"}},
                }
            }
        }
    }
    assert with_plan(planned) == planned
    assert with_plan({}) == {"ops": {"leads": {"ops": {"load": {"config": {"plan": True}}}}}}
