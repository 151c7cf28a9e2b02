"""Text encodings: Western exports decode right, other code pages keep their detection, garbled text is never silent."""

import pytest

from import_pipeline.formats import RawTable
from import_pipeline.launch import import_file
from import_pipeline.parse import ParseConfig, read_table
from import_pipeline.western import oddities
from import_pipeline_tests.hostile_files import (
    OTHER_CODE_PAGES,
    WESTERN,
    WESTERN_SIZES,
    export_rows,
    latin_1_rows,
    semicolon_export,
)

# The Latin-1 exports are the Western ones without Windows-1252's punctuation: fewer sizes suffice.
WESTERN_CASES = [
    *((language, rows, "cp1252") for language in WESTERN for rows in WESTERN_SIZES),
    *((language, rows, "latin-1") for language in WESTERN for rows in (5, 50)),
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

    assert raw.details["encoding"] == "cp1252"
    assert raw.headers == written[0]
    assert _cells(raw) == written[1:]


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

    assert (result["status"], result["inserted"]) == ("success", 50), result["error"]
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
