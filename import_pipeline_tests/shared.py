"""Test data and helpers that several test modules share."""

import sys
from pathlib import Path

import dagster as dg

from import_pipeline.history import step_name

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
# The `import-pipeline` command as this interpreter runs it: no activated virtualenv needed.
CLI = [sys.executable, "-m", "import_pipeline"]

# Every line's fate is known: see the comment at the end of each line.
HANDMADE = (
    "Company,First Name,Last Name,E-mail,Phone,Notes,Lead Source\n"
    "Acme,Ann,Lee,ann@acme.com,0612345678,,web\n"  # 2 inserted; leading zero kept
    'Beta,Bob,Ray,BOB@beta.com ,,"two\nlines",fair\n'  # 3-4 inserted
    "Gamma,,,  bob@BETA.com,,,x\n"  # 5 duplicate of line 3 (same key after normalization)
    ",Cid,,cid@x.com,,,\n"  # 6 rejected: company required
    "Delta,,,not-an-email,,,\n"  # 7 rejected: email syntax
    "Echo,,,,,,\n"  # 8 rejected: no contact
    "\n"  # 9 blank: skipped, not counted
    " , ,,,,,\n"  # 10 blank after trimming: skipped, not counted
    "Foxtrot,,,,+33 1 23,,\n"  # 11 inserted (phone only)
    "Golf,,,,0099,,\n"  # 12 inserted
    "Golf,,,,0099,,\n"  # 13 inserted too: rows without email are never deduplicated by it
    f"{'X' * 256},,,long@x.com,,,\n"  # 14 rejected: too long
    "Nul\x00Co,,,nul@x.com,,,\n"  # 15 rejected: NUL byte
    # 16-60 valid leads, so the 5 rejects stay under the default 10% error-rate limit.
    + "".join(f"Filler {i},,,filler{i}@x.com,,,\n" for i in range(45))
)
FILLER = 45
HANDMADE_COUNTS = {
    "rows_read": 11 + FILLER,
    "rows_valid": 6 + FILLER,
    "rows_rejected": 5,
    "duplicates_in_file": 1,
    "duplicates_existing": 0,
    "inserted": 5 + FILLER,
    "updated": 0,
    "merged": 0,
    "created": 0,
}


# A real database error on the first load attempt only: sequences ignore rollbacks.
FAIL_FIRST_LOAD = """
CREATE SEQUENCE load_attempts;
CREATE FUNCTION fail_first_load() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('load_attempts') = 1 THEN
        RAISE EXCEPTION 'injected failure: connection to the leads database lost';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER fail_first_load BEFORE INSERT ON leads FOR EACH STATEMENT EXECUTE FUNCTION fail_first_load();
"""


def tables(pipeline) -> dict:
    """The rows an import leaves in leads, rejected_rows, resubmitted_rows and imports, to compare two runs."""
    return {
        "leads": pipeline.query(
            "SELECT source_row, company_name, first_name, last_name, email, email_key, phone, notes, source_file "
            "FROM leads ORDER BY source_row"
        ),
        "rejected": pipeline.query("SELECT source_row, raw_values, reasons FROM rejected_rows ORDER BY source_row"),
        "resubmitted": pipeline.query(
            "SELECT source_row, rejected_in, rejected_row FROM resubmitted_rows ORDER BY source_row"
        ),
        "imports": pipeline.query("SELECT partition_key, content_hash, counts FROM imports"),
    }


def started_steps(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The steps a run started, in order, by op name (`load` for `leads.load`)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
    return [step_name(r.event_log_entry.dagster_event.step_key) for r in records]


# A corrected reject report of an import that never ran here: its rows link to a partition by name only.
RESUBMITTED = (
    "Rejected line,Why rejected,Company,Email,Phone,Rejected in import\n"
    "3,company_name is required,Beta,bob@beta.com,'+1 415 555 0101,event.csv@0123456789abcdef\n"
    "7,email is not a valid email address,Gamma,gus@gamma.com,,event.csv@0123456789abcdef\n"
    "9,company_name is required,,eve@eps.com,,event.csv@0123456789abcdef\n"
)
