"""XLSX sheets read a block of rows at a time, each cell as the text calamine (the engine behind polars.read_excel
and fastexcel) gives it: numbers as `{:.9}` trimmed, dates as `YYYY-MM-DD HH:MM:SS[.fff]`, booleans as
true/false, formulas as their cached values, error cells empty but used.

A block's rows are parsed by polars when every row and cell has one of the shapes Excel and the common writers
produce (checked, not assumed: every `<` of the block is accounted for); any other block is read by a port of
calamine's event loop in Python, 10 times slower (measured on 20,000 rows of
15 columns: 4.4 s of CPU against 0.47 s). Both give the same frame of cells, converted to text
by the same polars expressions.
"""

import re
import xml.etree.ElementTree as ET
import zipfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, TypeVar

import polars as pl

from import_pipeline.formats import FileRejected, MiB

# Decompressed sheet XML parsed at a time, about 9,000 rows of 15 lead columns. Memory follows it (measured on the
# 1,048,576-row sheet, reader alone: 4 MiB 406 MB peak and 35 s, 8 MiB 591 MB and 23 s, 16 MiB 730 MB and 33 s).
BLOCK_BYTES = 8 * MiB

# Runs parsed at once, besides the one being inflated.
PARSERS = 2

T = TypeVar("T")

# Excel's limits; a cell beyond them would make the dense table of its sheet absurdly large.
MAX_ROWS, MAX_COLUMNS = 1_048_576, 16_384

# What a cell holds, before its text is made.
EMPTY, NUMBER, NUMBER_STRICT, SHARED, BOOLEAN, ERROR, TEXT, INLINE_V, BAD_TYPE = range(9)
_TYPES = {None: NUMBER, "n": NUMBER_STRICT, "s": SHARED, "b": BOOLEAN, "e": ERROR, "str": TEXT, "d": TEXT}
_TYPES |= {"inlineStr": INLINE_V, "is": INLINE_V}
# How a number is shown: calamine's CellFormat.
OTHER, DATETIME, TIMEDELTA = range(3)

_CELL_SCHEMA = pl.Schema({"row": pl.Int64, "col": pl.Int64, "kind": pl.UInt8, "fmt": pl.UInt8, "text": pl.String})

_ENTITIES = {"&lt;": "<", "&gt;": ">", "&amp;": "&", "&quot;": '"', "&apos;": "'"}
_EXCEL_EPOCH_MS = 25_569 * 86_400_000  # 1899-12-30 to 1970-01-01
# chrono's NaiveDateTime range (years -262144 to 262143), in milliseconds from 1899-12-30.
_DATETIME_MS = (-8_334_601_228_800_000 + _EXCEL_EPOCH_MS, 8_210_266_876_799_999 + _EXCEL_EPOCH_MS)


@dataclass
class Workbook:
    """What calamine reads of a workbook before any sheet: sheet names and members, number formats, epoch."""

    archive: zipfile.ZipFile
    sheets: dict[str, str] = field(default_factory=dict)  # name -> zip member
    formats: list[int] = field(default_factory=list)  # cellXfs index -> OTHER, DATETIME or TIMEDELTA
    is_1904: bool = False
    xl_path: str = "xl/"
    members: dict[str, str] = field(default_factory=dict)  # lower-cased, '/'-separated name -> zip name

    def member(self, name: str) -> str | None:
        """The zip member a package path names, found as calamine finds it (case and separators ignored)."""
        found = self.members.get(name.lower())
        return found if found is not None else (name if name in self.archive.namelist() else None)

    def xml(self, name: str) -> ET.Element | None:
        member = self.member(name)
        if member is None:
            return None
        try:
            return ET.fromstring(self.archive.read(member))
        except ET.ParseError as e:
            raise FileRejected(f"the workbook's {name} is not well-formed XML: {e}") from e


def _local(name: str) -> str:
    return name.rpartition("}")[2].rpartition(":")[2]


def _elements(root: ET.Element | None, local: str) -> Iterator[ET.Element]:
    return (e for e in (root.iter() if root is not None else ()) if _local(e.tag) == local)


def _attr(element: ET.Element, local: str) -> str | None:
    """An attribute by its local name (`id` finds `r:id`), as calamine matches the sheet's relationship id."""
    if local in element.attrib:
        return element.attrib[local]
    return next((v for k, v in element.attrib.items() if _local(k) == local), None)


def custom_format(code: str) -> int:
    """calamine's detect_custom_number_format: whether a number format code shows a date or a duration."""
    escaped = is_quote = ap = hms = False
    brackets, prev = 0, " "
    for s in code:
        if escaped:
            escaped = False
        elif s in "_\\*":
            escaped = True  # the next character is a literal
        elif is_quote:
            if s == '"':
                is_quote = False
        elif s == '"':
            is_quote = True
        elif s == ";":
            return OTHER  # only the first section counts
        elif s == "[":
            brackets += 1
        elif s == "]" and brackets == 1 and hms:
            return TIMEDELTA
        elif s == "]":
            brackets = max(brackets - 1, 0)
        elif s in "aA" and not ap and brackets == 0:
            ap = True
        elif (s in "pm/PM" and ap and brackets == 0) or (s in "dmhysDMHYS" and not ap and brackets == 0):
            return DATETIME
        elif not (hms and s.lower() == prev.lower()):
            hms = prev == "[" and s in "mhsMHS"
        prev = s
    return OTHER


_BUILTIN_FORMATS = dict.fromkeys(["14", "15", "16", "17", "18", "19", "20", "21", "22", "45", "47"], DATETIME)
_BUILTIN_FORMATS["46"] = TIMEDELTA


def open_workbook(archive: zipfile.ZipFile) -> Workbook:
    """The workbook's sheets, number formats and date epoch, read as calamine reads them."""
    book = Workbook(archive, members={n.replace("\\", "/").lower(): n for n in archive.namelist()})
    package = book.xml("_rels/.rels")
    if package is None:
        raise FileRejected("not a readable workbook: it has no _rels/.rels")
    targets = [
        r.get("Target") or ""
        for r in _elements(package, "Relationship")
        if (r.get("Type") or "").endswith("/relationships/officeDocument")
    ]
    if not targets:
        raise FileRejected("not a readable workbook: _rels/.rels names no workbook")
    folder = targets[-1][: targets[-1].rfind("/") + 1]
    book.xl_path = folder.removeprefix("/")
    relationships = {
        r.get("Id"): (r.get("Target") or "", r.get("Type") or "")
        for r in _elements(book.xml(f"{book.xl_path}_rels/workbook.xml.rels"), "Relationship")
        if r.get("Id") is not None
    }
    styles = book.xml(f"{book.xl_path}styles.xml")
    numbers = {
        n.get("numFmtId"): n.get("formatCode") or ""
        for section in _elements(styles, "numFmts")
        for n in _elements(section, "numFmt")
        if n.get("numFmtId") is not None and n.get("formatCode") is not None
    }
    for section in _elements(styles, "cellXfs"):
        for xf in _elements(section, "xf"):
            id_ = xf.get("numFmtId")
            code = numbers.get(id_) if id_ is not None else None
            book.formats.append(
                OTHER if id_ is None else custom_format(code) if code is not None else _BUILTIN_FORMATS.get(id_, OTHER)
            )
    workbook = book.xml(f"{book.xl_path}workbook.xml")
    for pr in _elements(workbook, "workbookPr"):
        book.is_1904 = pr.get("date1904") in ("1", "true")
    for sheet in _elements(workbook, "sheet"):
        name = sheet.get("name") or ""
        target, kind = relationships.get(_attr(sheet, "id") or "", (None, ""))
        if target is None:
            raise FileRejected(f"not a readable workbook: the sheet {name!r} has no relationship")
        if kind.rpartition("/")[2] not in ("worksheet", "chartsheet", "dialogsheet"):
            raise FileRejected(f"not a readable workbook: the sheet {name!r} is a {kind.rpartition('/')[2]!r}")
        book.sheets.setdefault(name, target.removeprefix("/") if target.startswith("/") else f"{book.xl_path}{target}")
    return book


class SheetError(Exception):
    """A sheet calamine would refuse to read: why, and at which 1-based row when the cell is known."""

    def __init__(self, why: str, row: int | None = None) -> None:
        super().__init__(why)
        self.row = row


def _unescape(name: str) -> str:
    """An entity or character reference (`amp`, `#233`, `#xE9`) as its character."""
    if f"&{name};" in _ENTITIES:
        return _ENTITIES[f"&{name};"]
    try:
        code = int(name[2:], 16) if name[:2] == "#x" else int(name[1:]) if name[:1] == "#" else 0
    except ValueError:
        code = 0
    if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF:
        return chr(code)
    raise SheetError(f"unknown entity &{name};")


def _xml10(text: str) -> str:
    """Text as an XML 1.0 processor hands it over: CRLF and lone CR become LF (quick-xml's xml10_content)."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


_EXCEL_ESCAPE = re.compile(r"_x00([0-9A-Fa-f]{2}|\+[0-9A-Fa-f])_")


def unescape_excel(text: str) -> str:
    """Excel's `_x00HH_` escapes (`_x000D_` for CR) undone, as calamine's unescape_xml does."""
    return _EXCEL_ESCAPE.sub(lambda m: chr(int(m[1], 16)), text) if "_x00" in text else text


_ATTRIBUTE = re.compile(r"""\s*([^=]+?)\s*=\s*(?:"([^"]*)"|'([^']*)')""")


def _attributes(raw: str) -> dict[str, str]:
    """A start tag's attributes, values as written (calamine reads `r`, `s` and `t` undecoded)."""
    found, at = {}, 0
    raw = raw.rstrip()
    while at < len(raw):
        match = _ATTRIBUTE.match(raw, at)
        if match is None:
            raise SheetError(f"malformed attributes {raw.strip()!r}")
        found[match[1]] = match[2] if match[2] is not None else match[3]
        at = match.end()
    return found


def _position(ref: str, *, column: bool) -> tuple[int, int | None]:
    """A cell or row reference (`B12`, `12`) as 0-based (row, column), as calamine's get_row_and_optional_column."""
    col = row = 0
    i = 0
    while i < len(ref) and ref[i].isascii() and ref[i].isalpha():
        col = col * 26 + ord(ref[i].upper()) - ord("A") + 1
        i += 1
    digits = ref[i:]
    if not digits.isascii() or not digits.isdigit():
        raise SheetError(f"malformed cell reference {ref!r}")
    row = int(digits)
    if row == 0 or (column and col == 0):
        raise SheetError(f"malformed cell reference {ref!r}")
    return row - 1, col - 1 if col else None


def _style(formats: list[int], s: str | None) -> int:
    """The number format of a cell's `s` attribute: none, or an index out of range, shows plain numbers."""
    if s is None:
        return OTHER
    index = int(s) if s.isascii() and s.isdigit() else 0
    return formats[index] if index < len(formats) else OTHER


_TOKEN = re.compile(
    r"<!--.*?-->|<!\[CDATA\[(?P<cdata>.*?)\]\]>|<\?.*?\?>|<![^>]*>"
    r"""|<(?P<end>/)?(?P<name>[^\s/>]+)(?P<attrs>(?:[^>"']|"[^"]*"|'[^']*')*?)(?P<empty>/)?>"""
    r"|(?P<text>[^<]+)",
    re.S,
)
_REFERENCE = re.compile(r"&([^;&]*);")

Event = tuple[str, str, str]  # ("start" | "end" | "text" | "ref" | "cdata" | "other", name or text, attributes)


def _events(text: str) -> Iterator[Event]:
    """quick-xml's events: an empty element is a start and an end, text is cut at each entity reference."""
    at = 0
    for token in _TOKEN.finditer(text):
        if token.start() != at:
            raise SheetError(f"malformed XML at {text[at : at + 40]!r}")
        at = token.end()
        if (name := token["name"]) is not None:
            if token["end"]:
                yield "end", name, ""
            else:
                yield "start", name, token["attrs"]
                if token["empty"]:
                    yield "end", name, ""
        elif (chunk := token["text"]) is not None:
            start = 0
            for ref in _REFERENCE.finditer(chunk):
                if ref.start() > start:
                    yield "text", chunk[start : ref.start()], ""
                yield "ref", ref[1], ""
                start = ref.end()
            if "&" in chunk[start:]:
                raise SheetError(f"a bare & in {chunk.strip()[:40]!r}")
            if start < len(chunk):
                yield "text", chunk[start:], ""
        elif token["cdata"] is not None:
            yield "cdata", token["cdata"], ""
        else:
            yield "other", "", ""
    if at != len(text):
        raise SheetError(f"malformed XML at {text[at : at + 40]!r}")


class _Stream:
    """Events one at a time; the end of the block is calamine's Eof."""

    def __init__(self, text: str) -> None:
        self._events = _events(text)

    def next(self, inside: str) -> Event:
        event = next(self._events, None)
        if event is None:
            raise SheetError(f"the XML ends inside <{inside}>")
        return event

    def skip_to_end(self, name: str) -> None:
        """quick-xml's read_to_end: past the end of the element `name`, nested ones of the same name included."""
        depth = 0
        while True:
            kind, tag, _ = self.next(name)
            if kind == "start" and tag == name:
                depth += 1
            elif kind == "end" and tag == name:
                if depth == 0:
                    return
                depth -= 1


def read_string(stream: _Stream, closing: str) -> str:
    """calamine's read_string: the `<t>` texts of an `<si>` or `<is>` (rich-text runs joined, phonetic ones out)."""
    # Each `<t>` is trimmed of ASCII whitespace unless `xml:space="preserve"`, then Excel's `_x00HH_` undone.
    rich: str | None = None
    phonetic = False
    while True:
        kind, name, attrs = stream.next(closing)
        local = name.rpartition(":")[2]
        if kind == "start" and local == "r" and rich is None:
            rich = ""
        elif kind == "start" and local == "rPh":
            phonetic = True
        elif kind == "end" and name == closing:
            return rich if rich is not None else ""
        elif kind == "end" and local == "rPh":
            phonetic = False
        elif kind == "start" and local == "t" and not phonetic:
            preserve = _attributes(attrs).get("xml:space") == "preserve"
            value = []
            while (event := stream.next(name))[:2] != ("end", name):
                if event[0] in ("text", "cdata"):
                    value.append(_xml10(event[1]))
                elif event[0] == "ref":
                    value.append(_unescape(event[1]))
            text = "".join(value)
            text = unescape_excel(text if preserve else text.strip(" \t\r\n"))
            rich = text if rich is None else rich + text


class ExactCells:
    """calamine's XlsxCellReader ported event for event: the cells of any sheet XML, slowly."""

    def __init__(self, formats: list[int]) -> None:
        self.formats = formats
        self.row_index = 0  # where a row or a cell without `r` goes
        self.col_index = 0

    def cells(self, text: str) -> pl.DataFrame:
        """The cells of a run of whole rows, empty ones left out."""
        found: list[tuple[int, int, int, int, str]] = []
        stream = _Stream(text)
        for kind, name, attrs in stream._events:
            local = name.rpartition(":")[2]
            if kind == "start" and local == "row":
                ref = _attributes(attrs).get("r")
                if ref is not None:
                    self.row_index = _position(ref, column=False)[0]
            elif kind == "end" and local == "row":
                self.row_index += 1
                self.col_index = 0
            elif kind == "start" and local == "c":
                found.extend(self._cell(stream, attrs))
        return pl.DataFrame(found, schema=_CELL_SCHEMA, orient="row")

    def _cell(self, stream: _Stream, attrs: str) -> list[tuple[int, int, int, int, str]]:
        values = _attributes(attrs)
        if (ref := values.get("r")) is not None:
            row, col = _position(ref, column=True)
            assert col is not None
            self.col_index = col
        else:
            row, col = self.row_index, self.col_index
        t, fmt = values.get("t"), _style(self.formats, values.get("s"))
        value: tuple[int, str] = (EMPTY, "")
        while True:
            kind, name, _ = stream.next("c")
            if kind == "start":
                value = self._value(stream, name, t)
            elif kind == "end" and name.rpartition(":")[2] == "c":
                break
        self.col_index += 1
        return [] if value[0] == EMPTY else [(row, col, value[0], fmt, value[1])]

    def _value(self, stream: _Stream, name: str, t: str | None) -> tuple[int, str]:
        """calamine's read_value: an `<is>` is text whatever the type; a `<v>` by the cell's type; `<f>` is skipped."""
        local = name.rpartition(":")[2]
        if local == "is":
            return TEXT, read_string(stream, name)
        if local == "f":
            stream.skip_to_end(name)
            return EMPTY, ""
        if local != "v":
            raise SheetError(f"unexpected <{name}> in a cell")
        kind = _TYPES.get(t, BAD_TYPE)
        if kind == INLINE_V:
            stream.skip_to_end(name)
            return EMPTY, ""
        if kind in (NUMBER, NUMBER_STRICT, SHARED, BOOLEAN, ERROR):
            # calamine parses these from the first text event, as written: no entity, no line-end normalization.
            event = stream.next(name)
            if event[:2] == ("end", name):
                return EMPTY, ""
            stream.skip_to_end(name)
            return (kind, event[1]) if event[0] == "text" else (EMPTY, "")
        value = []
        while (event := stream.next(name))[:2] != ("end", name):
            if event[0] == "text":
                value.append(_xml10(event[1]))
            elif event[0] == "ref":
                value.append(_unescape(event[1]))
        if kind == BAD_TYPE:
            raise SheetError(f"unknown cell type t={t!r}")
        return TEXT, "".join(value)


_DIGITS, _LETTERS = "0123456789", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _column(letters: str) -> int | None:
    if not letters.isascii() or not letters.isalpha():
        return None
    col = 0
    for ch in letters.upper():
        col = col * 26 + ord(ch) - ord("A") + 1
    return col - 1


def _tail(tail: str, formats: list[int]) -> tuple[int, int, bool] | None:
    """A cell tag's attributes after `r`, as (kind of its `<v>`, number format, whether the tag is empty)."""
    closed = tail.endswith("/")
    try:
        values = _attributes(tail.removesuffix("/"))
    except SheetError:
        return None
    if "r" in values or any(c in tail for c in "<>&"):
        return None
    return _TYPES.get(values.get("t"), BAD_TYPE), _style(formats, values.get("s")), closed


def _map_some(frame: pl.DataFrame, mask: pl.Expr, fn: Callable[[str], str]) -> pl.DataFrame:
    """`text` through a Python function where `mask` holds: for the rare cells polars has no expression for."""
    at = frame.select(pl.arg_where(mask)).to_series()
    if at.len() == 0:
        return frame
    text = frame["text"].clone()
    text.scatter(at, [fn(v) for v in text.gather(at).to_list()])
    return frame.with_columns(text=text)


def _decode(text: pl.Expr, amp: bool, cr: bool) -> pl.Expr:
    """Text content as an XML parser hands it over: line ends normalized, then entities decoded."""
    if cr:
        text = text.str.replace_many(["\r\n", "\r"], ["\n", "\n"], leftmost=True)
    if amp:
        text = text.str.replace_many(list(_ENTITIES), list(_ENTITIES.values()), leftmost=True)
    return text


def _utf8(data: bytes) -> pl.Series | None:
    try:
        return pl.Series("xml", [data], pl.Binary).cast(pl.String)
    except pl.exceptions.InvalidOperationError:
        return None  # the exact reader says where


def fast_cells(data: bytes, p: str, formats: list[int]) -> tuple[pl.DataFrame, int] | None:
    """The cells of a run of whole rows by polars, and the row index after them; None for shapes it does not know."""
    # Known: row tags with `r`, cells `<c r="..." ...>` holding nothing, a `<v>` or an `<is><t>`, after a formula.
    amps = data.count(b"&") if b"&" in data else 0
    if amps and amps != sum(data.count(e.encode()) for e in _ENTITIES):
        return None  # character references, or a bare &: the exact reader
    cr, escapes = b"\r" in data, b"_x00" in data
    text = _utf8(data)
    if text is None:
        return None
    pieces = text.str.split(f"</{p}row>").explode()
    parts = pieces.str.split(f'<{p}c r="').alias("parts").to_frame()
    heads = parts.select(pl.col("parts").list.first()).to_series()
    # Only row tags with `r` (exact readers need the row number after the run) stand before a row's first cell.
    if not heads.str.contains(rf'^(?:<{p}row r="[^<>]*>)*$').fill_null(False).all():
        return None
    last = heads.filter(heads != "").tail(1).to_list()
    if not last:
        return None
    try:
        row_after = _position(last[0].rpartition(f'<{p}row r="')[2].partition('"')[0], column=False)[0] + 1
    except SheetError:
        return None
    records = parts.select(pl.col("parts").list.slice(1)).explode("parts").drop_nulls().to_series()
    # Positions instead of split strings: only the short reference and tail and the value are ever copied
    # (measured: 35 ms a 16 MiB run against 52 ms for splitting each cell at `"` and `>`).
    r = pl.col("r")
    cells = (
        records.alias("r")
        .to_frame()
        .with_columns(q=r.str.find('"', literal=True).cast(pl.Int64), g=r.str.find(">", literal=True).cast(pl.Int64))
    )
    q, g = pl.col("q"), pl.col("g")
    formula, formula_tags = pl.lit(False), pl.lit(0)
    if cells.select((r.str.slice(g + 1, len(p) + 2) == f"<{p}f").any()).item():
        content = r.str.slice(g + 1)
        rest = content.str.extract(rf"(?s)^<{p}f(?:\s[^<>]*?)?(?:/>|>[^<]*</{p}f>)(.*)$", 1)
        cells = cells.with_columns(
            formula=content.str.starts_with(f"<{p}f"),
            formula_tags=content.str.count_matches("<", literal=True) - rest.str.count_matches("<", literal=True),
            r=pl.when(content.str.starts_with(f"<{p}f")).then(pl.concat_str(r.str.head(g + 1), rest)).otherwise(r),
        )
        formula, formula_tags = pl.col("formula"), pl.when(pl.col("formula")).then(pl.col("formula_tags"))
    cells = cells.with_columns(ref=r.str.head(q), tail=r.str.slice(q + 1, g - q - 1)).with_columns(
        letters=pl.col("ref").str.strip_chars_end(_DIGITS)
    )
    letters = {v: _column(v) for v in cells["letters"].unique().to_list() if v is not None}
    tails = {v: _tail(v, formats) for v in cells["tail"].unique().to_list() if v is not None}
    if None in letters.values() or None in tails.values():
        return None
    # One lookup per cell: the tail's number, then its kind, format and emptiness from small tables.
    known = [t for t in tails.values() if t is not None]
    tail_ids = {k: i for i, k in enumerate(k for k, t in tails.items() if t is not None)}
    by_id = pl.DataFrame(
        {"vkind": [t[0] for t in known], "fmt": [t[1] for t in known], "closed": [t[2] for t in known]},
        schema={"vkind": pl.UInt8, "fmt": pl.UInt8, "closed": pl.Boolean},
    )
    v, v_end = f"<{p}v>", f"</{p}v></{p}c>"
    t, t_kept, t_end = f"<{p}is><{p}t>", f'<{p}is><{p}t xml:space="preserve">', f"</{p}t></{p}is></{p}c>"
    c_end = f"</{p}c>"
    at, n = g + 1, r.str.len_bytes()

    def shaped(prefix: str, suffix: str) -> pl.Expr:
        return (
            (r.str.slice(at, len(prefix)) == prefix) & r.str.ends_with(suffix) & (n >= at + len(prefix) + len(suffix))
        )

    shape = (
        pl.when(shaped(v, v_end))
        .then(pl.lit(1, pl.UInt8))
        .when(shaped(t, t_end))
        .then(pl.lit(2, pl.UInt8))
        .when(shaped(t_kept, t_end))
        .then(pl.lit(3, pl.UInt8))
        .when((n == at + len(c_end)) & r.str.ends_with(c_end))
        .then(pl.lit(4, pl.UInt8))
        .when(n == at)
        .then(pl.lit(5, pl.UInt8))
    )
    cells = cells.select(
        row=pl.col("ref").str.strip_chars_start(_LETTERS).cast(pl.Int64, strict=False) - 1,
        col=pl.col("letters").replace_strict(letters, default=None, return_dtype=pl.Int64),
        tail=pl.col("tail").replace_strict(tail_ids, default=None, return_dtype=pl.UInt32),
        formula=formula,
        formula_tags=formula_tags.fill_null(0),
        shape=shape,
        r=r,
        at=at,
    )
    shaped_as, tail = pl.col("shape"), pl.col("tail")
    cells = cells.with_columns(
        vkind=pl.lit(by_id["vkind"]).gather(tail),
        fmt=pl.lit(by_id["fmt"]).gather(tail),
        closed=pl.lit(by_id["closed"]).gather(tail),
    )
    checks = cells.select(
        ok=(
            (pl.col("row") >= 0)
            & pl.col("col").is_not_null()
            & shaped_as.is_not_null()
            & ((shaped_as == 5) == pl.col("closed"))
            & ~(pl.col("formula") & (shaped_as == 5))
        )
        .fill_null(False)
        .all(),
        tags=pl.col("formula_tags").sum()
        + shaped_as.replace_strict({1: 4, 2: 6, 3: 6, 4: 2, 5: 1}, default=0, return_dtype=pl.Int64).sum(),
    ).row(0)
    if not checks[0]:
        return None
    if heads.str.count_matches("<", literal=True).sum() + (pieces.len() - 1) + checks[1] != data.count(b"<"):
        return None  # some `<` is not where the shapes put it: markup inside a value, a comment, CDATA...
    before = pl.when(shaped_as == 1).then(len(v)).when(shaped_as == 2).then(len(t)).otherwise(len(t_kept))
    after = pl.when(shaped_as == 1).then(len(v_end)).otherwise(len(t_end))
    inner = pl.when(shaped_as <= 3).then(pl.col("r").str.slice(pl.col("at") + before).str.head(-after))
    vkind = pl.col("vkind")
    kind = (
        pl.when(shaped_as.is_in([2, 3]))
        .then(pl.lit(TEXT, pl.UInt8))
        .when((shaped_as == 1) & (vkind != INLINE_V))
        .then(vkind)
        .otherwise(pl.lit(EMPTY, pl.UInt8))
    )
    cells = cells.select("row", "col", "fmt", "shape", kind=kind, text=inner)
    kind_of, inner_of = pl.col("kind"), pl.col("text")
    raw = (shaped_as == 1) & kind_of.is_in([NUMBER, NUMBER_STRICT, SHARED, BOOLEAN, ERROR])
    if cells.select((shaped_as.eq(1) & (kind_of == BAD_TYPE)).any()).item():
        return None  # calamine refuses an unknown type: the exact reader says so
    if (amps or cr) and cells.select((raw & inner_of.str.contains("[&\r]")).any()).item():
        return None  # calamine reads these from the first text event, as written: the exact reader
    decoded = _decode(inner_of, amps > 0, cr)
    cells = cells.with_columns(
        kind=pl.when(raw & (inner_of == "")).then(pl.lit(EMPTY, pl.UInt8)).otherwise(kind_of),
        text=pl.when(raw)
        .then(inner_of)
        .when(shaped_as == 2)
        .then(decoded.str.strip_chars(" \t\r\n"))
        .otherwise(decoded),
    )
    if escapes:
        cells = _map_some(cells, shaped_as.is_in([2, 3]) & inner_of.str.contains("_x00", literal=True), unescape_excel)
    return cells.filter(pl.col("kind") != EMPTY).select(list(_CELL_SCHEMA)).cast(_CELL_SCHEMA), row_after


def _exact_strings(text: str, p: str) -> list[str]:
    """calamine's read_shared_strings over any XML: the text of each `<si>`, in order."""
    stream, found = _Stream(text), []
    for kind, name, _ in stream._events:
        if kind == "start" and name.rpartition(":")[2] == "si":
            found.append(read_string(stream, name))
    return found


def _strings(data: bytes, p: str) -> pl.Series:
    """The shared strings of a run of whole `<si>` elements: plain ones by polars, the rest by read_string."""
    text = _utf8(data)
    if text is None or data.count(f"<{p}si".encode()) != data.count(f"<{p}si>".encode()):
        return pl.Series("text", _exact_strings(_decoded(data), p), pl.String)
    amps = data.count(b"&")
    entities = amps == sum(data.count(e.encode()) for e in _ENTITIES)
    t, t_kept, t_end = f"<{p}t>", f'<{p}t xml:space="preserve">', f"</{p}t></{p}si>"
    entry = pl.col("entry")
    entries = text.str.split(f"<{p}si>").explode().slice(1).alias("entry").to_frame()
    plain = entry.str.ends_with(t_end) & (entry.str.count_matches("<", literal=True) == 3)
    if amps and not entities:
        plain &= ~entry.str.contains("&", literal=True)
    entries = entries.with_columns(
        shape=pl.when(plain & entry.str.starts_with(t)).then(1).when(plain & entry.str.starts_with(t_kept)).then(2)
    )
    shape = pl.col("shape")
    decoded = _decode(
        entry.str.strip_prefix(t).str.strip_prefix(t_kept).str.strip_suffix(t_end), amps > 0, b"\r" in data
    )
    entries = entries.with_columns(
        text=pl.when(shape == 1).then(decoded.str.strip_chars(" \t\r\n")).when(shape == 2).then(decoded)
    )
    entries = _map_some(entries, pl.col("text").str.contains("_x00", literal=True).fill_null(False), unescape_excel)
    return _map_some(
        entries.with_columns(text=pl.col("text").fill_null(pl.col("entry"))),
        shape.is_null(),
        lambda e: read_string(_Stream(e), f"{p}si"),
    )["text"]


def _decoded(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SheetError(f"not UTF-8 text at byte {e.start}") from e


def _runs(stream: IO[bytes], start: re.Pattern[bytes], end: str, unit: str) -> Iterator[tuple[bytes, str]]:
    """A member's XML from `start` to `</end>` in runs of whole `unit` elements, with its prefix (`x:`)."""
    # A run is about BLOCK_BYTES, or one element when it alone is larger.
    head = b""
    while (found := start.search(head)) is None:
        more = stream.read(BLOCK_BYTES)
        if not more:
            return
        head += more
    if found["empty"]:
        return
    p = found["prefix"].decode() + ":" if found["prefix"] else ""
    closing, last = f"</{p}{unit}>".encode(), f"</{p}{end}>".encode()
    pending, ended, searched = head[found.end() :], False, 0
    while pending or not ended:
        if not ended and len(pending) < BLOCK_BYTES:
            more = stream.read(BLOCK_BYTES)
            if not more and last not in pending:
                raise SheetError(f"the XML ends before </{p}{end}>")
            pending += more
        if not ended and (stop := pending.find(last, max(searched - len(last), 0))) >= 0:
            pending, ended = pending[:stop], True
        searched = len(pending)
        cut = pending.rfind(closing, 0, BLOCK_BYTES)
        if cut < 0:
            cut = pending.find(closing, BLOCK_BYTES - len(closing))
        if cut >= 0:
            cut += len(closing)
        elif ended:
            cut = len(pending)  # what follows the last row: empty rows, or cells outside any
        else:
            continue  # a row longer than a block: read on
        yield pending[:cut], p
        pending, searched = pending[cut:], max(searched - cut, 0)


_SST = re.compile(rb"<(?:(?P<prefix>[A-Za-z_][\w.-]*):)?sst(?:\s[^>]*?)?(?P<empty>/)?>")
_SHEET_DATA = re.compile(rb"<(?:(?P<prefix>[A-Za-z_][\w.-]*):)?sheetData(?:\s[^>]*?)?(?P<empty>/)?>")


def shared_strings(book: Workbook) -> pl.Series:
    """The workbook's shared-strings table as calamine reads it: the text of each `<si>`, in order."""
    member = book.member(f"{book.xl_path}sharedStrings.xml")
    parts = [pl.Series("text", [], pl.String)]
    if member is not None:
        with book.archive.open(member) as stream:
            try:
                parts += [_strings(run, p) for run, p in _runs(stream, _SST, "sst", "si")]
            except SheetError as e:
                raise FileRejected(f"the workbook's shared strings cannot be read: {e}") from e
    return pl.concat(parts)


def float_text(x: float) -> str:
    """A number as fastexcel writes it: Rust's `{:.9}`, trailing zeros and point trimmed."""
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    return f"{x:.9f}".rstrip("0").rstrip(".")


def _letters(col: int) -> str:
    name = ""
    col += 1
    while col:
        col, rest = divmod(col - 1, 26)
        name = chr(ord("A") + rest) + name
    return name


def cell_name(row: int, col: int) -> str:
    """`B12` for the 0-based (11, 1)."""
    return f"{_letters(col)}{row + 1}"


def set_where(frame: pl.DataFrame, mask: pl.Expr, name: str, value: pl.Expr) -> pl.DataFrame:
    """`name` made `value` where `mask` holds, `value` computed on those rows only."""
    # polars computes every branch of a when/then chain on every row (measured: 100,000 rows of shared strings,
    # numbers and dates converted in 0.65 s of CPU by one chain, 0.41 s this way).
    at = frame.select(pl.arg_where(mask)).to_series()
    if at.len() == 0:
        return frame
    if at.len() == frame.height:
        return frame.with_columns(value.alias(name))
    column = frame[name].clone()
    column.scatter(at, frame[at].select(value).to_series())
    return frame.with_columns(column)


def _datetime_text(x: pl.Expr, is_1904: bool) -> pl.Expr:
    """calamine's as_datetime of an Excel serial, shown as chrono shows it; none outside chrono's years."""
    days = x + 1462.0 if is_1904 else x
    days = pl.when(days >= 60).then(days).otherwise(days + 1)  # Excel's 1900-02-29
    ms = (days * 86_400_000.0).round(mode="half_away_from_zero")
    ms = pl.when(ms.is_nan()).then(0.0).otherwise(ms)  # Rust's `as i64` makes NaN 0
    low, high = _DATETIME_MS
    stamp = pl.from_epoch(ms.clip(low, high).cast(pl.Int64) - _EXCEL_EPOCH_MS, time_unit="ms")
    return pl.when((ms >= low) & (ms <= high)).then(stamp.dt.to_string("%Y-%m-%d %H:%M:%S%.f"))


def cell_text(cells: pl.DataFrame, strings: pl.Series, is_1904: bool) -> pl.DataFrame:
    """(row, col, value) of every used cell: its text as calamine and fastexcel give it; none for an error."""
    kind, text, fmt = pl.col("kind"), pl.col("text"), pl.col("fmt")
    number = kind.is_in([NUMBER, NUMBER_STRICT])
    cells = set_where(cells.with_columns(x=pl.lit(None, pl.Float64)), number, "x", text.cast(pl.Float64, strict=False))
    x = pl.col("x")
    bad = cells.filter((kind == NUMBER_STRICT) & x.is_null())
    if bad.height:
        row, col = bad["row"][0], bad["col"][0]
        raise SheetError(f"the number cell {cell_name(row, col)} holds {bad['text'][0]!r}", row + 1)
    index = text.cast(pl.UInt64, strict=False).fill_null(0)
    shared = cells.filter(kind == SHARED)
    if shared.height and (beyond := shared.filter(index >= strings.len())).height:
        row, col = beyond["row"][0], beyond["col"][0]
        raise SheetError(
            f"the cell {cell_name(row, col)} names shared string {beyond['text'][0]}, but the workbook has "
            f"{strings.len()}",
            row + 1,
        )
    plain = number & x.is_not_null() & (fmt == OTHER)
    integral = (x.abs() < 2.0**53) & (x == x.floor()) & (x != 0)
    others = plain & ~integral & (x != 0) & ~x.is_nan()
    shown = {v: float_text(v) for v in cells.filter(others)["x"].unique().to_list()}
    cells = set_where(cells, kind == SHARED, "text", pl.lit(strings).gather(index))
    cells = set_where(cells, plain & integral, "text", x.cast(pl.Int64).cast(pl.String))
    cells = set_where(cells, plain & (x == 0), "text", pl.when(1.0 / x > 0).then(pl.lit("0")).otherwise(pl.lit("-0")))
    cells = set_where(cells, plain & x.is_nan(), "text", pl.lit("NaN"))
    cells = set_where(cells, others, "text", x.replace_strict(shown, default=None, return_dtype=pl.String))
    cells = set_where(cells, number & x.is_not_null() & (fmt != OTHER), "text", _datetime_text(x, is_1904))
    cells = set_where(
        cells, kind == BOOLEAN, "text", pl.when(text != "0").then(pl.lit("true")).otherwise(pl.lit("false"))
    )
    cells = set_where(cells, kind == ERROR, "text", pl.lit(None, pl.String))
    return cells.select("row", "col", value="text")


def sheet_cells(
    book: Workbook, sheet: str, strings: pl.Series, finish: Callable[[pl.DataFrame], T], *, exact: bool = False
) -> Iterator[T]:
    """`finish` of each run's used cells (row, col, value; 0-based), in order; `exact`: the port reads every run."""
    path = book.sheets[sheet]
    member = book.member(path)
    if member is None:
        raise FileRejected(f"the workbook has no {path} for the sheet {sheet!r}")
    reader = ExactCells(book.formats)

    def fast(run: bytes, p: str) -> tuple[T, int] | None:
        found = fast_cells(run, p, book.formats)
        return None if found is None else (finish(cell_text(found[0], strings, book.is_1904)), found[1])

    # Runs are parsed PARSERS at a time while the next is inflated: polars and zlib release the GIL (measured on the
    # 1,048,576-row sheet with other work on the machine: 23 s with two, 29 s with one).
    with book.archive.open(member) as stream, ThreadPoolExecutor(PARSERS) as pool:
        parsing: deque[tuple[bytes, Future | None]] = deque()
        runs = _runs(stream, _SHEET_DATA, "sheetData", "row")
        try:
            while True:
                for run, p in runs:
                    parsing.append((run, None if exact else pool.submit(fast, run, p)))
                    if len(parsing) > PARSERS:
                        break
                if not parsing:
                    return
                run, future = parsing.popleft()
                done = future.result() if future is not None else None
                if done is None:
                    yield finish(cell_text(reader.cells(_decoded(run)), strings, book.is_1904))
                else:
                    yield done[0]
                    reader.row_index, reader.col_index = done[1], 0
        except SheetError as e:
            row = e.row if e.row is not None else reader.row_index + 1
            raise FileRejected(f"the sheet {sheet!r} cannot be read at row {row}: {e}") from e
        finally:
            for _, future in parsing:
                if future is not None:
                    future.cancel()
