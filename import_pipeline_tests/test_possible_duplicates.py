"""Possible-duplicate scoring at import time, on real PostgreSQL (fuzzystrmatch for names' sounds)."""

import uuid

import polars as pl
import psycopg
import pytest
from psycopg import sql

from import_pipeline import scoring
from import_pipeline.launch import import_file
from import_pipeline.possible_duplicates import DuplicateScoring, PossibleDuplicatesConfig, ensure_scoring

EXISTING = (
    "Company,First Name,Last Name,Email,Phone,City\n"
    "ACME Inc.,Robert,Smith,robert.smith@acme.com,+1 415 555 0100,Boston\n"  # 2
    "Globex,Maria,Garcia,mgarcia@globex.com,,Austin\n"  # 3
    "Initech,Peter,Gibbons,peter@initech.com,+1 212 555 0199,Dallas\n"  # 4
)
INCOMING = (
    "Company,First Name,Last Name,Email,Phone,City\n"
    "Acme Incorporated,Bob,Smith,bob.smith@gmail.com,(415) 555-0100,Boston\n"  # 2 flagged: Robert Smith
    "Globex Corporation,María,Garcia,maria.g@yahoo.com,,Houston\n"  # 3 review: Maria Garcia, who moved
    "Initech,Joanna,Gibbons,joanna@initech.com,,Dallas\n"  # 4 new: a colleague with the same surname
    "Umbrella,Alice,Cooper,alice@umbrella.com,,Paris\n"  # 5 new
    "Umbrella Ltd,Alice,Cooper,alice.cooper@gmail.com,,Paris\n"  # 6 in-file: probably line 5
)


def _import(tmp_path, name: str, text: str, scoring: dict) -> dict:
    path = tmp_path / name
    path.write_text(text)
    result = import_file(path, {"ops": {"dedupe": {"config": {"possible_duplicates": scoring}}}})
    assert result["status"] == "success", result["error"]
    return result


def test_possible_duplicates_flagged_queued_and_new(pipeline, tmp_path):
    """Each scored row is still inserted; the queue names its candidate, band, score and reasons."""
    _import(tmp_path, "existing.csv", EXISTING, {"enabled": False})
    # Line 7 is Robert Smith again, by his email: an exact match, never scored (nor a candidate of line 2).
    again = "ACME Inc.,Robert,Smith,robert.smith@acme.com,+1 415 555 0100,Boston\n"
    result = _import(tmp_path, "incoming.csv", INCOMING + again, {"enabled": True})
    counts = result
    assert (counts["inserted"], counts["duplicates_existing"], counts["rows_read"]) == (5, 1, 6)
    queue = pipeline.query(
        "SELECT d.source_row, d.band, d.status, c.email, d.reasons FROM possible_duplicates d "
        "JOIN leads c ON c.id = d.candidate_id ORDER BY d.source_row"
    )
    by_row = {row[0]: row[1:] for row in queue}
    assert by_row[2][:3] == ("flagged", "open", "robert.smith@acme.com")
    assert by_row[2][3]["first_name"] == "nickname" and by_row[2][3]["phone"] == "same"
    assert by_row[3][0] == "review" and by_row[3][3]["first_name"] == "same" and by_row[3][3]["company"] == "same"
    assert by_row[6][2] == "alice@umbrella.com"
    assert 4 not in by_row and 5 not in by_row and 7 not in by_row
    assert pipeline.query("SELECT count(*) FROM leads")[0][0] == 8


def test_possible_duplicates_auto_merge_fills_the_candidate(pipeline, tmp_path):
    """auto_merge: a flagged row is merged into its candidate (empty fields filled), not inserted."""
    _import(tmp_path, "existing.csv", EXISTING.replace(",Boston", ","), {"enabled": False})
    result = _import(tmp_path, "incoming.csv", INCOMING, {"enabled": True, "auto_merge": True})
    counts = result
    assert counts["merged"] == 1 and counts["inserted"] == 4 and counts["auto_merged"] == 1, counts
    city = pipeline.query("SELECT city FROM leads WHERE email = 'robert.smith@acme.com'")[0][0]
    assert city == "Boston"
    assert pipeline.query("SELECT count(*) FROM leads WHERE email = 'bob.smith@gmail.com'")[0][0] == 0


def test_possible_duplicates_config_bands_in_order():
    """review_at above flag_at is refused before anything runs, naming both."""
    with pytest.raises(ValueError, match=r"review_at \(0.9\) must not be above flag_at \(0.7\)"):
        PossibleDuplicatesConfig(enabled=True, flag_at=0.7, review_at=0.9)


def test_possible_duplicates_off_without_extensions(pipeline):
    """A role that may not create the extensions gets scoring off with a plain reason, not a failed import."""
    role = f"no_ext_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pipeline.leads_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("REVOKE CREATE ON DATABASE {} FROM PUBLIC").format(sql.Identifier(conn.info.dbname)))
    url = pipeline.leads_url.replace("postgres:@", f"{role}:@", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        off = ensure_scoring(conn)
    assert off is not None
    assert "possible-duplicate scoring is off" in off and "CREATE EXTENSION fuzzystrmatch" in off


def test_possible_duplicates_application_leads_compared_as_they_are_now(pipeline, tmp_path):
    """Leads the application inserts, changes or deletes between scoring imports are compared as they are then."""
    _import(tmp_path, "existing.csv", EXISTING, {"enabled": True})
    with psycopg.connect(pipeline.leads_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO leads (company_name, first_name, last_name, email, city) "
            "VALUES ('Umbrella', 'Alise', 'Cooper', 'acooper@umbrella.com', 'Paris')"
        )
        # Robert Smith is now Robert Zimmerman: line 2 (Bob Smith) no longer resembles him; Maria Garcia is gone.
        conn.execute("UPDATE leads SET last_name = 'Zimmerman' WHERE email = 'robert.smith@acme.com'")
        conn.execute("DELETE FROM leads WHERE email = 'mgarcia@globex.com'")
    _import(tmp_path, "incoming.csv", INCOMING, {"enabled": True})
    queue = pipeline.query(
        "SELECT d.source_row, c.email, d.reasons->>'first_name' FROM possible_duplicates d "
        "JOIN leads c ON c.id = d.candidate_id ORDER BY d.source_row"
    )
    # Line 5 (Alice Cooper) repeats the application's Alise Cooper (a typo); nothing for lines 2 and 3 now.
    rows = {row[0]: row[1:] for row in queue}
    assert rows[5] == ("acooper@umbrella.com", "typo"), queue
    assert 2 not in rows and 3 not in rows, queue
    compared = pipeline.query(
        "SELECT count(*), count(*) FILTER (WHERE l.xmin = c.version) FROM lead_comparison c JOIN leads l ON l.id = c.lead_id"
    )[0]
    assert compared == (pipeline.query("SELECT count(*) FROM leads")[0][0],) * 2


def test_scoring_edit_distance_and_similarity_equal_the_database(pipeline):
    """The scoring's local levenshtein and trigram similarity give fuzzystrmatch's and pg_trgm's values."""
    pairs = pl.DataFrame(
        {
            "x": ["acme", "microsoft", "globex", "muller", "jose", "straße", "o", "smith", "x" * 40, "ßø", "abc"],
            "y": [
                "acmeindustries",
                "mircosoft",
                "globexcorp",
                "mueller",
                "josé",
                "strasse",
                "oo",
                "smyth",
                "y",
                "ø",
                "abc",
            ],
        }
    )
    with psycopg.connect(pipeline.leads_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        conn.execute("CREATE EXTENSION IF NOT EXISTS fuzzystrmatch")
        expected = conn.execute(
            "SELECT levenshtein(a, b), similarity(a, b) FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY t(a, b, i) ORDER BY i",
            (pairs["x"].to_list(), pairs["y"].to_list()),
        ).fetchall()
    assert scoring._edits(pairs).to_list() == [e for e, _ in expected]
    assert scoring._similarity(pairs).to_list() == pytest.approx([s for _, s in expected], abs=1e-6)


def test_lead_pairs_key_over_max_block_across_pages_pairs_nothing(pipeline):
    """A key shared by more than max_block leads pairs nothing, however the pages of leads split them."""
    people = pl.DataFrame(
        {
            "source_row": [2, 10, 11, 12],
            "first_name": ["Robert"] * 4,
            "last_name": ["Smith"] * 4,
            "company_name": ["ACME"] * 4,
            "email": ["robert@gmail.com", "rs1@acme.com", "rs2@acme.com", "rs3@acme.com"],
            "phone": [None] * 4,
            "city": [None] * 4,
        },
        schema_overrides={"phone": pl.String, "city": pl.String},
    )
    with psycopg.connect(pipeline.leads_url, autocommit=True) as conn, conn.cursor() as cur:
        assert ensure_scoring(conn) is None
        values = scoring.row_values(cur, scoring.file_rows(people.lazy()).collect())
    rows = scoring.RowsToScore.of(values.filter(pl.col("source_row") == 2))
    leads = values.filter(pl.col("source_row") > 2).rename({"source_row": "lead_id"})
    config = DuplicateScoring.from_config(PossibleDuplicatesConfig(enabled=True, max_block=2))
    assert config is not None

    def found(*pages: pl.DataFrame) -> list[tuple]:
        pairs = scoring.LeadPairs(config)
        for page in pages:
            pairs.judge_page(rows, page)
        return pairs.best_candidates(rows).select("source_row", "lead_id", "band").rows()

    # Leads 10 and 11 share the row's keys: 2 leads, a page each; lead 10 is the older of two equals.
    assert found(leads.slice(0, 1), leads.slice(1, 1)) == [(2, 10, "review")]
    # Three leads: over max_block, whether one page holds more than two or no page does.
    assert found(leads) == []
    assert found(leads.slice(0, 2), leads.slice(2, 1)) == []
