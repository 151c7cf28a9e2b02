"""Strict mode, the error-rate limit and the reject report, end to end."""

import dagster as dg
import polars as pl

from import_pipeline.launch import import_file

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
    assert report.read_bytes().startswith("\ufeffline,".encode())
    rows = pl.read_csv(report, infer_schema=False).rows()
    assert rows == [
        ("3", "company_name", "company_name is required", None, '\'=HYPERLINK("http://evil")', "'+1 call"),
        ("3", "email", "email is not a valid email address", None, '\'=HYPERLINK("http://evil")', "'+1 call"),
    ]
    assert pl.read_csv(report, n_rows=0).columns == ["line", "column", "problem", "Company", "Email", "Note"]
    materializations = pipeline.instance.get_records_for_run(result["run_id"], of_type=dg.DagsterEventType.STEP_OUTPUT)
    metadata = {
        k: v.value
        for r in materializations.records
        if r.event_log_entry.dagster_event.step_key == "validate"
        for k, v in r.event_log_entry.dagster_event.step_output_data.metadata.items()
    }
    assert metadata["reject_report"] == str(report)
    assert "| company_name is required | 1 |" in metadata["top_reasons"]


def test_report_strict_mode_fails_before_loading_anything(pipeline, tmp_path):
    path = tmp_path / "risky.csv"
    path.write_text(RISKY)

    result = import_file(path, {"ops": {"validate": {"config": {"mode": "strict"}}}})

    assert result["status"] == "failed"
    assert result["error"] == (
        "risky.csv: strict mode and 1 of 4 rows are invalid: company_name is required: 1; "
        "email is not a valid email address: 1; nothing was loaded"
    )
    assert pipeline.scalar("SELECT count(*) FROM leads") == 0
    assert pipeline.scalar("SELECT count(*) FROM imports") == 0


def test_report_error_rate_above_the_limit_fails_and_says_which_checks(pipeline, tmp_path):
    path = tmp_path / "risky.csv"
    path.write_text(RISKY)

    result = import_file(path)

    assert result["status"] == "failed"
    assert result["error"] == (
        "risky.csv: 1 of 4 rows are invalid (25.0% > 10.0% allowed): company_name is required: 1; "
        "email is not a valid email address: 1; nothing was loaded"
    )
    assert pipeline.scalar("SELECT count(*) FROM leads") == 0


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
