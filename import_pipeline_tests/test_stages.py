"""Focused tests of the subtle parts of each stage: header mapping, keys, line numbers, the cursor."""

import csv
import dataclasses
import json
import os
import time

import polars as pl
import psycopg
import pytest
from psycopg import sql

from import_pipeline import csv_reader, phones
from import_pipeline import validate as validate_module
from import_pipeline.config import PROJECT_ROOT
from import_pipeline.dedupe import KEY_COLUMNS, drop_in_file_duplicates
from import_pipeline.formats import FileRejected
from import_pipeline.headers import header_index
from import_pipeline.landing import partition_key
from import_pipeline.ledger import CountsDoNotAddUp, check_conservation
from import_pipeline.mapping import MappingError, map_headers, normalize_header
from import_pipeline.parse import ParseConfig, read_leads, read_records, sheet_for_partition
from import_pipeline.parts import PartsWriter
from import_pipeline.progress import Progress
from import_pipeline.report import RejectReport
from import_pipeline.schema import CANONICAL_FIELDS, MIGRATIONS, SOURCE_ROW, migrate
from import_pipeline.sensors import LandingCursor, scan_landing
from import_pipeline.staging import JSON_GROUP_FIELDS, copy_frames, create_work_tables, staged_frame
from import_pipeline.summary import FileSummary, LoadResult, from_json, to_json
from import_pipeline.validate import (
    LeadModel,
    bare_host_url,
    normalized,
    normalized_phone,
    split_parts,
    split_valid,
    valid_email,
)
from import_pipeline_tests.hostile_files import workbook


@pytest.mark.parametrize(
    ("header", "normalized"),
    [(" Prénom_1 ", "prenom 1"), ("\ufeffE-mail", "e mail"), ("Company  NAME", "company name"), ("Société", "societe")],
)
def test_normalize_header_cases(header, normalized):
    assert normalize_header(header) == normalized


def test_map_headers_english_and_french():
    headers = ["Raison sociale", "Prénom", "Nom", "Courriel", "Téléphone", "Ville", "Pays", "Couleur"]
    assert map_headers(headers) == {
        "Raison sociale": "company_name",
        "Prénom": "first_name",
        "Nom": "last_name",
        "Courriel": "email",
        "Téléphone": "phone",
        "Ville": "city",
        "Pays": "country",
    }


def test_map_headers_two_columns_for_one_field_rejects_the_file():
    with pytest.raises(MappingError, match="columns 'Email' and 'E-mail' both map to the field 'email'"):
        map_headers(["Company", "Email", "E-mail"])


def test_email_key_normalization_shortcut_agrees(pipeline):
    emails = [
        "  Ann@Acme.COM ",
        "ann@acme.com\u2003",
        "a n n@acme.com",
        "Ａnn@acme.com",
        "E\u0301lise@x.fr",
        "\u00c9lise@x.fr",
        None,
        " ",
        "Ann@Acme.COM",
        "",
        "ann\t@acme.com",
    ]
    keys = [pipeline.scalar("SELECT lead_email_key(%s)", (e,)) for e in emails]
    # NFC keeps the full-width letter distinct (it is not compatibility-folded) and joins an accent to its letter.
    assert keys == [
        "ann@acme.com",
        "ann@acme.com",
        "ann@acme.com",
        "ａnn@acme.com",
        "élise@x.fr",
        "élise@x.fr",
        None,
        None,
        "ann@acme.com",
        None,
        "ann@acme.com",
    ]
    # The printable-ASCII shortcut (migration 7) gives the general function's key.
    assert [pipeline.scalar("SELECT lead_email_key_unicode(%s)", (e,)) for e in emails] == keys


def _keyed(**columns):
    empty = {f: [None] * len(columns["source_row"]) for f in ("email", "external_id", "phone", "company_name")}
    return pl.DataFrame(empty | columns, schema_overrides={f: pl.String for f in empty})


def _in_file_duplicates(pipeline, keyed: pl.DataFrame, keys: list[str], keep: str = "first") -> tuple[list, list]:
    """(rows kept, (row, duplicate of, survivor) per duplicate) from the load's own SQL on a real server."""
    staging = sql.Identifier("staging_test")
    with psycopg.connect(pipeline.leads_url) as conn, conn.cursor() as cur:
        create_work_tables(cur, staging, list(KEY_COLUMNS), "crm")
        copy_frames(cur, staging, keyed.columns, [keyed], keyed.height)
        drop_in_file_duplicates(cur, staging, keys, keep)
        kept = [row for (row,) in cur.execute(sql.SQL("SELECT source_row FROM {} ORDER BY 1").format(staging))]
        duplicates = cur.execute(
            "SELECT source_row, duplicate_of_row, survivor_row FROM outcomes ORDER BY 1"
        ).fetchall()
    return kept, duplicates


def test_drop_in_file_duplicates_first_wins_and_blank_emails_are_kept(pipeline):
    keyed = _keyed(source_row=[2, 3, 4, 5, 6], email=["A@x.com", None, "a@X.com ", None, "b@x.com"])
    assert _in_file_duplicates(pipeline, keyed, ["email"]) == ([2, 3, 5, 6], [(4, 2, 2)])


def test_drop_in_file_duplicates_keep_last_and_key_priority_chain(pipeline):
    keyed = _keyed(
        source_row=[2, 3, 4, 5, 6, 7],
        email=["a@x.com", "a@x.com", "b@x.com", "c@x.com", "d@x.com", "e@x.com"],
        external_id=[None, "7", "7", None, "8", "8"],
        phone=[None, None, "0612345678", None, None, "0612345678"],
        company_name=["A", "A", "Acme", "C", "D", "ACME"],
    )
    kept, duplicates = _in_file_duplicates(pipeline, keyed, ["email", "external_id", "phone_company"], keep="last")
    # Line 2 loses to 3 by email; 3 then loses to 4 by external id; 4 loses to 7 by phone and company
    # (6 lost to 7 by external id first), so 2's lead is 7's.
    assert kept == [5, 7]
    assert duplicates == [(2, 3, 7), (3, 4, 7), (4, 7, 7), (6, 7, 7)]


def test_match_keys_scope_and_normalization(pipeline):
    pipeline.execute(
        "INSERT INTO leads (company_name, external_source, external_id, phone) VALUES ('ACME S.A.', 'crm', ' 0042 ', '+33 (0)1 23'),"
        " ('Müller & Söhne', 'default', '7', '0611'), ('Acme', 'crm', NULL, NULL)"
    )
    assert pipeline.query("SELECT external_key, phone_company_key FROM leads ORDER BY id") == [
        ("crm:0042", "+330123|acmesa"),
        ("default:7", "0611|mullersohne"),
        (None, None),
    ]
    # The E.164 form wins over the raw digits when the import found one.
    pipeline.execute("UPDATE leads SET phone_e164 = '+33123' WHERE external_id = ' 0042 '")
    assert (
        pipeline.scalar("SELECT phone_company_key FROM leads WHERE external_source = 'crm' AND external_id IS NOT NULL")
        == "+33123|acmesa"
    )


def test_read_leads_line_numbers_count_quoted_newlines(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text('"Company\nName",Email\nA,"x\n\ny"\n\nB,b@x.com\r\nC,c@x.com\n')
    frame, _, _ = read_leads(path)
    assert frame.select("source_row", "company_name").rows() == [(3, "A"), (7, "B"), (8, "C")]


@pytest.mark.parametrize("quoted", [False, True])
def test_read_records_chunks_hold_at_most_chunk_bytes(tmp_path, monkeypatch, quoted):
    """A chunk stops at CHUNK_BYTES before chunk_rows records; plain lines (polars) and quoted ones (csv module)."""
    path = tmp_path / "f.csv"
    note = '"a\nb"' if quoted else "ab"
    path.write_text("Company,Notes\n" + "".join(f"Acme {i},{note}\n" for i in range(40)))
    monkeypatch.setattr(csv_reader, "CHUNK_BYTES", 100)

    chunks, _, _ = read_records(path, ParseConfig(chunk_rows=1000), tmp_path / "work")

    frames = list(chunks)
    step = 2 if quoted else 1
    # 10 to 14 bytes a record: 100 bytes hold 10 records at most, and a chunk ends with the record that crosses them.
    assert len(frames) >= 4 and max(f.height for f in frames) <= 11, [f.height for f in frames]
    assert pl.concat(frames).select("source_row", "company_name").rows() == [
        (2 + step * i, f"Acme {i}") for i in range(40)
    ]


def test_read_leads_value_over_the_field_limit_names_its_record(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text('Company,Notes\nAcme,ok\nBeta,"' + "x\n" * 600 + "\nGamma,fine\n")
    limit = csv.field_size_limit(1000)
    try:
        with pytest.raises(FileRejected) as refused:
            read_leads(path)
    finally:
        csv.field_size_limit(limit)

    assert str(refused.value) == (
        "the record starting on line 3 has a value longer than 1,000 characters, the longest a value can be: "
        "is a closing quote missing?"
    )


def test_staged_frame_extra_of_many_columns_is_one_json_object():
    columns = {f"extra.F {i}": [f"v{i}", None if i % 2 else f'"{i}"\x00'] for i in range(JSON_GROUP_FIELDS * 2 + 5)}
    leads = pl.DataFrame(
        {SOURCE_ROW: [2, 3], **{f: [None, None] for f in CANONICAL_FIELDS}, **columns},
        schema={SOURCE_ROW: pl.Int64} | {c: pl.String for c in (*CANONICAL_FIELDS, *columns)},
    )

    extra = staged_frame(leads, {}, "none", "")["extra"].to_list()

    assert [json.loads(e) for e in extra] == [
        {f"F {i}": f"v{i}" for i in range(len(columns))},
        {f"F {i}": None if i % 2 else f'"{i}"\u2400' for i in range(len(columns))},
    ]


def test_partition_key_is_safe_and_keeps_the_hash():
    assert partition_key("Q3 leads...final (2).csv", "ab" * 32) == "Q3_leads.final_2_.csv@abababababababab"
    assert partition_key("...", "cd" * 32) == "file@cdcdcdcdcdcdcdcd"


def test_lead_model_fields_are_the_canonical_fields():
    assert tuple(LeadModel.to_schema().columns) == CANONICAL_FIELDS


def test_check_conservation_refuses_counts_that_do_not_add_up():
    counts = {
        "rows_read": 10,
        "inserted": 5,
        "updated": 0,
        "rows_rejected": 2,
        "duplicates_in_file": 1,
        "duplicates_existing": 1,
    }
    with pytest.raises(CountsDoNotAddUp, match=r"rows_read=10 but .* add up to 9"):
        check_conservation(counts)
    check_conservation(counts | {"inserted": 6})


def test_scan_landing_high_water_waits_behind_a_file_being_written(tmp_path):
    (tmp_path / "old.csv").write_text("a")
    time.sleep(0.01)
    (tmp_path / "growing.csv").write_text("b")
    time.sleep(0.01)
    (tmp_path / "new.csv").write_text("c")
    first = scan_landing(tmp_path, LandingCursor())
    # As if growing.csv had another size at the first tick: appending to it would move its ctime past
    # new.csv's (with fine-grained timestamps, always), and the mark could then pass new.csv rightly.
    first.cursor.pending["growing.csv"] = [0, 0]
    second = scan_landing(tmp_path, first.cursor)
    assert sorted(e.name for e in second.ready) == ["new.csv", "old.csv"]
    # The mark stays below the growing file; the newer file it passed is remembered by name.
    assert second.cursor.high_water == os.stat(tmp_path / "old.csv").st_ctime_ns
    assert list(second.cursor.handled) == ["new.csv"]
    third = scan_landing(tmp_path, second.cursor)
    assert [e.name for e in third.ready] == ["growing.csv"]
    assert third.cursor.handled == {} and third.cursor.pending == {}
    assert scan_landing(tmp_path, third.cursor).ready == []


def test_migrate_twice_applies_each_version_once(pipeline):
    with psycopg.connect(pipeline.leads_url) as conn:
        assert migrate(conn) == []
        versions = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert [v for (v,) in versions] == [v for v, _, _ in MIGRATIONS]


def test_progress_reports_rows_rate_and_time_left_but_not_when_done():
    messages = []

    class Log:
        def info(self, message):
            messages.append(message)

    progress = Progress(Log(), "copying into staging", 1000, every=0.0)
    time.sleep(0.01)
    progress.update(250)
    progress.update(1000)
    quiet = Progress(Log(), "copying", 1000, every=3600.0)
    quiet.update(500)

    assert len(messages) == 1
    assert messages[0].startswith("copying into staging: 250 of 1,000 rows, ")
    assert messages[0].endswith(" s left") and " rows/s, about " in messages[0]


@pytest.mark.parametrize(
    ("email", "valid"),
    [
        ("ann@acme.com", True),
        ("jose@exämple.com", True),  # internationalised domain
        ("o'neil+tag@sub.acme.co.uk", True),
        ("a..b@x.com", False),
        ("a@b", False),
        ("a@-x.com", False),
        ("@x.com", False),
        ("a@x..com", False),
        ("x@y.test", False),  # special-use domain, as email-validator judges
        ('"quoted"@x.com', False),
    ],
)
def test_valid_email_as_email_validator_judges(email, valid):
    frame = pl.DataFrame({"email": [email]})
    assert frame.select(valid_email(frame.lazy(), pl.col("email"))).item() is valid


@pytest.mark.parametrize(
    ("rows", "header"),
    [
        ([["Company", "Email"], ["Acme", "a@x.com"]], 0),
        ([["Leads report", None], [], [None, "Exported 2026-11-24"], ["Company", "Email"]], 3),
        ([["Table 1", ""], ["A", "B"], ["8", "9"]], 1),  # no company column: the first full row
        # "Account" names the company column, but a row of data is never skipped to reach it.
        ([["Type", "Name"], ["Account", "Acme"]], 0),
        ([[""], ["Export"], ["Company"], ["Acme"]], 2),  # one column: the row naming it
    ],
)
def test_header_index_skips_banners_but_never_data(rows, header):
    assert header_index(rows) == header


def test_normalized_phone_uses_the_default_region():
    phones = pl.DataFrame({"phone": ["01 23 45 67 89", "+1 415 555 2671", "12", None]})
    as_fr = phones.select(normalized_phone(pl.col("phone"), phones, "FR")).to_series().to_list()
    as_us = phones.select(normalized_phone(pl.col("phone"), phones, "US")).to_series().to_list()
    assert as_fr == ["+33123456789", "+14155552671", None, None]
    assert as_us == [None, "+14155552671", None, None]


def test_normalized_phone_in_helper_processes_matches_one_process(monkeypatch):
    """Large files spread the library calls over helper processes; the answers must not change."""
    raw = [f"06 12 34 {i:02d} {j:02d}" for i in range(10) for j in range(10)] + [
        "+1 415 555 2671",
        "12",
        "(415) 555-2671",
    ]
    monkeypatch.setattr(phones, "PARALLEL_FROM", 10)
    monkeypatch.setattr(phones.os, "cpu_count", lambda: 3)
    helped, in_helper = [], phones._in_helper
    monkeypatch.setattr(
        phones, "_in_helper", lambda chunk, region: helped.append(len(chunk)) or in_helper(chunk, region)
    )

    spread = phones.e164_numbers_parallel(raw, "FR")

    assert helped == [34, 34], "two helper processes took a third each"
    assert spread == phones.e164_numbers(raw, "FR")
    assert len(spread) == 101 and spread["06 12 34 05 07"] == "+33612340507"


def test_bare_host_url_cases():
    sites = pl.DataFrame(
        {"w": ["https://www.Acme.com/about?x=1", "acme.com", "http://acme.com:8080/", "not a url", None]}
    )
    assert sites.select(bare_host_url(pl.col("w"))).to_series().to_list() == [
        "https://www.acme.com",
        "https://acme.com",
        "http://acme.com:8080",
        None,
        None,
    ]


def test_summary_json_round_trip_and_untagged_from_older_runs():
    summary = FileSummary(
        "f.csv@ab", "/l/f.csv", "ab" * 32, {"E-mail": "email"}, 3, {"parse": 0.1}, match_keys=("email",)
    )
    result = LoadResult(summary, "success", {"rows_read": 3, "inserted": 3})
    assert from_json(json.loads(json.dumps(to_json(summary)))) == summary
    assert from_json(json.loads(json.dumps(to_json(result)))) == result
    warned = dataclasses.replace(summary, warnings=("f.csv: column 'City': 1 value garbled",))
    assert from_json(json.loads(json.dumps(to_json(warned)))) == warned
    # A run from before the hand-offs were typed wrote plain objects; re-executing it reads them as the input's type.
    older = {
        "partition_key": "f.csv@ab",
        "source_file": "/l/f.csv",
        "content_hash": "ab" * 32,
        "mapping": {"E-mail": "email"},
        "rows_read": 3,
        "seconds": {"parse": 0.1},
        "match_keys": ["email"],
        "keep": "first",
        "source": "default",
    }
    assert from_json(older, FileSummary) == summary
    assert from_json(older | {"inserted": 3, "status": "success"}, LoadResult) == LoadResult(
        summary, "success", {"rows_read": 3, "inserted": 3}
    )
    with pytest.raises(ValueError, match="cannot tell which hand-off"):
        from_json(older)


@pytest.mark.parametrize("check_fails_to_run", [False, True])
def test_split_parts_gives_split_valid_chunk_by_chunk(tmp_path, monkeypatch, check_fails_to_run):
    """Screened and batched, validation keeps pandera's verdicts chunk by chunk, even when a check fails to run."""
    chunks, mapping, _details = read_records(
        PROJECT_ROOT / "samples" / "leads_sample.csv", ParseConfig(chunk_rows=50), tmp_path
    )
    records = PartsWriter(tmp_path / "records")
    for i, chunk in enumerate(chunks):
        if i in (9, 12):  # an address only the library decides, in two chunks with invalid addresses
            chunk = chunk.with_columns(
                pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("zoë@exämple.com")).otherwise("email").alias("email")
            )
        records.write(chunk)
    records = records.parts()
    if check_fails_to_run:  # pandera then reports no row for the email check in those two chunks
        accepts = validate_module._library_accepts
        monkeypatch.setattr(
            validate_module, "_library_accepts", lambda address: accepts(address) if "ë" not in address else 1 / 0
        )
    monkeypatch.setattr(validate_module, "_TOGETHER", 120)  # groups of three parts, and their boundaries
    outputs = {}
    for way in ("chunk_by_chunk", "split_parts"):
        valid, rejected = PartsWriter(tmp_path / way / "valid"), PartsWriter(tmp_path / way / "rejected")
        with RejectReport(tmp_path / way / "rejects.csv", list(mapping), "p@1") as report:
            if way == "split_parts":
                split_parts(records, mapping, "US", valid, rejected, report)
            else:
                for chunk in records.frames():
                    valid_rows, rejected_rows = split_valid(chunk, mapping)
                    rejected.write(rejected_rows)
                    report.write(rejected_rows)
                    valid.write(normalized(valid_rows, "US"))
        outputs[way] = [
            [pl.read_parquet(path) for path in valid.parts().paths],
            [pl.read_parquet(path) for path in rejected.parts().paths],
            (tmp_path / way / "rejects.csv").read_bytes(),
        ]

    (valid, rejected, report), (expected_valid, expected_rejected, expected_report) = (
        outputs["split_parts"],
        outputs["chunk_by_chunk"],
    )
    assert len(valid) == len(expected_valid) and all(
        a.equals(b) and a.schema == b.schema for a, b in zip(valid, expected_valid, strict=True)
    )
    assert len(rejected) == len(expected_rejected) and all(
        a.equals(b) for a, b in zip(rejected, expected_rejected, strict=True)
    )
    assert report == expected_report
    lines = set(pl.read_parquet(records.paths[9])[SOURCE_ROW]) | set(pl.read_parquet(records.paths[12])[SOURCE_ROW])
    bad_emails = pl.concat(rejected).filter(pl.col("reasons").str.contains("email is not valid"))[SOURCE_ROW]
    assert bool(lines & set(bad_emails)) != check_fails_to_run


def test_parse_config_chunk_size_read_when_the_run_starts(monkeypatch):
    monkeypatch.setenv("IMPORT_PIPELINE_CHUNK_ROWS", "7")
    assert ParseConfig().rows_per_chunk() == 7
    assert ParseConfig(chunk_rows=50).rows_per_chunk() == 50
    monkeypatch.delenv("IMPORT_PIPELINE_CHUNK_ROWS")
    assert ParseConfig().rows_per_chunk() == 25_000


def test_sheet_for_partition_follows_the_key_and_refuses_a_mismatch(tmp_path):
    path = tmp_path / "events.xlsx"
    path.write_bytes(workbook({"Leads 1": [["Company"], ["Acme"]], "Leads 2": [["Company"], ["Beta"]]}))
    first, second = partition_key(path.name, "ab" * 32), partition_key(path.name, "ab" * 32, "Leads 2")

    assert second == "events.xlsx~Leads_2@abababababababab"
    assert sheet_for_partition(path, second, "") == "Leads 2"
    assert sheet_for_partition(path, first, "") == ""
    assert sheet_for_partition(path, first, "Leads 1") == "Leads 1"
    with pytest.raises(FileRejected) as refused:
        sheet_for_partition(path, first, "Leads 2")
    assert str(refused.value) == (
        f"partition {first!r} is the workbook's first sheet ('Leads 1'), not 'Leads 2': import that sheet as its "
        "own partition (`import-pipeline import FILE` with `sheet` in run config)"
    )
    with pytest.raises(FileRejected) as refused:
        sheet_for_partition(path, partition_key(path.name, "ab" * 32, "Leads 3"), "")
    assert "no sheet matches 'Leads_3'" in str(refused.value)
