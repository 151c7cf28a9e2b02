"""Text encodings: Western exports decode right, other code pages keep their detection, garbled text is never silent."""

import logging

import dagster as dg
import pytest

from import_pipeline import lines
from import_pipeline.formats import RawTable
from import_pipeline.garbled import Garble, GarbledValues, garbled, header_problem
from import_pipeline.launch import import_file
from import_pipeline.load import LEADS_ASSET
from import_pipeline.mapping import field_of
from import_pipeline.parse import ParseConfig, read_table
from import_pipeline.western import oddities
from import_pipeline_tests.hostile_files import (
    OTHER_CODE_PAGES,
    WESTERN,
    WESTERN_SIZES,
    export_rows,
    hostile_files,
    latin_1_rows,
    semicolon_export,
)

# The Latin-1 exports are the Western ones without Windows-1252's punctuation, the UTF-8 ones the same text: fewer
# sizes suffice.
WESTERN_CASES = [
    *((language, rows, "cp1252") for language in WESTERN for rows in WESTERN_SIZES),
    *((language, rows, encoding) for language in WESTERN for rows in (5, 50) for encoding in ("latin-1", "utf-8")),
]
OTHER_CASES = [(language, rows) for language in OTHER_CODE_PAGES for rows in (3, 10, 500)]


def _cells(raw: RawTable) -> list[list[str]]:
    """The records as text, an empty cell as ""."""
    return [["" if v is None else v for v in row] for row in raw.whole().cells.rows()]


def _export(tmp_path, rows: list[list[str]], encoding: str):
    path = tmp_path / "export.csv"
    path.write_bytes(semicolon_export(rows).encode(encoding))
    return read_table(path, ParseConfig(chunk_rows=5000), tmp_path / "work")


@pytest.mark.parametrize(("language", "rows", "encoding"), WESTERN_CASES)
def test_western_export_decodes_exactly(tmp_path, language, rows, encoding):
    written = export_rows(WESTERN[language], rows)
    if encoding == "latin-1":
        written = latin_1_rows(written)

    raw = _export(tmp_path, written, encoding)

    assert raw.details["encoding"] == ("utf-8" if encoding == "utf-8" else "cp1252")
    assert raw.headers == written[0]
    assert _cells(raw) == written[1:]
    # Nothing in them looks garbled: no Western text is taken for mojibake.
    assert header_problem(raw.headers, raw.details["encoding"], lambda header: field_of(header) is not None) is None
    values = GarbledValues(raw.headers, raw.details["encoding"])
    for chunk in _export(tmp_path, written, encoding).chunks:
        values.check(chunk)
    assert values.warnings() == []


@pytest.mark.parametrize(("language", "rows"), OTHER_CASES)
def test_other_code_page_export_keeps_its_code_page(tmp_path, language, rows):
    encoding, values = OTHER_CODE_PAGES[language]
    written = export_rows(values, rows)

    raw = _export(tmp_path, written, encoding)

    assert raw.details["encoding"] == encoding
    assert raw.headers == written[0]
    assert _cells(raw) == written[1:]


def test_import_job_french_windows_1252_export_keeps_its_names(pipeline):
    """The export charset-normalizer alone read as cp775: first names, phones and companies intact in PostgreSQL."""
    written = export_rows(WESTERN["French"], 50)
    path = pipeline.landing / "contacts_fr.csv"
    path.write_bytes(semicolon_export(written).encode("cp1252"))

    result = import_file(path)

    assert (result["status"], result["inserted"], result["warnings"]) == ("success", 50, []), result["error"]
    assert pipeline.query(
        "SELECT first_name, last_name, company_name, phone, email, city, notes FROM leads ORDER BY source_row"
    ) == [tuple(value or None for value in row) for row in written[1:]]


@pytest.mark.parametrize(
    ("text", "odd_words", "odd_characters"),
    [
        ("Hôtel Le Méridien, L’Oréal, Col·legi, Ærøskøbing, Þórður, Šarkovski, 1.º, « VIP » 12,50 €", 0, 0),
        ("JOÃO, São, Ã, Nº, Åsa, ÉCOLE, Straße, 50 m², 1½ h, don´t", 0, 0),
        ("Dvoøák", 1, 0),  # Czech Dvořák read as Windows-1252: ø and á are no one language's
        ("Èâàí Ïåòðîâ", 2, 0),  # Russian Иван Петров read as Windows-1252
        ("CafŽ", 1, 0),  # Mac Roman Café read as Windows-1252: a capital after a small letter
        ("Pi³ka, 12,50 ¤", 0, 2),  # Polish ł read as ³ inside a word; Latin-9's euro sign read as ¤
    ],
)
def test_oddities_cases(text, odd_words, odd_characters):
    found = oddities(text)
    assert (found.odd_words, found.odd_characters) == (odd_words, odd_characters)


def test_import_job_garbled_values_are_warned_of_in_the_log_metadata_and_result(pipeline):
    hostile = next(h for h in hostile_files() if h.name == "mojibake_values.csv")
    path = pipeline.landing / hostile.name
    path.write_bytes(hostile.content)

    result = import_file(path)

    expected = [f"mojibake_values.csv: {warning}" for warning in hostile.warnings]
    assert (result["status"], result["inserted"], result["warnings"]) == ("success", 5, expected), result["error"]
    instance = pipeline.instance
    outputs = instance.get_records_for_run(result["run_id"], of_type=dg.DagsterEventType.STEP_OUTPUT).records
    parse_metadata = next(
        r.event_log_entry.dagster_event.step_output_data.metadata
        for r in outputs
        if r.event_log_entry.dagster_event.step_key == "leads.parse"
        and r.event_log_entry.dagster_event.step_output_data.output_name == "records"
    )
    assert parse_metadata["warnings"].value == expected
    (materialization,) = instance.fetch_materializations(LEADS_ASSET, limit=5).records
    assert materialization.asset_materialization.metadata["warnings"].value == expected
    logged = [e.user_message for e in instance.all_logs(result["run_id"]) if e.level == logging.WARNING]
    assert [m for m in logged if m in expected] == expected
    # Imported as written: the warning says what they probably are, the data is not rewritten behind the user.
    assert pipeline.query("SELECT source_row, company_name FROM leads WHERE source_row IN (3, 5) ORDER BY 1") == [
        (3, "SociÃ©tÃ© GÃ©nÃ©rale"),
        (5, "Lâ€™OrÃ©al"),
    ]


@pytest.mark.parametrize(
    ("text", "encoding", "expected"),
    [
        ("JOÃO & IRMÃOS, São Paulo, Ã, Groß…, « VIP », L’Oréal, 12,50 €", "utf-8", None),
        ("Ã©cole", "utf-8", Garble("mojibake", "école", None, "UTF-8 text read as Windows-1252 or Latin-1")),
        ("Ã©cole", "cp1252", Garble("mojibake", "école", "utf-8", "UTF-8 text read as Windows-1252 or Latin-1")),
        ("L\x92Atelier", "latin-1", Garble("mojibake", "L’Atelier", "cp1252", "Windows-1252 text read as Latin-1")),
        ("Pr\ufffdsident", "utf-8", Garble("lost")),
        ("\x81", "cp1252", Garble("controls")),
    ],
)
def test_garbled_cases(text, encoding, expected):
    assert garbled(text, encoding) == expected


def test_import_job_utf8_file_with_windows_1252_lines_from_line_50000(pipeline):
    """An export appended to another: every line is read in its own encoding, the Windows-1252 ones are named."""
    utf8 = "".join(f"Société {line},Zoé,z{line}@x.fr,Orléans\n" for line in range(2, 50_000))
    cp1252 = "".join(f"Hôtel {line},Hélène,h{line}@x.fr,Besançon – “centre”\n" for line in range(50_000, 50_100))
    path = pipeline.landing / "appended.csv"
    path.write_bytes(b"Company,First Name,Email,City\n" + utf8.encode() + cp1252.encode("cp1252"))

    result = import_file(path, {"ops": {"parse": {"config": {"chunk_rows": 25_000}}}})

    assert (result["status"], result["rows_read"], result["inserted"]) == ("success", 50_098, 50_098), result["error"]
    assert result["warnings"] == [
        "appended.csv: lines 50000, 50001, 50002, 50003, 50004 and 95 more are not UTF-8, the file's other lines "
        "are: read as Windows-1252 (set `encoding:` in the parse step's run config if that is wrong)"
    ]
    assert pipeline.query(
        "SELECT source_row, company_name, first_name, city FROM leads WHERE source_row IN (49999, 50000, 50099) "
        "ORDER BY source_row"
    ) == [
        (49999, "Société 49999", "Zoé", "Orléans"),
        (50000, "Hôtel 50000", "Hélène", "Besançon – “centre”"),
        (50099, "Hôtel 50099", "Hélène", "Besançon – “centre”"),
    ]


@pytest.mark.parametrize("block_chars", [1, 2, 3, 7, 1024 * 1024])
def test_lines_read_as_windows_1252_are_numbered_as_an_editor_does(tmp_path, monkeypatch, block_chars):
    """Whatever the line ends (LF, CRLF, CR, one split across reads), each line is named and read in its encoding."""
    monkeypatch.setattr(lines, "BLOCK_CHARS", block_chars)
    written = ["Zoé\n", "Hélène\r\n", "ok\r", "Müller\n", "\r\n", "Café “x”\r", "né\r\n", "fin"]
    cp1252 = {2, 4, 6}  # lines written in Windows-1252; the others in UTF-8
    path, target = tmp_path / "mixed.csv", tmp_path / "mixed.utf8"
    path.write_bytes(b"".join(t.encode("cp1252" if n in cp1252 else "utf-8") for n, t in enumerate(written, 1)))

    found = lines.survey_utf8(path, 1_000)
    first_lines, count = lines.utf8_with_cp1252_lines(path, target)

    assert (found.bad_lines, found.utf8_line) == ([2, 4, 6], 1)
    assert (first_lines, count) == ([2, 4, 6], 3)
    assert target.read_bytes().decode() == "".join(written)
