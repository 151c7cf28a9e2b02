"""The hostile-file set (see hostile_files.py): each file reads exactly as expected or fails with its own error."""

import json

import dagster as dg
import pytest

from import_pipeline.definitions import defs
from import_pipeline.formats import FileRejected
from import_pipeline.landing import content_hash, partition_key
from import_pipeline.launch import import_file
from import_pipeline.parse import ParseConfig, read_leads
from import_pipeline.schema import SOURCE_ROW
from import_pipeline.sensors import landing_sensor
from import_pipeline.state import StateFolder
from import_pipeline.validate import split_valid
from import_pipeline_tests.hostile_files import ROW_VALUES, ROWS, Hostile, hostile_files

HOSTILE = hostile_files()
READABLE = [h for h in HOSTILE if not h.error]
UNUSABLE = [h for h in HOSTILE if h.error]


def _read(hostile: Hostile, tmp_path, warnings: list[str] | None = None):
    path = tmp_path / hostile.name
    path.write_bytes(hostile.content)
    return read_leads(path, ParseConfig(**hostile.config), tmp_path / "work", warnings)


@pytest.mark.parametrize("hostile", READABLE, ids=lambda h: h.name)
def test_hostile_file_reads_exactly(hostile, tmp_path):
    warnings: list[str] = []
    records, mapping, details = _read(hostile, tmp_path, warnings)
    _valid, rejected = split_valid(records, mapping)

    assert records.height == hostile.rows_read
    problems = {
        row: [r["problem"] for r in json.loads(reasons)]
        for row, reasons in rejected.select(SOURCE_ROW, "reasons").iter_rows()
    }
    assert problems.keys() == hostile.rejected.keys(), problems
    for line, problem in hostile.rejected.items():
        assert any(problem in p for p in problems[line]), (line, problems[line])
    by_line = {row[SOURCE_ROW]: row for row in records.iter_rows(named=True)}
    for line, fields in hostile.values.items():
        assert {f: by_line[line][f] for f in fields} == fields, line
    assert hostile.details.items() <= details.items(), details
    assert tuple(warnings) == hostile.warnings


@pytest.mark.parametrize("hostile", UNUSABLE, ids=lambda h: h.name)
def test_hostile_file_unusable_says_why(hostile, tmp_path):
    with pytest.raises(FileRejected) as rejected:
        _read(hostile, tmp_path)

    assert str(rejected.value) == hostile.error


def test_hostile_file_failures_quarantine_and_load_nothing(pipeline):
    """Through the job: each unusable landed file fails its run with its reason and moves to quarantine."""
    for hostile in UNUSABLE:
        path = pipeline.landing / hostile.name
        path.write_bytes(hostile.content)
        config = {"ops": {"parse": {"config": hostile.config}}} if hostile.config else {}

        result = import_file(path, config)

        reason = f"{hostile.name}: {hostile.error}"
        assert (result["status"], result["error"]) == ("failed", reason)
        assert not path.exists()
        assert (pipeline.home / "quarantine" / f"{hostile.name}.reason.txt").read_text() == reason + "\n"
        run = pipeline.instance.get_run_by_id(result["run_id"])
        assert run.status.value == "FAILURE"
        (failure,) = pipeline.instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
        assert (
            failure.event_log_entry.dagster_event.step_failure_data.user_failure_data.metadata["reason"].value == reason
        )
    assert pipeline.scalar("SELECT count(*) FROM leads") == 0
    assert pipeline.scalar("SELECT count(*) FROM imports") == 0
    # The sensor carries on: the next good file is picked up, the quarantined ones are not.
    good = pipeline.landing / "good.csv"
    good.write_text("Company,Email\nAcme,ann@acme.com\n")
    cursor = None
    for _ in range(2):  # a file counts once it is unchanged between two ticks
        tick = landing_sensor(
            dg.build_sensor_context(
                instance=pipeline.instance,
                cursor=cursor,
                definitions=defs,
                resources={"state": StateFolder(home=str(pipeline.home))},
            )
        )
        cursor = tick.cursor
    assert [r.partition_key for r in tick.run_requests] == [partition_key("good.csv", content_hash(good))]


@pytest.mark.parametrize("name", ["excel_unicode.txt", "banner.xlsx"])
def test_hostile_file_imports_end_to_end(pipeline, name):
    hostile = next(h for h in HOSTILE if h.name == name)
    path = pipeline.landing / name
    path.write_bytes(hostile.content)

    result = import_file(path, {"ops": {"validate": {"config": {"max_error_rate": 0.5}}}})

    assert result["status"] == "success", result["error"]
    assert (result["rows_read"], result["rows_rejected"], result["inserted"]) == (5, 1, 4)
    offset = min(hostile.values) - min(ROW_VALUES)  # banner rows push every line down
    assert pipeline.query("SELECT source_row, company_name, first_name FROM leads ORDER BY source_row") == [
        (line + offset, row[0], row[1]) for line, row in zip(range(2, 7), ROWS, strict=True) if line != 4
    ]
    assert pipeline.query("SELECT source_row, raw_values->>'Email' FROM rejected_rows") == [
        (4 + offset, "not-an-email")
    ]
