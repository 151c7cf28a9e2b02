"""Public CSV/XLSX test corpora (`shared/corpora`, see its SOURCES.md) through the parse stage.

csv-spectrum ships the expected parse of each CSV as JSON; the files of csvkit, frictionless-py and rust-csv
have one expected outcome each in `EXPECTED`, checked by eye and against Python's csv module, never copied
from what our parser happens to produce. Tested at the `read_table` level: most files have no company column.
"""

import codecs
import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest

from import_pipeline.formats import FileRejected
from import_pipeline.parse import ParseConfig, read_table

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"
if not CORPORA.is_dir():
    pytest.skip(
        f"the public CSV corpora are not at {CORPORA} (shared/ beside the repository; CI has it)",
        allow_module_level=True,
    )

SPECTRUM = CORPORA / "csv-spectrum"
SPECTRUM_DEFECTS = {
    "location_coordinates": "known upstream defect: its JSON's phone number differs from the CSV (SOURCES.md)"
}
OUTCOME_FOLDERS = ("csvkit", "frictionless", "rust-csv")
NOT_DATA_SUFFIXES = {".json", ".py", ".md", ".txt", ".yaml", ".yml", ".toml", ".rst", ".sh", ".html", ".xml"}

UTF8 = ("utf-8",)
WESTERN_8BIT = ("cp1252", "iso8859-1")  # both decode the bytes these files use (0xA9 ©, 0xD5 Õ) the same way


def cell_text(value: str | None) -> str:
    """An empty cell as ""; the parse gives null for an empty cell (and "" for a quoted empty one)."""
    return "" if value is None else value


@dataclass(frozen=True)
class Parsed:
    """A file that must parse: what a person opening it sees.

    `records` counts the records with a value or a row problem: a blank row is dropped later (`to_records`)
    and whether the parse keeps it as an all-empty row is not asserted. `problems`, `cells` and `source_rows`
    index those records; `cells` is {(record, column index): text, "" for empty}.
    """

    records: int
    headers: tuple[str, ...] = ()
    first_headers: tuple[str, ...] = ()
    columns: int | None = None
    format: str = "csv"
    delimiter: str | None = ","
    encodings: tuple[str, ...] = UTF8
    line_ending: str | None = None
    problems: dict[int, str] = field(default_factory=dict)
    cells: dict[tuple[int, int], str] = field(default_factory=dict)
    source_rows: tuple[int, ...] | None = None
    header_row: int | None = None


@dataclass(frozen=True)
class Rejected:
    """A file that must be refused as a whole, with this in its message."""

    message: str


EXPECTED: dict[str, Parsed | Rejected] = {
    # --- csvkit examples/ ---
    "csvkit/bad.csv": Parsed(
        3,
        ("column_a", "column_b", "column_c"),
        problems={0: "row has 4 fields, the header has 3", 1: "row has 2 fields, the header has 3"},
        cells={(0, 1): "27", (1, 0): "", (1, 1): "I'm too short!", (2, 1): "mixed types.... uh oh", (2, 2): "17"},
        source_rows=(2, 3, 4),
    ),
    "csvkit/dummy.csv": Parsed(1, ("a", "b", "c"), cells={(0, 0): "1", (0, 2): "3"}),
    # bzip2 is not a format we take; its bytes are refused as binary.
    "csvkit/dummy.csv.bz2": Rejected("unsupported format: a bzip2 archive"),
    "csvkit/dummy.csv.gz": Parsed(1, ("a", "b", "c"), cells={(0, 0): "1", (0, 2): "3"}),
    "csvkit/dummy.xls": Parsed(1, ("a", "b", "c"), format="xls", delimiter=None, cells={(0, 0): "1", (0, 2): "3"}),
    "csvkit/dummy.xlsx": Parsed(
        1, ("a", "b", "c"), format="xlsx", delimiter=None, cells={(0, 0): "1", (0, 2): "3"}, source_rows=(2,)
    ),
    "csvkit/empty.csv": Rejected("the file is empty"),  # a lone line break
    "csvkit/mac_newlines.csv": Parsed(
        2,
        ("a", "b", "c"),
        line_ending="CR",
        cells={(0, 2): "3", (1, 0): "Once upon\ra time", (1, 2): "6"},
        source_rows=(2, 3),
    ),
    # `a,b,c` then `<NUL>,2,3`: a text CSV with one NUL byte in a cell (Python's csv reads it; csvkit's own
    # tests expect the record). The NUL share check (count > len // 100) refuses any NUL in a file under 100 bytes.
    "csvkit/null_byte.csv": Parsed(1, ("a", "b", "c"), cells={(0, 1): "2", (0, 2): "3"}),
    "csvkit/optional_quote_characters.csv": Parsed(1, ("a", "b", "c"), cells={(0, 0): "1", (0, 1): "2", (0, 2): "3"}),
    # The first sheet, 'not this one', is empty; the default is the first sheet.
    "csvkit/sheets.xls": Rejected("the sheet 'not this one' is empty"),
    "csvkit/sheets.xlsx": Rejected("the sheet 'not this one' is empty"),
    "csvkit/test_empty_columns_long_row.csv": Parsed(
        1, ("a", "b", "c"), problems={0: "row has 4 fields, the header has 3"}
    ),
    "csvkit/test_empty_columns_short_row.csv": Parsed(
        1, ("a", "b", "c"), problems={0: "row has 2 fields, the header has 3"}
    ),
    "csvkit/test_header_newline.csv": Parsed(
        1, ("\t\n\x0b\x0c\r start \t\n\x0b\x0c\r end \t\n\x0b\x0c\r", "b", "c"), cells={(0, 0): "d", (0, 2): "f"}
    ),
    # `4,5,\xa9`: Latin-1 ©.
    "csvkit/test_latin1.csv": Parsed(2, ("a", "b", "c"), encodings=WESTERN_8BIT, cells={(1, 2): "©"}),
    # Three empty lines, then the header `a,b,c` on line 4 and `1,2,3` on line 5.
    "csvkit/test_skip_lines.csv": Parsed(
        1, ("a", "b", "c"), cells={(0, 0): "1", (0, 1): "2", (0, 2): "3"}, source_rows=(5,)
    ),
    # Rows 1-3 hold only styled empty cells; the header is on row 4.
    "csvkit/test_skip_lines.xlsx": Parsed(
        5,
        ("text", "date", "integer", "boolean", "float", "datetime", "empty_column", "column_8"),
        format="xlsx",
        delimiter=None,
        cells={
            (0, 0): "Chicago Reader",
            (0, 1): "1966-12-31",
            (0, 2): "40",
            (0, 3): "true",
            (0, 5): "1966-12-31T04:14:00",
            (1, 4): "1.27",
            (1, 7): "Extra data beyond headers will be trimmed",
            (4, 0): "Unicode! Σ",
        },
        source_rows=(5, 6, 7, 8, 9),
        header_row=4,
    ),
    "csvkit/test_utf16_big.csv": Parsed(2, ("a", "b", "c"), encodings=("utf-16",), cells={(1, 2): "ʤ"}),
    "csvkit/test_utf16_little.csv": Parsed(2, ("a", "b", "c"), encodings=("utf-16",), cells={(1, 2): "ʤ"}),
    "csvkit/test_utf8.csv": Parsed(2, ("foo", "bar", "baz"), cells={(0, 0): "1", (1, 2): "ʤ"}),
    "csvkit/test_utf8_bom.csv": Parsed(
        2, ("foo", "bar", "baz"), encodings=("utf-8-sig",), cells={(0, 0): "1", (1, 2): "ʤ"}
    ),
    # --- frictionless-py data/ ---
    "frictionless/blank-rows.csv": Parsed(2, ("id", "name", "age"), cells={(1, 1): "Julie"}, source_rows=(2, 3)),
    "frictionless/bom.csv": Parsed(2, ("id", "name"), encodings=("utf-8-sig",), cells={(1, 1): "中国人"}),
    # Text cells: the leading zeros must survive.
    "frictionless/cast-int-to-string-issue-1251.xlsx": Parsed(
        2,
        ("A", "B", "C", "D", "E"),
        format="xlsx",
        delimiter=None,
        cells={(0, 0): "001", (1, 0): "002", (1, 3): "1"},
    ),
    "frictionless/defective-rows.csv": Parsed(
        2,
        ("id", "name", "age"),
        problems={0: "row has 2 fields, the header has 3", 1: "row has 4 fields, the header has 3"},
        cells={(0, 1): "John", (0, 2): "", (1, 2): "26"},
    ),
    "frictionless/duplicate-column.csv": Parsed(1, ("A", "B", "B", "C"), cells={(0, 1): "b", (0, 2): "C", (0, 3): "c"}),
    "frictionless/encoding-issue-274.csv": Parsed(
        507,
        (
            "id",
            "name",
            "abbreviation",
            "other_names",
            "description",
            "classification",
            "parent_id",
            "founding_date",
            "dissolution_date",
            "image",
            "url",
            "jurisdiction_code",
            "email",
            "address",
            "contact",
            "tags",
            "source_url",
        ),
        cells={(0, 0): "nz/a2f", (16, 1): "Archives New Zealand Te Rua Mahara o te Kāwanatanga"},
    ),
    # `ID, Test` then `1, "Test line 1"`: the quotes follow a space, so (RFC 4180, Python's csv, Excel) they
    # are literal text: 3 records of 2 fields. Whether the leading space is kept is not asserted.
    "frictionless/escaping.csv": Parsed(3, first_headers=("ID",), columns=2, cells={(0, 0): "1", (2, 0): "3"}),
    "frictionless/invalid.csv": Parsed(
        3,
        ("id", "name", "", "name"),
        problems={
            0: "row has 2 fields, the header has 4",
            1: "row has 2 fields, the header has 4",
            2: "row has 5 fields, the header has 4",
        },
        cells={(2, 1): "german", (2, 3): "2"},
        source_rows=(2, 3, 5),
    ),
    "frictionless/issue-1009-semicolon.csv": Parsed(
        1, ("fieldNameA", "fieldNameB"), delimiter=";", cells={(0, 0): "0123", (0, 1): "c"}
    ),
    # Every Description holds 9 CRLF-separated paragraphs; 5,587 characters each.
    "frictionless/issue-1066-largecellsize.csv": Parsed(
        19,
        ("Description", "status"),
        cells={(0, 1): "test", (18, 1): "test"},
        source_rows=tuple(range(2, 165, 9)),
    ),
    # `2,\xa9`: Latin-1 ©.
    "frictionless/latin1.csv": Parsed(
        2, ("id", "name"), encodings=WESTERN_8BIT, cells={(0, 1): "english", (1, 0): "2", (1, 1): "©"}
    ),
    "frictionless/leading-zeros.csv": Parsed(3, ("value",), cells={(0, 0): "01", (1, 0): "002", (2, 0): "00003"}),
    # The only content is 'data', merged over A1:B3: a header and no records.
    "frictionless/merged-cells.xls": Parsed(0, first_headers=("data",), format="xls", delimiter=None),
    "frictionless/merged-cells.xlsx": Parsed(0, first_headers=("data",), format="xlsx", delimiter=None),
    # Headers merged over rows 1-5 (rows 2 and 3 are empty), data `A,B,C,D` on row 6. We take row 1 as
    # the header; the rest are records, numbered by their sheet row.
    "frictionless/multiline-headers.xlsx": Parsed(
        3,
        ("Region", "Caloric contribution", "Cumulative impact of changes on cost of food basket", "column_4"),
        format="xlsx",
        delimiter=None,
        cells={(0, 2): "from previous quarter", (0, 3): "from baseline (%)", (1, 1): "(%)", (2, 0): "A", (2, 3): "D"},
        source_rows=(4, 5, 6),
        header_row=1,
    ),
    # Sheet1 is empty, the data is on Sheet2; the default is the first sheet.
    "frictionless/sheet2.xlsx": Rejected("the sheet 'Sheet1' is empty"),
    "frictionless/sheets.xlsx": Parsed(
        1, ("id", "name"), format="xlsx", delimiter=None, cells={(0, 0): "1", (0, 1): "london"}, source_rows=(2,)
    ),
    # A title merged over A1:B1, the header on row 2.
    "frictionless/skip-rows.xlsx": Parsed(
        2,
        ("A", "B"),
        format="xlsx",
        delimiter=None,
        cells={(0, 0): "8", (0, 1): "9", (1, 0): "", (1, 1): "TOTAL"},
        source_rows=(3, 4),
        header_row=2,
    ),
    "frictionless/table-infer-utf8.csv": Parsed(
        5, ("id", "age", "name"), cells={(0, 2): "Paul", (4, 2): "Iñtërnâtiônàlizætiøn"}
    ),
    "frictionless/table-with-ints-floats-dates.xls": Parsed(
        3,
        ("Int", "Float", "Date"),
        format="xls",
        delimiter=None,
        cells={(0, 0): "2013", (0, 1): "3.3", (0, 2): "2009-08-16", (2, 2): "2012-08-23"},
        source_rows=(2, 3, 4),
    ),
    "frictionless/table.csv.gz": Parsed(2, ("id", "name"), cells={(0, 1): "english", (1, 1): "中国人"}),
    "frictionless/table.tsv": Parsed(3, ("id", "name"), delimiter="\t", cells={(1, 1): "中国人", (2, 1): "\\N"}),
    # --- rust-csv examples/data/ ---
    # The same table as smallpop.csv, separated by colons.
    "rust-csv/smallpop-colon.csv": Parsed(
        10,
        ("city", "region", "country", "population"),
        delimiter=":",
        cells={(0, 0): "Southborough", (0, 3): "9686"},
    ),
    "rust-csv/smallpop.csv": Parsed(
        10, ("city", "region", "country", "population"), cells={(0, 0): "Southborough", (0, 3): "9686"}
    ),
    # Backslash-escaped quotes (`"\"Hacksaw\" Jim Duggan";1987`) and a `#` comment line: not CSV as we read it.
    "rust-csv/strange.csv": Rejected("malformed CSV on line 1"),
    # Line 4 is `\xd5akman,AL,,...`: Latin-1 Õ.
    "rust-csv/uspop-latin1.csv": Parsed(
        100,
        ("City", "State", "Population", "Latitude", "Longitude"),
        encodings=WESTERN_8BIT,
        cells={(0, 0): "Davidsons Landing", (0, 2): "", (2, 0): "Õakman", (2, 1): "AL"},
    ),
    # "null" means empty populations, not NUL bytes.
    "rust-csv/uspop-null.csv": Parsed(
        100,
        ("City", "State", "Population", "Latitude", "Longitude"),
        cells={(0, 0): "Davidsons Landing", (0, 2): "", (1, 2): "7610"},
    ),
}


def corpus_files() -> list[str]:
    """The data files of the outcome folders: everything but documentation and code."""
    return sorted(
        p.relative_to(CORPORA).as_posix()
        for folder in OUTCOME_FOLDERS
        for p in (CORPORA / folder).rglob("*")
        if p.is_file() and p.suffix.lower() not in NOT_DATA_SUFFIXES
    )


def spectrum_cases() -> list:
    cases = []
    for csv_path in sorted((SPECTRUM / "csvs").glob("*.csv")):
        json_path = SPECTRUM / "json" / f"{csv_path.stem}.json"
        if not json_path.is_file():
            continue
        marks = [pytest.mark.skip(reason=SPECTRUM_DEFECTS[csv_path.stem])] if csv_path.stem in SPECTRUM_DEFECTS else []
        cases.append(pytest.param(csv_path, json_path, id=csv_path.stem, marks=marks))
    return cases


@dataclass
class Whole:
    """A file as `read_table` reads it, its chunks (of three records in this suite) put back together."""

    headers: list[str]
    cells: pl.DataFrame
    source_rows: pl.Series
    row_problems: pl.Series | None
    details: dict


def read_whole(path: Path, config: ParseConfig, work_dir: Path) -> Whole:
    raw = read_table(path, config, work_dir)
    chunk = raw.whole()
    return Whole(raw.headers, chunk.cells, chunk.source_rows, chunk.row_problems, raw.details)


def check_shape(raw: Whole) -> None:
    """What every parse result must hold, whatever the file."""
    assert raw.cells.columns == [f"c{i}" for i in range(len(raw.headers))]
    assert all(dtype == pl.String for dtype in raw.cells.dtypes)
    assert raw.source_rows.len() == raw.cells.height
    assert raw.source_rows.is_sorted() and raw.source_rows.n_unique() == raw.source_rows.len()
    if raw.row_problems is not None:
        assert raw.row_problems.len() == raw.cells.height


def test_corpus_has_expectations_for_every_data_file():
    assert corpus_files() == sorted(EXPECTED), "each data file of csvkit/, frictionless/, rust-csv/ needs an entry"


@pytest.mark.parametrize(("csv_path", "json_path"), spectrum_cases())
def test_csv_spectrum_matches_expected_json(csv_path: Path, json_path: Path, tmp_path: Path):
    expected = json.loads(json_path.read_text(encoding="utf-8"))
    raw = read_whole(csv_path, ParseConfig(), tmp_path)
    check_shape(raw)
    records = [dict(zip(raw.headers, map(cell_text, row), strict=True)) for row in raw.cells.rows()]
    assert records == expected
    assert raw.row_problems is None or raw.row_problems.null_count() == raw.row_problems.len()
    assert raw.details["format"] == "csv" and raw.details["delimiter"] == ","


@pytest.mark.parametrize("relative", sorted(EXPECTED))
def test_corpus_file_outcome(relative: str, tmp_path: Path):
    expected = EXPECTED[relative]
    path = CORPORA / relative
    if isinstance(expected, Rejected):
        with pytest.raises(FileRejected) as rejected:
            read_whole(path, ParseConfig(), tmp_path)
        assert expected.message in str(rejected.value)
        return

    raw = read_whole(path, ParseConfig(), tmp_path)
    check_shape(raw)
    details = raw.details
    assert details["format"] == expected.format
    if expected.format == "csv":
        assert details["delimiter"] == expected.delimiter
        assert codecs.lookup(details["encoding"]).name in expected.encodings, details["encoding"]
        if expected.line_ending is not None:
            assert details["line_ending"] == expected.line_ending
    if expected.header_row is not None:
        assert details["header_row"] == expected.header_row

    if expected.headers:
        assert raw.headers == list(expected.headers)
    assert raw.headers[: len(expected.first_headers)] == list(expected.first_headers)
    if expected.columns is not None:
        assert len(raw.headers) == expected.columns

    problems = raw.row_problems.to_list() if raw.row_problems is not None else [None] * raw.cells.height
    records = [
        (row, source_row, problem)
        for row, source_row, problem in zip(raw.cells.rows(), raw.source_rows.to_list(), problems, strict=True)
        if problem is not None or any(cell_text(v).strip() for v in row)
    ]
    assert len(records) == expected.records
    assert {i: problem for i, (_, _, problem) in enumerate(records) if problem is not None} == expected.problems
    if expected.source_rows is not None:
        assert [source_row for _, source_row, _ in records] == list(expected.source_rows)
    assert {at: cell_text(records[at[0]][0][at[1]]) for at in expected.cells} == expected.cells


@pytest.mark.parametrize("name", ["sheets.xls", "sheets.xlsx"])
def test_named_sheet_of_a_workbook(name: str, tmp_path: Path):
    raw = read_whole(CORPORA / "csvkit" / name, ParseConfig(sheet="data"), tmp_path)
    check_shape(raw)
    assert raw.details["sheet"] == "data"
    assert raw.headers == ["text", "date", "integer", "boolean", "float", "datetime", "empty_column", "column_8"]
    assert raw.cells.height == 5
    assert raw.cells["c0"].to_list()[-1] == "Unicode! Σ"
    raw = read_whole(CORPORA / "csvkit" / name, ParseConfig(sheet="ʤ"), tmp_path)
    assert raw.headers == ["a", "b", "c"]
    assert raw.cells.rows() == [("1", "2", "3")]
