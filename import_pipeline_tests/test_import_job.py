"""The import job end to end on real PostgreSQL and a Postgres-backed Dagster instance."""

import json

import dagster as dg
import pytest

from import_pipeline.launch import import_file
from import_pipeline.load import LEADS_ASSET
from import_pipeline_tests.hostile_files import LONG_VALUE, LONG_VALUE_LINES, WIDE_COLUMNS, hostile_files, workbook
from import_pipeline_tests.shared import FILLER, HANDMADE, HANDMADE_COUNTS


def _counts(result: dict) -> dict:
    return {k: result[k] for k in HANDMADE_COUNTS}


def test_import_job_handmade_file_exact_outcome(pipeline, tmp_path):
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)

    result = import_file(path)

    assert result["status"] == "success", result["error"]
    assert _counts(result) == HANDMADE_COUNTS
    leads = pipeline.query(
        "SELECT source_row, company_name, email, email_key, phone, notes FROM leads WHERE source_row < 16 ORDER BY source_row"
    )
    assert leads == [
        (2, "Acme", "ann@acme.com", "ann@acme.com", "0612345678", None),
        (3, "Beta", "BOB@beta.com", "bob@beta.com", None, "two\nlines"),
        (11, "Foxtrot", None, None, "+33 1 23", None),
        (12, "Golf", None, None, "0099", None),
        (13, "Golf", None, None, "0099", None),
    ]
    # Columns no field maps to are kept with each lead, under the user's own header.
    assert pipeline.query("SELECT extra FROM leads WHERE source_row IN (2, 11) ORDER BY source_row") == [
        ({"Lead Source": "web"},),
        ({"Lead Source": None},),
    ]
    rejects = pipeline.query("SELECT source_row, reasons, raw_values FROM rejected_rows ORDER BY source_row")
    assert [(row, [r["problem"] for r in reasons]) for row, reasons, _ in rejects] == [
        (6, ["company_name is required"]),
        (7, ["email is not valid: An email address must have an @-sign"]),
        (8, ["row has no email, phone or external_id"]),
        (14, ["company_name is longer than 255 characters"]),
        (15, ["company_name contains a NUL byte"]),
    ]
    # Raw values keep the user's own headers, unmapped columns included; NUL is shown, not lost.
    assert rejects[0][2] == {
        "Company": None,
        "First Name": "Cid",
        "Last Name": None,
        "E-mail": "cid@x.com",
        "Phone": None,
        "Notes": None,
        "Lead Source": None,
    }
    assert rejects[4][2]["Company"] == "Nul\u2400Co"
    # Provenance: every lead names its import, file and row.
    assert (
        pipeline.scalar(
            "SELECT count(*) FROM leads l JOIN imports i ON i.id = l.created_by_import "
            "WHERE i.partition_key = %s AND l.source_file = %s AND l.updated_by_import = i.id",
            (result["partition_key"], str(path)),
        )
        == 5 + FILLER
    )


def test_import_job_materialization_is_the_history(pipeline, tmp_path):
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)

    result = import_file(path)

    records = pipeline.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=LEADS_ASSET, asset_partitions=[result["partition_key"]]), limit=5
    ).records
    assert len(records) == 1
    metadata = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
    assert {k: metadata[k] for k in HANDMADE_COUNTS} == HANDMADE_COUNTS
    assert metadata["source_file"] == str(path)
    assert metadata["content_hash"].startswith(result["partition_key"].rsplit("@", 1)[1])
    assert metadata["duration_s"] > 0 and metadata["rows_per_s"] > 0
    run = pipeline.instance.get_run_by_id(result["run_id"])
    assert run.tags["dagster/partition"] == result["partition_key"]
    # The Runs list shows the outcome counts as tags (the zero ones left out).
    assert {k.removeprefix("import_pipeline/"): v for k, v in run.tags.items() if k.startswith("import_pipeline/")} == {
        "source_file": "handmade.csv",
        **{k: f"{v:,}" for k, v in HANDMADE_COUNTS.items() if v},
    }
    # The `imports` ledger agrees with the history.
    assert pipeline.scalar("SELECT counts FROM imports WHERE run_id = %s", (result["run_id"],)) == HANDMADE_COUNTS


def test_import_job_overlapping_file_counts_existing_duplicates(pipeline, tmp_path):
    first = tmp_path / "first.csv"
    first.write_text(HANDMADE)
    second = tmp_path / "second.csv"
    second.write_text(
        "Company Name,Email\n"
        "Acme again,ANN@acme.com\n"  # already a lead
        "Beta again,bob@beta.com\n"  # already a lead
        "Hotel,new@hotel.com\n"  # new
        "Hotel copy,new@hotel.com\n"  # duplicate within this file
    )

    assert import_file(first)["status"] == "success"
    result = import_file(second)

    assert result["status"] == "success", result["error"]
    assert _counts(result) == {
        "rows_read": 4,
        "rows_valid": 4,
        "rows_rejected": 0,
        "duplicates_in_file": 1,
        "duplicates_existing": 2,
        "inserted": 1,
        "updated": 0,
        "merged": 0,
        "created": 0,
    }
    assert pipeline.scalar("SELECT count(*) FROM leads") == 6 + FILLER
    # Existing leads are left alone by default.
    assert pipeline.scalar("SELECT company_name FROM leads WHERE email_key = 'ann@acme.com'") == "Acme"
    assert (
        pipeline.scalar(
            "SELECT count(*) FROM (SELECT email_key FROM leads GROUP BY 1 HAVING count(*) > 1) d "
            "WHERE email_key IS NOT NULL"
        )
        == 0
    )


def test_import_job_same_bytes_again_are_skipped(pipeline, tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(HANDMADE)
    first = import_file(path)
    renamed = tmp_path / "renamed.csv"
    path.rename(renamed)

    again = import_file(renamed)

    assert again["status"] == "skipped"
    assert again["already_imported_as"] == first["partition_key"]
    assert _counts(again) == HANDMADE_COUNTS
    assert pipeline.scalar("SELECT count(*) FROM leads") == 5 + FILLER
    assert pipeline.scalar("SELECT count(*) FROM imports") == 1


def test_import_job_each_sheet_is_an_import_of_its_own(pipeline, tmp_path):
    path = tmp_path / "events.xlsx"
    path.write_bytes(
        workbook(
            {
                "Leads 1": [["Company", "Email"], ["Acme", "ann@acme.com"], ["Beta", "bob@beta.com"]],
                "Leads 2": [["Company", "Email"], ["Gamma", "gus@gamma.com"]],
            }
        )
    )
    second = import_file(path, {"ops": {"parse": {"config": {"sheet": "Leads 2"}}}})
    first = import_file(path, {"ops": {"parse": {"config": {"sheet": "Leads 1"}}}})
    default = import_file(path)  # the first sheet, as the landing sensor imports a workbook

    assert (second["status"], second["inserted"], second["partition_key"].split("@")[0]) == (
        "success",
        1,
        "events.xlsx~Leads_2",
    )
    assert (first["status"], first["inserted"], first["partition_key"].split("@")[0]) == (
        "success",
        2,
        "events.xlsx~Leads_1",
    )
    assert (default["status"], default["already_imported_as"], default["inserted"]) == (
        "skipped",
        first["partition_key"],
        2,
    )
    assert pipeline.query("SELECT company_name FROM leads ORDER BY id") == [("Gamma",), ("Acme",), ("Beta",)]
    assert pipeline.query("SELECT partition_key, sheet FROM imports ORDER BY id") == [
        (second["partition_key"], "Leads 2"),
        (first["partition_key"], "Leads 1"),
    ]


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        (
            "nocompany.csv",
            "Name,Email\nAnn,ann@x.com\n",
            "nocompany.csv: no column maps to company_name; the headers found are ['Name', 'Email']",
        ),
        ("empty.csv", "", "empty.csv: the file is empty"),
        ("header.csv", "Company,Email\n", "header.csv: the file has a header but no records"),
    ],
)
def test_import_job_unusable_file_fails_clearly(pipeline, tmp_path, name, content, error):
    path = tmp_path / name
    path.write_text(content)

    result = import_file(path)

    assert result["status"] == "failed"
    assert result["error"] == error
    assert pipeline.scalar("SELECT count(*) FROM imports") == 0


def test_import_job_load_replay_is_idempotent(pipeline, tmp_path):
    """Re-running the load of a committed partition changes nothing and reports the same counts."""
    path = tmp_path / "handmade.csv"
    path.write_text(HANDMADE)
    first = import_file(path)
    parent = pipeline.instance.get_run_by_id(first["run_id"])
    from import_pipeline.definitions import resolved_import_leads_job

    with dg.execute_job(
        dg.reconstructable(resolved_import_leads_job),
        instance=pipeline.instance,
        reexecution_options=dg.ReexecutionOptions(parent_run_id=first["run_id"], step_selection=["leads.load"]),
        tags=parent.tags,
    ) as replay:
        assert replay.success
        output = replay.output_for_node("leads.load")

    assert output.status == "success"
    assert output.counts == HANDMADE_COUNTS
    assert pipeline.scalar("SELECT count(*) FROM leads") == 5 + FILLER
    assert pipeline.scalar("SELECT count(*) FROM rejected_rows") == 5
    assert pipeline.scalar("SELECT count(*) FROM import_outcomes") == 6 + FILLER, "one outcome per valid row, once"
    assert json.loads(json.dumps(pipeline.scalar("SELECT counts FROM imports"))) == HANDMADE_COUNTS


def test_import_job_rows_with_too_many_or_too_few_fields_are_rejected(pipeline, tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text(
        "Company,Email,Phone\n"
        "Acme,ann@acme.com,01\n"  # 2 fine
        "Beta,bob@beta.com,02,extra\n"  # 3 one field too many
        "Gamma,gus@gamma.com\n"  # 4 one field too few
        "Delta,dan@delta.com,04\n"  # 5 fine
    )

    result = import_file(path, {"ops": {"validate": {"config": {"max_error_rate": 0.5}}}})

    assert result["status"] == "success", result["error"]
    assert (result["rows_read"], result["inserted"], result["rows_rejected"]) == (4, 2, 2)
    assert pipeline.query("SELECT source_row, reasons FROM rejected_rows ORDER BY source_row") == [
        (3, [{"column": None, "problem": "row has 4 fields, the header has 3"}]),
        (4, [{"column": None, "problem": "row has 2 fields, the header has 3"}]),
    ]
    assert [r for (r,) in pipeline.query("SELECT source_row FROM leads ORDER BY 1")] == [2, 5]


def test_import_job_long_values_and_wide_files_keep_every_value(pipeline):
    files = {h.name: h for h in hostile_files()}
    for name in ("long_values.csv", "wide.csv"):
        (pipeline.landing / name).write_bytes(files[name].content)

    long = import_file(pipeline.landing / "long_values.csv", {"ops": {"validate": {"config": {"max_error_rate": 0.5}}}})
    wide = import_file(pipeline.landing / "wide.csv")

    assert (long["status"], long["rows_read"], long["inserted"], long["rows_rejected"]) == ("success", 4, 3, 1)
    gamma = 4 + LONG_VALUE_LINES
    # The 5 MB value of a column no field maps to is stored exactly, with its line breaks and quotes.
    assert pipeline.query(
        "SELECT source_row, length(extra->>'Call transcript'), md5(extra->>'Call transcript') = md5(%s) "
        "FROM leads WHERE company_name = 'Gamma'",
        (LONG_VALUE,),
    ) == [(gamma, len(LONG_VALUE), True)]
    # A 5 MB note is longer than the notes field takes: that row is rejected, with its line, its value kept.
    assert pipeline.query("SELECT source_row, reasons, length(raw_values->>'Notes') FROM rejected_rows") == [
        (3, [{"column": "notes", "problem": "notes is longer than 10000 characters"}], len(LONG_VALUE))
    ]
    assert pipeline.scalar("SELECT source_row FROM leads WHERE company_name = 'Delta'") == gamma + LONG_VALUE_LINES + 1
    assert (wide["status"], wide["rows_read"], wide["inserted"]) == ("success", 3, 3), wide["error"]
    assert pipeline.query(
        "SELECT source_row, (SELECT count(*) FROM jsonb_object_keys(extra)), extra->>'Field 0', extra->>'Field 19997' "
        "FROM leads WHERE starts_with(company_name, 'Wide ') ORDER BY source_row"
    ) == [(line, WIDE_COLUMNS - 2, f"v{line - 2}.0", f"v{line - 2}.19997") for line in (2, 3, 4)]
