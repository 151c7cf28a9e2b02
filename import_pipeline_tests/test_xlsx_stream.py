"""The streamed XLSX reader against calamine's whole-sheet read (`read_whole_sheet`, kept for XLS): the same
headers, details, cells, row numbers and chunks for every workbook of the tests, the corpora and seeded random
ones, by the polars path and by the exact port; its own errors; its temporary files; a multi-chunk import."""

import io
import zipfile
from pathlib import Path

import pytest
import xlsxwriter

from import_pipeline import excel_reader, xlsx_sheet
from import_pipeline.excel_reader import read_excel_table, read_whole_sheet
from import_pipeline.formats import FileRejected
from import_pipeline.launch import import_file
from import_pipeline_tests.hostile_files import hostile_files
from import_pipeline_tests.random_workbooks import _package, by_hand, by_xlsxwriter

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"
SEEDS = range(12)


def _outcome(read) -> tuple:
    """Everything a reader hands on: headers, details, and each chunk's cells and row numbers; or its refusal."""
    try:
        table = read()
    except FileRejected as e:
        return ("rejected", str(e))
    chunks = list(table.chunks)
    return (
        table.headers,
        table.details,
        [chunk.cells.columns for chunk in chunks],
        [chunk.cells.rows() for chunk in chunks],
        [chunk.source_rows.to_list() for chunk in chunks],
    )


def _same_as_whole_read(path: Path, sheet: str = "", chunk_rows: int = 3) -> tuple:
    streamed = _outcome(lambda: read_excel_table(path, "xlsx", sheet, 1 << 30, chunk_rows))
    assert streamed == _outcome(lambda: read_whole_sheet(path, "xlsx", sheet, chunk_rows))
    return streamed


def _is_workbook(content: bytes) -> bool:
    if not content.startswith(b"PK"):
        return False
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return "xl/workbook.xml" in archive.namelist()


def _workbooks() -> list[tuple[str, bytes, str]]:
    found = [(h.name, h.content, str(h.config.get("sheet", ""))) for h in hostile_files()]
    found = [(name, content, sheet) for name, content, sheet in found if _is_workbook(content) and name != "bomb.xlsx"]
    if CORPORA.is_dir():
        found += [(p.name, p.read_bytes(), "") for p in sorted(CORPORA.rglob("*.xlsx"))]
    return found


@pytest.fixture
def exact(monkeypatch):
    """Every run read by the port of calamine's event loop, none by polars."""
    monkeypatch.setattr(xlsx_sheet, "fast_cells", lambda *args: None)


@pytest.fixture
def small_runs(monkeypatch):
    """Runs of a few rows, each kept on disk: run boundaries and the spill in every workbook."""
    monkeypatch.setattr(xlsx_sheet, "BLOCK_BYTES", 700)
    monkeypatch.setattr(excel_reader, "SPILL_AFTER_BYTES", 0)


@pytest.mark.parametrize(("name", "content", "sheet"), _workbooks(), ids=lambda v: v if isinstance(v, str) else "")
def test_test_workbook_streams_as_read_whole(name, content, sheet, tmp_path):
    path = tmp_path / name
    path.write_bytes(content)
    _same_as_whole_read(path, sheet)


@pytest.mark.parametrize("seed", SEEDS)
def test_xlsxwriter_workbook_streams_as_read_whole(seed, tmp_path):
    content, sheet = by_xlsxwriter(seed)
    (tmp_path / "book.xlsx").write_bytes(content)
    _same_as_whole_read(tmp_path / "book.xlsx", sheet, chunk_rows=1 + seed % 5)


@pytest.mark.parametrize("seed", SEEDS)
def test_hand_written_workbook_streams_as_read_whole(seed, tmp_path):
    content, sheet = by_hand(seed)
    (tmp_path / "book.xlsx").write_bytes(content)
    _same_as_whole_read(tmp_path / "book.xlsx", sheet, chunk_rows=1 + seed % 5)


@pytest.mark.parametrize("seed", SEEDS)
def test_exact_reader_workbook_streams_as_read_whole(seed, tmp_path, exact):
    for name, (content, sheet) in {"a.xlsx": by_xlsxwriter(100 + seed), "b.xlsx": by_hand(100 + seed)}.items():
        (tmp_path / name).write_bytes(content)
        _same_as_whole_read(tmp_path / name, sheet)


@pytest.mark.parametrize("seed", SEEDS)
def test_small_runs_workbook_streams_as_read_whole(seed, tmp_path, small_runs):
    for name, (content, sheet) in {"a.xlsx": by_xlsxwriter(200 + seed), "b.xlsx": by_hand(200 + seed)}.items():
        (tmp_path / name).write_bytes(content)
        _same_as_whole_read(tmp_path / name, sheet, chunk_rows=2)


def _leads_workbook(path: Path, rows: list[tuple[int, list[object]]], **options) -> None:
    """Leads on the sheet rows given (0-based), with a header on row 3 below a banner."""
    book = xlsxwriter.Workbook(str(path), options)
    sheet = book.add_worksheet("Leads")
    sheet.write_string(0, 0, "Trade show export")
    sheet.write_row(2, 0, ["Company", "Email", "Phone"])
    for at, values in rows:
        sheet.write_row(at, 0, values)
    book.close()


def test_spilled_rows_are_removed_once_read(tmp_path, small_runs, monkeypatch):
    folders: list[Path] = []
    spill = excel_reader.tempfile.TemporaryDirectory

    def tracked(**kwargs):
        folder = spill(**kwargs)
        folders.append(Path(folder.name))
        return folder

    monkeypatch.setattr(excel_reader.tempfile, "TemporaryDirectory", tracked)
    _leads_workbook(tmp_path / "book.xlsx", [(3 + i, [f"Co {i}", f"c{i}@x.com", "061234"]) for i in range(40)])

    table = read_excel_table(tmp_path / "book.xlsx", "xlsx", "", 1 << 30, 7)
    (folder,) = folders
    assert len(list(folder.glob("*.arrow"))) > 2
    assert sum(chunk.cells.height for chunk in table.chunks) == 40
    assert not folder.exists()


def test_rows_out_of_order_read_whole(tmp_path):
    sheet = (
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        '<row r="1"><c r="A1" t="inlineStr"><is><t>Company</t></is></c><c r="B1" t="inlineStr"><is><t>Email</t></is></c></row>'
        '<row r="3"><c r="A3" t="inlineStr"><is><t>Late</t></is></c></row>'
        '<row r="2"><c r="A2" t="inlineStr"><is><t>Early</t></is></c></row>'
        "</sheetData></worksheet>"
    )
    (tmp_path / "book.xlsx").write_bytes(_package(sheet, "", [], [0], False, ""))

    headers, _, _, cells, rows = _same_as_whole_read(tmp_path / "book.xlsx")

    assert (headers, cells, rows) == (["Company", "Email"], [[("Early", None), ("Late", None)]], [[2, 3]])


def _hand_sheet(cells: str, strings: str = "") -> bytes:
    sheet = (
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        f'<row r="1"><c r="A1" t="inlineStr"><is><t>Company</t></is></c></row><row r="2">{cells}</row>'
        "</sheetData></worksheet>"
    )
    return _package(sheet, strings, [], [0], False, "")


@pytest.mark.parametrize(
    ("cells", "error"),
    [
        (
            '<c r="B2" t="s"><v>7</v></c>',
            "the sheet 'Data' cannot be read at row 2: the cell B2 names shared string 7, but the workbook has 1",
        ),
        (
            '<c r="C2" t="n"><v>12 kg</v></c>',
            "the sheet 'Data' cannot be read at row 2: the number cell C2 holds '12 kg'",
        ),
        ('<c r="A2" t="x"><v>1</v></c>', "the sheet 'Data' cannot be read at row 2: unknown cell type t='x'"),
        ('<c r="2"><v>1</v></c>', "the sheet 'Data' cannot be read at row 2: malformed cell reference '2'"),
        ('<c r="A2"><v>1</v>', "the sheet 'Data' cannot be read at row 2: the XML ends inside <c>"),
        (
            '<c r="A2000000"><v>1</v></c>',
            "the sheet has a cell at A2000000, beyond Excel's 1,048,576 rows and 16,384 columns",
        ),
    ],
)
def test_unreadable_sheet_says_sheet_row_and_why(cells, error, tmp_path):
    (tmp_path / "book.xlsx").write_bytes(_hand_sheet(cells, "<si><t>only</t></si>"))

    with pytest.raises(FileRejected) as rejected:
        list(read_excel_table(tmp_path / "book.xlsx", "xlsx", "", 1 << 30, 3).chunks)

    assert str(rejected.value) == error


def test_missing_sheet_lists_the_sheets(tmp_path):
    (tmp_path / "book.xlsx").write_bytes(_hand_sheet(""))

    with pytest.raises(FileRejected) as rejected:
        read_excel_table(tmp_path / "book.xlsx", "xlsx", "Leads", 1 << 30, 3)

    assert str(rejected.value) == "no sheet named 'Leads'; the workbook has ['Data']"


def test_damaged_workbook_says_so(tmp_path):
    content = io.BytesIO()
    with zipfile.ZipFile(content, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    (tmp_path / "book.xlsx").write_bytes(content.getvalue())

    with pytest.raises(FileRejected) as rejected:
        read_excel_table(tmp_path / "book.xlsx", "xlsx", "", 1 << 30, 3)

    assert str(rejected.value) == "not a readable workbook: it has no _rels/.rels"


# calamine's own cases for detect_custom_number_format (src/formats.rs, ported from openpyxl's tests).
NUMBER_FORMATS = {
    "DD/MM/YY": xlsx_sheet.DATETIME,
    "H:MM:SS;@": xlsx_sheet.DATETIME,
    "#,##0\\ [$\\u20bd-46D]": xlsx_sheet.OTHER,
    'm"M"d"D";@': xlsx_sheet.DATETIME,
    "[h]:mm:ss": xlsx_sheet.TIMEDELTA,
    '"Y: "0.00"m";"Y: "-0.00"m";"Y: <num>m";@': xlsx_sheet.OTHER,
    '"$"#,##0_);[Red]("$"#,##0)': xlsx_sheet.OTHER,
    '[$-404]e"\\xfc"m"\\xfc"d"\\xfc"': xlsx_sheet.DATETIME,
    "0_ ;[Red]\\-0\\ ": xlsx_sheet.OTHER,
    "\\Y000000": xlsx_sheet.OTHER,
    '#,##0.0####" YMD"': xlsx_sheet.OTHER,
    "[h]": xlsx_sheet.TIMEDELTA,
    "[ss]": xlsx_sheet.TIMEDELTA,
    "[s].000": xlsx_sheet.TIMEDELTA,
    "[Blue]\\+[h]:mm;[Red]\\-[h]:mm;[Green][h]:mm": xlsx_sheet.TIMEDELTA,
    "[>=100][Magenta][s].00": xlsx_sheet.TIMEDELTA,
    "[>=100][Magenta].00": xlsx_sheet.OTHER,
    "[>=100][Magenta]General": xlsx_sheet.OTHER,
    "ha/p\\\\m": xlsx_sheet.DATETIME,
    '#,##0.00\\ _M"H"_);[Red]#,##0.00\\ _M"S"_)': xlsx_sheet.OTHER,
    "#,##0*y": xlsx_sheet.OTHER,
    '0"x"*d': xlsx_sheet.OTHER,
    "*-yyyy-mm-dd": xlsx_sheet.DATETIME,
}


@pytest.mark.parametrize(("code", "kind"), NUMBER_FORMATS.items())
def test_custom_format_classified_as_calamine(code, kind):
    assert xlsx_sheet.custom_format(code) == kind


def test_float_text_rounds_as_rust():
    # Rust's `{:.9}` rounds the exact binary value, ties to even: 0.0009765625 is a tie, 0.1 + 0.2 is not.
    values = [0.0009765625, 0.0029296875, 0.1 + 0.2, 1e20, 2.5e-10, -1e-12, float("nan"), float("-inf")]
    assert [xlsx_sheet.float_text(v) for v in values] == [
        "0.000976562",
        "0.002929688",
        "0.3",
        "100000000000000000000",
        "0",
        "-0",
        "NaN",
        "-inf",
    ]


def test_workbook_in_many_chunks_imports_with_sheet_rows(pipeline, monkeypatch):
    """Through the job, 3 records a chunk (conftest): banner, blank rows and a bad email keep their sheet rows."""
    monkeypatch.setattr(xlsx_sheet, "BLOCK_BYTES", 600)
    leads = {4 + i: [f"Company {i}", f"lead{i}@example.com", f"06123456{i:02}"] for i in range(9)}
    leads[8][1] = "not-an-email"
    leads |= {17: ["Late Ltd", "late@example.com", "0611111111"], 18: ["Last SA", "last@example.com", ""]}
    path = pipeline.landing / "leads.xlsx"
    _leads_workbook(path, [(at - 1, values) for at, values in leads.items()], constant_memory=True)

    result = import_file(path, {"ops": {"validate": {"config": {"max_error_rate": 0.5}}}})

    assert result["status"] == "success", result["error"]
    assert (result["rows_read"], result["rows_rejected"], result["inserted"]) == (11, 1, 10)
    assert pipeline.query("SELECT source_row, company_name FROM leads ORDER BY source_row") == [
        (at, values[0]) for at, values in sorted(leads.items()) if at != 8
    ]
    assert pipeline.query("SELECT source_row, raw_values->>'Email' FROM rejected_rows") == [(8, "not-an-email")]


def test_header_row_with_a_date_keeps_calamine_text(tmp_path):
    """The header is taken as calamine gives it; only the records' dates become ISO text."""
    from datetime import datetime

    book = xlsxwriter.Workbook(str(tmp_path / "book.xlsx"))
    sheet = book.add_worksheet()
    stamp = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
    sheet.write_string(0, 0, "Company")
    sheet.write_datetime(0, 1, datetime(2026, 3, 1), stamp)
    sheet.write_row(1, 0, ["Acme"])
    sheet.write_datetime(1, 1, datetime(2026, 3, 2, 14, 5, 9), stamp)
    book.close()

    headers, _, _, cells, _ = _same_as_whole_read(tmp_path / "book.xlsx")

    assert (headers, cells) == (["Company", "2026-03-01 00:00:00"], [[("Acme", "2026-03-02T14:05:09")]])


def test_chunks_hold_chunk_rows_records(tmp_path):
    _leads_workbook(tmp_path / "book.xlsx", [(3 + i, [f"Co {i}", f"c{i}@x.com", "061234"]) for i in range(10)])

    table = read_excel_table(tmp_path / "book.xlsx", "xlsx", "", 1 << 30, 4)

    assert [chunk.cells.height for chunk in table.chunks] == [4, 4, 2]
    assert table.details == {"format": "xlsx", "sheet": "Leads", "header_row": 3}
