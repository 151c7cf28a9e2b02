"""Strict mode, the error-rate limit and the reject report, end to end."""

import dagster as dg
import polars as pl
import pytest

from import_pipeline.launch import import_file
from import_pipeline.validate import invalid_share_floor
from import_pipeline_tests.hostile_files import workbook

RISKY = (
    "Company,Email,Note\n"
    "Acme,ann@acme.com,fine\n"  # 2
    ',=HYPERLINK("http://evil"),+1 call\n'  # 3 company missing, bad email, formula-looking cells
    "Beta,bob@beta.com,@home\n"  # 4
    "Gamma,gus@gamma.com,-\n"  # 5
)


def test_report_reject_report_opens_safely_with_every_reason(pipeline, tmp_path):
    path = tmp_path / "risky.csv"
    path.write_text(RISKY)

    result = import_file(path, {"ops": {"validate": {"config": {"max_error_rate": 0.5}}}})

    assert result["status"] == "success", result["error"]
    report = pipeline.home / "reports" / f"{result['partition_key']}.rejects.csv"
    assert report.read_bytes().startswith("\ufeffRejected line,".encode())
    rows = pl.read_csv(report, infer_schema=False).rows()
    assert rows == [
        (
            "3",
            "company_name is required; email is not valid: An email address must have an @-sign",
            None,
            '\'=HYPERLINK("http://evil")',
            "'+1 call",
            result["partition_key"],
        ),
    ]
    assert pl.read_csv(report, n_rows=0).columns == [
        "Rejected line",
        "Why rejected",
        "Company",
        "Email",
        "Note",
        "Rejected in import",
    ]
    metadata = _validate_metadata(pipeline, result["run_id"])
    assert metadata["reject_report"] == str(report)
    assert "| company_name is required | 1 |" in metadata["top_reasons"]


def test_report_strict_mode_fails_before_loading_anything(pipeline, tmp_path):
    path = tmp_path / "risky.csv"
    path.write_text(RISKY)

    result = import_file(path, {"ops": {"validate": {"config": {"mode": "strict"}}}})

    assert result["status"] == "failed"
    assert result["error"] == (
        "risky.csv: strict mode and 1 of 4 rows are invalid: company_name is required: 1; "
        "email is not valid: An email address must have an @-sign: 1; nothing was loaded"
    )
    assert pipeline.scalar("SELECT count(*) FROM leads") == 0
    assert pipeline.scalar("SELECT count(*) FROM imports") == 0


def _validate_metadata(pipeline, run_id: str) -> dict:
    outputs = pipeline.instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT)
    return {
        k: v.value
        for r in outputs.records
        if r.event_log_entry.dagster_event.step_key == "leads.validate"
        for k, v in r.event_log_entry.dagster_event.step_output_data.metadata.items()
    }


@pytest.mark.parametrize(
    ("name", "rows"),
    [
        ("hubspot.csv", 6),  # a HubSpot export with one contact lacking a company
        ("legacy.xlsx", 5),
        ("salon.csv", 8),
    ],
)
def test_report_small_file_with_one_invalid_row_imports_the_rest(pipeline, tmp_path, name, rows):
    records = [[f"Company {i}", f"person{i}@example.com"] for i in range(rows)]
    records[2][0] = ""
    path = tmp_path / name
    if name.endswith(".xlsx"):
        path.write_bytes(workbook({"Contacts": [["Company", "Email"], *records]}))
    else:
        path.write_text("Company,Email\n" + "".join(f"{c},{e}\n" for c, e in records))

    result = import_file(path)

    assert result["status"] == "success", result["error"]
    assert (result["rows_rejected"], result["inserted"]) == (1, rows - 1)
    assert pipeline.scalar("SELECT count(*) FROM leads") == rows - 1
    floor = invalid_share_floor(1, rows)
    assert _validate_metadata(pipeline, result["run_id"])["error_rate"] == (
        f"1 of {rows} rows invalid ({1 / rows:.1%}); at least {floor:.1%} with 95% confidence, "
        "not above the 10.0% allowed: within the limit"
    )


def test_report_systematically_invalid_file_fails_and_says_which_checks(pipeline, tmp_path):
    path = tmp_path / "shifted.csv"
    # 12 of 40 rows without a company: a wrong column, not a few bad rows.
    path.write_text("Company,Email\n" + "".join(f"{'' if i % 10 < 3 else 'Acme'},p{i}@acme.com\n" for i in range(40)))

    result = import_file(path)

    assert result["status"] == "failed"
    assert result["error"] == (
        "shifted.csv: 12 of 40 rows are invalid (30.0%; at least 18.1% with 95% confidence > 10.0% allowed): "
        "company_name is required: 12; nothing was loaded"
    )
    assert pipeline.scalar("SELECT count(*) FROM leads") == 0


def test_report_error_rate_floor_follows_the_wilson_interval():
    assert invalid_share_floor(0, 10) == 0.0
    assert round(invalid_share_floor(1, 6), 4) == 0.0301
    assert round(invalid_share_floor(3, 6), 4) == 0.1876
    # Large files: the floor nears the share itself.
    assert 0.099 < invalid_share_floor(100_000, 1_000_000) < 0.1
    # Nothing allowed: one invalid row is enough to refuse.
    assert invalid_share_floor(1, 1_000_000) > 0.0


def test_report_phone_and_website_are_normalized_in_leads(pipeline, tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_text(
        "Company,Phone,Website\nAcme,01 23 45 67 89,https://www.Acme.fr/contact\nBeta,not a phone,beta.io\n"
    )

    result = import_file(path, {"ops": {"validate": {"config": {"phone_region": "FR"}}}})

    assert result["status"] == "success", result["error"]
    assert pipeline.query("SELECT company_name, phone, phone_e164, company_website FROM leads ORDER BY source_row") == [
        ("Acme", "01 23 45 67 89", "+33123456789", "https://www.acme.fr"),
        ("Beta", "not a phone", None, "https://beta.io"),
    ]


def test_report_corrected_report_imports_its_rows_linked_to_where_they_were_rejected(pipeline, tmp_path):
    path = tmp_path / "event.csv"
    path.write_text(
        "Company,Email,Phone,Badge\n"
        "Acme,ann@acme.com,+1 415 555 0100,A1\n"  # 2
        ",bob@beta.com,+1 415 555 0101,B2\n"  # 3: no company
        "Gamma,not-an-email,+1 415 555 0102,C3\n"  # 4
        "Delta,dan@delta.com,+1 415 555 0103,D4\n"  # 5
        "Eps,,,E5\n"  # 6: no email, phone or id
    )
    first = import_file(path, {"ops": {"validate": {"config": {"max_error_rate": 0.9}}}})
    assert (first["status"], first["inserted"], first["rows_rejected"]) == ("success", 2, 3)
    report = pipeline.home / "reports" / f"{first['partition_key']}.rejects.csv"

    # The user fixes two rows in a spreadsheet and saves the report under a new name; one row stays wrong.
    fixed = pl.read_csv(report, infer_schema=False).with_columns(
        pl.when(pl.col("Rejected line") == "3").then(pl.lit("Beta")).otherwise(pl.col("Company")).alias("Company"),
        pl.when(pl.col("Rejected line") == "4").then(pl.lit("gus@gamma.com")).otherwise(pl.col("Email")).alias("Email"),
    )
    resubmitted = tmp_path / "event_fixed.csv"
    fixed.write_csv(resubmitted, include_bom=True)

    second = import_file(resubmitted, {"ops": {"validate": {"config": {"max_error_rate": 0.9}}}})

    assert (second["status"], second["rows_read"], second["inserted"], second["rows_rejected"]) == (
        "success",
        3,
        2,
        1,
    )
    leads = pipeline.query(
        "SELECT company_name, email, phone, extra FROM leads WHERE created_by_import = "
        "(SELECT id FROM imports WHERE partition_key = %s) ORDER BY source_row",
        (second["partition_key"],),
    )
    # The neutralising quote the report put before `+` is gone; the report's own columns are not data.
    assert leads == [
        ("Beta", "bob@beta.com", "+1 415 555 0101", {"Badge": "B2"}),
        ("Gamma", "gus@gamma.com", "+1 415 555 0102", {"Badge": "C3"}),
    ]
    links = pipeline.query(
        "SELECT r.source_row, r.rejected_in, i.partition_key, r.rejected_row FROM resubmitted_rows r "
        "LEFT JOIN imports i ON i.id = r.rejected_in_import ORDER BY r.source_row"
    )
    assert links == [
        (2, first["partition_key"], first["partition_key"], 3),
        (3, first["partition_key"], first["partition_key"], 4),
        (4, first["partition_key"], first["partition_key"], 6),
    ]
    outcomes = pipeline.query(
        "SELECT o.source_row, o.action, o.resubmitted_from_row FROM import_outcomes o "
        "JOIN imports i ON i.id = o.import_id WHERE i.partition_key = %s ORDER BY o.source_row",
        (second["partition_key"],),
    )
    assert outcomes == [(2, "inserted", 3), (3, "inserted", 4)]
    # The row still wrong is in a new report, which names the new import and its line there.
    again = pl.read_csv(pipeline.home / "reports" / f"{second['partition_key']}.rejects.csv", infer_schema=False)
    assert again.rows() == [
        (
            "4",
            "row has no email, phone or external_id",
            "Eps",
            None,
            None,
            "E5",
            second["partition_key"],
        )
    ]
    load = pipeline.instance.get_records_for_run(second["run_id"], of_type=dg.DagsterEventType.STEP_OUTPUT)
    metadata = {
        k: v.value
        for r in load.records
        if r.event_log_entry.dagster_event.step_key == "leads.load"
        for k, v in r.event_log_entry.dagster_event.step_output_data.metadata.items()
    }
    assert metadata["resubmitted_from"] == {first["partition_key"]: 3}
