"""Review of possible duplicates through resolve_duplicates_job, on real PostgreSQL and a real Dagster instance."""

import dagster as dg
import pytest

from import_pipeline.definitions import defs
from import_pipeline.launch import import_file, revert_partition
from import_pipeline.resolve_duplicates import RESOLVE_JOB, ResolveDuplicatesConfig
from import_pipeline.sensors import possible_duplicates_sensor

EXISTING = (
    "Company,First Name,Last Name,Email,Phone,City\n"
    "ACME Inc.,Robert,Smith,robert.smith@acme.com,+1 415 555 0100,\n"  # Bob Smith's candidate, without city
    "Globex,Maria,Garcia,mgarcia@globex.com,,Austin\n"
)
INCOMING = (
    "Company,First Name,Last Name,Email,Phone,City\n"
    "Acme Incorporated,Bob,Smith,bob.smith@gmail.com,+1 415 555 0100,Boston\n"  # 2 flagged: Robert Smith
    "Globex Corporation,María,Garcia,maria.g@yahoo.com,,Houston\n"  # 3 review: Maria Garcia, who moved
    "Initech,Peter,Gibbons,peter@initech.com,,Dallas\n"  # 4 new
)
SCORING = {"ops": {"dedupe": {"config": {"possible_duplicates": {"enabled": True}}}}}


def _imported(pipeline, tmp_path) -> dict:
    for name, text, config in (("existing.csv", EXISTING, {}), ("incoming.csv", INCOMING, SCORING)):
        (tmp_path / name).write_text(text)
        result = import_file(tmp_path / name, config)
        assert result["status"] == "success", result["error"]
    return result


def _resolve(pipeline, **config) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(RESOLVE_JOB)
    return job.execute_in_process(
        instance=pipeline.instance,
        run_config={"ops": {"possible_duplicates": {"config": config}}},
        raise_on_error=False,
    )


def _metadata(result: dg.ExecuteInProcessResult) -> dict:
    (materialization,) = result.asset_materializations_for_node("possible_duplicates")
    return {k: v.value for k, v in materialization.metadata.items()}


def _pair(pipeline, email: str) -> int:
    return pipeline.scalar(
        "SELECT p.id FROM possible_duplicates p JOIN leads l ON l.id = p.lead_id WHERE l.email = %s", (email,)
    )


def _lead(pipeline, email: str) -> tuple:
    return pipeline.query("SELECT phone, city, duplicate_of FROM leads WHERE email = %s", (email,))[0]


def test_resolve_duplicates_show_merge_and_undo(pipeline, tmp_path):
    """The queue side by side; a merge retires the lead and fills its candidate; undo takes it all back."""
    _imported(pipeline, tmp_path)
    shown = _resolve(pipeline)
    assert shown.success
    queue = _metadata(shown)
    assert (queue["open"], queue["open_flagged"], queue["open_review"]) == (2, 1, 1)
    bob = _pair(pipeline, "bob.smith@gmail.com")
    pairs = queue["open_pairs"]
    assert (
        f"**Pair {bob}**: 0.81 (flagged) — company: same; first name: nickname; last name: same; phone: same" in pairs
    )
    assert "| first name | Bob | Robert |" in pairs and "| company name | Acme Incorporated | ACME Inc. |" in pairs
    assert "| email | bob.smith@gmail.com | robert.smith@acme.com |" in pairs and "| city | Boston |  |" in pairs
    robert = pipeline.scalar("SELECT id FROM leads WHERE email = 'robert.smith@acme.com'")

    merged = _resolve(pipeline, action="merge", pairs=[bob])

    assert merged.success
    done = _metadata(merged)
    assert (done["merged"], done["skipped"], done["open"], done["open_flagged"]) == (1, 0, 1, 0)
    assert _lead(pipeline, "robert.smith@acme.com") == ("+1 415 555 0100", "Boston", None)
    assert _lead(pipeline, "bob.smith@gmail.com")[2] == robert
    history = pipeline.query(
        "SELECT h.action, h.changes FROM lead_history h JOIN imports i ON i.id = h.import_id "
        "WHERE i.partition_key = %s ORDER BY h.source_row",
        (done["resolution"],),
    )
    assert [action for action, _ in history] == ["updated", "merged"]
    assert history[0][1] == {"duplicate_of": {"old": None, "new": robert}}
    assert history[1][1]["city"] == {"old": None, "new": "Boston"}
    assert pipeline.scalar("SELECT status FROM possible_duplicates WHERE id = %s", (bob,)) == "merged"
    # The lead the queue retired no longer matches: an import of Bob's address finds Robert's by no key.
    assert pipeline.scalar("SELECT count(*) FROM leads WHERE deleted_at IS NULL AND duplicate_of IS NULL") == 4

    again = _resolve(pipeline, action="merge", pairs=[bob])
    assert _metadata(again)["skipped"] == 1
    assert f"already merged by run {merged.run_id}" in _metadata(again)["not_resolved"]

    undone = _resolve(pipeline, action="undo", resolution=merged.run_id)

    assert undone.success
    assert (_metadata(undone)["restored"], _metadata(undone)["conflict"]) == (2, 0)
    assert _lead(pipeline, "robert.smith@acme.com") == ("+1 415 555 0100", None, None)
    assert _lead(pipeline, "bob.smith@gmail.com") == ("+1 415 555 0100", "Boston", None)
    assert pipeline.scalar("SELECT status FROM possible_duplicates WHERE id = %s", (bob,)) == "open"
    assert _metadata(undone)["open"] == 2


def test_resolve_duplicates_undo_leaves_what_changed_since(pipeline, tmp_path):
    """A candidate the application changed after the merge is left as it is and listed; the pair stays merged."""
    _imported(pipeline, tmp_path)
    bob = _pair(pipeline, "bob.smith@gmail.com")
    merged = _resolve(pipeline, action="merge", pairs=[bob])
    pipeline.execute("UPDATE leads SET city = 'Cambridge' WHERE email = 'robert.smith@acme.com'")

    undone = _resolve(pipeline, action="undo", resolution=merged.run_id)

    report = _metadata(undone)
    assert (report["restored"], report["conflict"]) == (1, 1)
    assert "Cambridge" in report["conflicts"]
    assert _lead(pipeline, "robert.smith@acme.com")[1] == "Cambridge"
    assert _lead(pipeline, "bob.smith@gmail.com")[2] is None  # the retired lead is live again
    assert pipeline.scalar("SELECT status FROM possible_duplicates WHERE id = %s", (bob,)) == "merged"


def test_resolve_duplicates_keep_separate_is_final(pipeline, tmp_path):
    """Pairs kept separate (all from a score) are recorded and neither merged nor proposed again."""
    _imported(pipeline, tmp_path)
    kept = _resolve(pipeline, action="keep_separate", min_score=0.5)

    assert _metadata(kept)["kept_separate"] == 2 and _metadata(kept)["open"] == 0
    assert _metadata(kept)["open_pairs"] == "No open pairs: nothing waits for review."
    assert pipeline.scalar("SELECT count(*) FROM kept_separate") == 2
    bob = _pair(pipeline, "bob.smith@gmail.com")
    refused = _resolve(pipeline, action="merge", pairs=[bob, 999_999])
    assert _metadata(refused)["merged"] == 0
    assert "already kept separate" in _metadata(refused)["not_resolved"]
    assert "no such pair" in _metadata(refused)["not_resolved"]
    assert _lead(pipeline, "bob.smith@gmail.com")[2] is None


def test_resolve_duplicates_revert_of_the_import_closes_its_pairs(pipeline, tmp_path):
    """Reverting the import that queued pairs removes its leads and marks its open pairs reverted."""
    result = _imported(pipeline, tmp_path)
    reverted = revert_partition(result["partition_key"])
    assert reverted["removed"] == 3
    statuses = pipeline.query("SELECT DISTINCT status FROM possible_duplicates")
    assert statuses == [("reverted",)]
    assert _metadata(_resolve(pipeline))["open"] == 0


def _sensor_after(pipeline, run_id: str):
    run = pipeline.instance.get_run_by_id(run_id)
    event = pipeline.instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_SUCCESS).records[-1]
    context = dg.build_run_status_sensor_context(
        sensor_name=possible_duplicates_sensor.name,
        dagster_event=event.event_log_entry.dagster_event,
        dagster_instance=pipeline.instance,
        dagster_run=run,
    )
    return possible_duplicates_sensor(context)


def test_resolve_duplicates_sensor_refreshes_the_queue_after_an_import_that_queued(pipeline, tmp_path):
    """An import that queued pairs requests a `show` run of resolve_duplicates_job; one that queued none, nothing."""
    (tmp_path / "existing.csv").write_text(EXISTING)
    plain = import_file(tmp_path / "existing.csv")
    (tmp_path / "incoming.csv").write_text(INCOMING)
    scored = import_file(tmp_path / "incoming.csv", SCORING)

    assert isinstance(_sensor_after(pipeline, plain["run_id"]), dg.SkipReason)
    request = _sensor_after(pipeline, scored["run_id"])
    assert isinstance(request, dg.RunRequest)
    assert (request.run_key, request.tags["import_pipeline/queued_by_run"]) == (
        f"queued-by-{scored['run_id']}",
        scored["run_id"],
    )
    assert request.run_config == {}  # the default config: action show


def test_resolve_duplicates_config_refuses_unclear_choices():
    """merge needs pairs or a score (not both); undo needs the run to undo; plain messages."""
    with pytest.raises(ValueError, match="merge: give either pairs"):
        ResolveDuplicatesConfig(action="merge")
    with pytest.raises(ValueError, match="merge: give either pairs"):
        ResolveDuplicatesConfig(action="merge", pairs=[1], min_score=0.9)
    with pytest.raises(ValueError, match="undo needs resolution"):
        ResolveDuplicatesConfig(action="undo")
    with pytest.raises(ValueError, match="show: pairs, min_score and band"):
        ResolveDuplicatesConfig(pairs=[1])
