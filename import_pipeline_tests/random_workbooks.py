"""Seeded random workbooks, to hold the streamed XLSX reader to calamine's whole-sheet read cell for cell.

`by_xlsxwriter` writes what the common writers write (shared or inline strings, number and date formats,
formulas with cached values, rich text, styled blank cells, blank rows, an offset table, the 1904 epoch);
`by_hand` writes the sheet XML itself, in shapes only other writers or hand-edited files have (cells or rows
without `r`, an `x:` namespace prefix, pretty-printed XML, comments, CDATA, character references, errors,
phonetic runs, `t="str"`/`t="d"` cells, empty values, style indexes out of range).

`python -m import_pipeline_tests.random_workbooks DIR N` writes N of each, to open them by hand.
"""

import io
import random
import sys
import zipfile
from datetime import datetime, time, timedelta
from pathlib import Path
from xml.sax.saxutils import escape

import xlsxwriter

WORDS = [
    "Acme",
    "Zoé",
    "Müller",
    "日本語",
    "Ünïcødé ✓",
    "😀 emoji",
    "AT&T",
    "<tag>",
    'say "hi"',
    "it's",
    " padded ",
    "\ttab",
    "line\nbreak",
    "crlf\r\nline",
    "_x000D_ literal",
    "2024-01-01 00:00:00",
    "2024-01-01 10:20:30",
    "١٢٣٤-٠١-٠٢ 00:00:00",
    "0042",
    "TRUE",
    "#N/A",
    "a>b",
    "x" * 300,
]
NUMBERS = [0, 1, -5, 42, 0.1, 0.1 + 0.2, 1 / 3, -1.5, 2.5e-10, 1e-7, 1e20, 123456.789, 2**53 + 1.0, 10**15, -0.0]
NUMBERS += [3 / 1024, 5 / 1024, 0.0009765625, 1e300, 45000.5, 59.999999, 60, 61.25]
FORMATS = ["yyyy-mm-dd", "dd/mm/yyyy hh:mm", "[h]:mm:ss", "0.00", "#,##0", '"$"#,##0.00', "mmm-yy", "h:mm AM/PM"]
FORMATS += [
    "@",
    "0%",
    "General",
    "[Red]0.00;[Blue]-0.00",
    '"Date: "yyyy',
    "hh:mm:ss.000",
    "yyyy-mm-dd hh:mm:ss",
    "\\d0",
]
BUILTIN_FORMATS = [14, 15, 16, 17, 18, 19, 20, 21, 22, 45, 46, 47, 1, 2, 10, 49]
HEADERS = ["Company", "Email", "Phone", "City", "Created", "Score", "Notes", "Active"]


def _when(rng: random.Random, epoch_1904: bool) -> datetime:
    start = datetime(1904 if epoch_1904 else 1900, 1, 1)
    if rng.random() < 0.1:
        return start + timedelta(days=rng.randint(0, 80), seconds=rng.randint(0, 86399))
    when = start + timedelta(days=rng.randint(0, 60_000), seconds=rng.randint(0, 86399))
    if rng.random() < 0.3:
        when = when.replace(hour=0, minute=0, second=0)
    if rng.random() < 0.2:
        when = when.replace(microsecond=rng.choice([1000, 500_000, 999_000, 123_000]))
    return when


def by_xlsxwriter(seed: int) -> tuple[bytes, str]:
    """A workbook written by xlsxwriter, and the sheet to read ("" for the first)."""
    rng = random.Random(seed)
    out = io.BytesIO()
    epoch_1904 = rng.random() < 0.2
    book = xlsxwriter.Workbook(out, {"in_memory": True, "constant_memory": rng.random() < 0.4, "date_1904": epoch_1904})
    formats = [book.add_format({"num_format": f}) for f in FORMATS]
    formats += [book.add_format({"num_format": n}) for n in BUILTIN_FORMATS]
    bold = book.add_format({"bold": True})
    names = [f"Sheet {i}" for i in range(rng.randint(1, 3))]
    for name in names:
        sheet = book.add_worksheet(name)
        top, left = rng.choice([0, 0, 1, 3]), rng.choice([0, 0, 1, 2])
        width = rng.randint(1, len(HEADERS))
        row = top
        if rng.random() < 0.3:
            sheet.write_string(row, left, "Export of leads")
            row += 2
        for c in range(width):
            sheet.write_string(row, left + c, HEADERS[c])
        for _ in range(rng.randint(0, 60)):
            row += 1 if rng.random() < 0.9 else rng.randint(2, 4)
            for c in range(width + (1 if rng.random() < 0.05 else 0)):
                _write(sheet, rng, row, left + c, formats, bold, epoch_1904)
    book.close()
    return out.getvalue(), rng.choice(["", *names])


def _write(sheet, rng: random.Random, row: int, col: int, formats: list, bold, epoch_1904: bool) -> None:
    kind = rng.random()
    fmt = rng.choice(formats) if rng.random() < 0.3 else None
    if kind < 0.15:
        if rng.random() < 0.3:
            sheet.write_blank(row, col, None, rng.choice(formats))
    elif kind < 0.45:
        sheet.write_string(row, col, rng.choice(WORDS), fmt)
    elif kind < 0.65:
        sheet.write_number(row, col, rng.choice(NUMBERS), fmt)
    elif kind < 0.75:
        when = _when(rng, epoch_1904)
        sheet.write_datetime(row, col, when if rng.random() < 0.7 else when.date(), rng.choice(formats))
    elif kind < 0.8:
        sheet.write_datetime(row, col, time(rng.randint(0, 23), rng.randint(0, 59)), rng.choice(formats))
    elif kind < 0.85:
        sheet.write_boolean(row, col, rng.random() < 0.5, fmt)
    elif kind < 0.93:
        cached = rng.choice([rng.choice(NUMBERS), rng.choice(WORDS), True, "#N/A", "#DIV/0!", ""])
        sheet.write_formula(row, col, "=A1", fmt, cached)
    else:
        sheet.write_rich_string(row, col, bold, rng.choice(["Bold", "Ünï"]), rng.choice([" plain", " x&y"]))


_SHEET_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'


def _text_xml(rng: random.Random, text: str, x: str) -> str:
    """`text` as the inside of an `<is>` or `<si>`: a plain, preserved, CDATA, rich or phonetic run."""
    body = escape(text)
    if rng.random() < 0.1:
        body = body.replace("\n", "&#10;")
    runs = [
        f"<{x}t>{body}</{x}t>",
        f'<{x}t xml:space="preserve">{body}</{x}t>',
        f"<{x}t><![CDATA[{text.replace(']]>', '')}]]></{x}t>",
        f'<{x}r><{x}rPr><{x}b/></{x}rPr><{x}t xml:space="preserve">{body} </{x}t></{x}r>'
        f"<{x}r><{x}t>and more</{x}t></{x}r>",
        f'<{x}t>{body}</{x}t><{x}rPh sb="0" eb="1"><{x}t>フリガナ</{x}t></{x}rPh><{x}phoneticPr fontId="1"/>',
    ]
    return rng.choices(runs, weights=[50, 15, 10, 15, 10])[0]


def by_hand(seed: int) -> tuple[bytes, str]:
    """A workbook whose sheet XML is written by hand, and the sheet to read ("" for the first)."""
    rng = random.Random(seed)
    x = "x:" if rng.random() < 0.25 else ""
    pretty = rng.random() < 0.15
    sep = "\n  " if pretty else ""
    strings: list[str] = []
    numfmts = [(164 + i, f) for i, f in enumerate(rng.sample(FORMATS, 6))]
    xfs = [0] + [rng.choice([*BUILTIN_FORMATS, *(i for i, _ in numfmts)]) for _ in range(8)]
    rows, r = [], rng.choice([1, 1, 2, 5])
    with_r = rng.random() < 0.7
    for i in range(rng.randint(1, 50)):
        cells, c = [], rng.choice([0, 0, 1])
        for _ in range(rng.randint(1 if i == 0 else 0, 8)):
            c += 1 if rng.random() < 0.85 else 2
            # The first row keeps its references: the whole-sheet reference numbers rows from the first cell's.
            ref = f' r="{_col(c)}{r}"' if with_r or i == 0 or rng.random() < 0.3 else ""
            cells.append(_hand_cell(rng, ref, x, strings, len(xfs), first=i == 0))
        attrs = f' r="{r}"' if with_r or i == 0 or rng.random() < 0.5 else ""
        if rng.random() < 0.05 and i:
            rows.append(f'<{x}row r="{r}" ht="20" customHeight="1"/>')
        else:
            rows.append(f'<{x}row{attrs} spans="1:9">{sep}{sep.join(cells)}{sep}</{x}row>')
        if rng.random() < 0.05:
            rows.append("<!-- a comment -->")
        r += 1 if rng.random() < 0.85 else rng.randint(2, 3)
    ns = f'xmlns{":x" if x else ""}="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    sheet = (
        f'{_SHEET_HEAD}<{x}worksheet {ns}><{x}dimension ref="A1"/><{x}sheetData>{sep}'
        f"{sep.join(rows)}{sep}</{x}sheetData></{x}worksheet>"
    )
    sst = "".join(f"<{x}si>{_text_xml(rng, s, x)}</{x}si>" if rng.random() < 0.9 else f"<{x}si/>" for s in strings)
    return _package(sheet, sst, numfmts, xfs, rng.random() < 0.2, x), ""


def _col(c: int) -> str:
    name = ""
    while c:
        c, rest = divmod(c - 1, 26)
        name = chr(65 + rest) + name
    return name


def _hand_cell(rng: random.Random, ref: str, x: str, strings: list[str], styles: int, first: bool) -> str:
    s = f' s="{rng.randint(0, styles + 1)}"' if rng.random() < 0.4 else ""
    f = f"<{x}f>A1+1</{x}f>" if rng.random() < 0.1 else ""
    kind = rng.random()
    if kind < 0.1 and not first:
        return rng.choice([f"<{x}c{ref}{s}/>", f"<{x}c{ref}{s}></{x}c>", f"<{x}c{ref}><{x}v></{x}v></{x}c>"])
    if kind < 0.35:
        strings.append(rng.choice(WORDS))
        return f'<{x}c{ref}{s} t="s">{f}<{x}v>{len(strings) - 1}</{x}v></{x}c>'
    if kind < 0.55:
        value = rng.choice([repr(float(n)) for n in NUMBERS] + ["1E+20", "-0", ".5", "7", "45123.25"])
        return f"<{x}c{ref}{s}>{f}<{x}v>{value}</{x}v></{x}c>"
    if kind < 0.6:
        return f'<{x}c{ref}{s} t="n"><{x}v>{rng.choice(["3.5", "1e3"])}</{x}v></{x}c>'
    if kind < 0.7:
        return f'<{x}c{ref} t="inlineStr"><{x}is>{_text_xml(rng, rng.choice(WORDS), x)}</{x}is></{x}c>'
    if kind < 0.77:
        text = escape(rng.choice(WORDS)).replace("\r", "&#13;")
        return f'<{x}c{ref} t="str">{f}<{x}v>{text}</{x}v></{x}c>'
    if kind < 0.82:
        return f'<{x}c{ref} t="b"><{x}v>{rng.choice(["0", "1"])}</{x}v></{x}c>'
    if kind < 0.86:
        return f'<{x}c{ref} t="e"><{x}v>{rng.choice(["#N/A", "#DIV/0!", "#REF!", "#VALUE!"])}</{x}v></{x}c>'
    if kind < 0.9:
        return f'<{x}c{ref} t="d"><{x}v>{rng.choice(["2024-02-29T10:00:00", "2024-02-29"])}</{x}v></{x}c>'
    if kind < 0.95:
        return f"<{x}c{ref}{s}><{x}v>{rng.choice(['abc', '12abc', ' 5'])}</{x}v></{x}c>"
    return f'<{x}c{ref} t="inlineStr"><{x}v>ignored</{x}v><{x}is><{x}t>inline</{x}t></{x}is></{x}c>'


def _package(sheet: str, sst: str, numfmts: list[tuple[int, str]], xfs: list[int], epoch_1904: bool, x: str) -> bytes:
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="xml" ContentType="application/xml"/></Types>',
        )
        z.writestr(
            "_rels/.rels",
            '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>',
        )
        z.writestr(
            "xl/_rels/workbook.xml.rels",
            '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>',
        )
        pr = '<workbookPr date1904="1"/>' if epoch_1904 else "<workbookPr/>"
        z.writestr(
            "xl/workbook.xml",
            f'<?xml version="1.0"?><workbook xmlns="{main}" xmlns:r="{rel}">{pr}'
            '<sheets><sheet name="Data" sheetId="1" r:id="rId1"/></sheets></workbook>',
        )
        codes = "".join(f'<numFmt numFmtId="{i}" formatCode="{escape(c, {chr(34): "&quot;"})}"/>' for i, c in numfmts)
        cells = "".join(f'<xf numFmtId="{i}" fontId="0"/>' for i in xfs)
        z.writestr(
            "xl/styles.xml",
            f'<?xml version="1.0"?><styleSheet xmlns="{main}"><numFmts>{codes}</numFmts>'
            f"<cellXfs>{cells}</cellXfs></styleSheet>",
        )
        ns = f'xmlns{":x" if x else ""}="{main}"'
        z.writestr("xl/sharedStrings.xml", f'<?xml version="1.0"?><{x}sst {ns}>{sst}</{x}sst>')
        z.writestr("xl/worksheets/sheet1.xml", sheet)
    return out.getvalue()


def main() -> None:
    folder, count = Path(sys.argv[1]), int(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    for seed in range(count):
        (folder / f"xlsxwriter_{seed}.xlsx").write_bytes(by_xlsxwriter(seed)[0])
        (folder / f"by_hand_{seed}.xlsx").write_bytes(by_hand(seed)[0])


if __name__ == "__main__":
    main()
