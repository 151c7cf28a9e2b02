"""Garbled text: mojibake and lost characters in a file's headers and values, said before they become leads.

A garbled header refuses the file (its column would be mapped wrong, or not at all); garbled values are imported as
written, with a warning naming the column, the first lines and the count.
"""

import codecs
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import ftfy
import polars as pl

from import_pipeline.formats import RawChunk, line_list

# A Windows-1252 or Latin-1 reading of a UTF-8 continuation byte (0x80-0xBF).
_CONTINUATION = "\u0080-\u00bf€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ"
# What garbled text holds, for polars to look for in every column at once: the replacement character, C1 controls,
# and UTF-8's 2-, 3- and 4-byte sequences read a byte a character (é as Ã©, the curly apostrophe as â€™). Only the values holding one
# of these are judged one by one (`garbled`); Portuguese `São` or `JOÃO` holds none.
HINT = (
    f"[\ufffd\u0080-\u009f]|[\u00c2-\u00df][{_CONTINUATION}]"
    f"|[\u00e0-\u00ef][{_CONTINUATION}]{{2}}|[\u00f0-\u00f4][{_CONTINUATION}]{{3}}"
)
_HINT = re.compile(HINT)
_C1_CONTROLS = re.compile("[\u0080-\u009f]")

# The encodings a garbled text is read again in, to name the one that reads it right.
REREAD_IN = ("utf-8", "cp1252")
ENCODING_NAMES = {"utf-8": "UTF-8", "cp1252": "Windows-1252", "iso8859-1": "Latin-1"}
EXAMPLE_LINES = 5


@dataclass(frozen=True)
class Garble:
    """How a text is garbled: `mojibake` (what it probably says is known), `lost` (U+FFFD) or `controls`."""

    kind: str
    probably: str | None = None
    encoding: str | None = None  # the `encoding:` that reads it right, when one does
    how: str = ""  # in the user's terms: "UTF-8 text read as Windows-1252"


def _codec(encoding: str | None) -> str | None:
    """The codec's canonical name, or None for no single encoding (a workbook, a file of mixed encodings)."""
    try:
        name = codecs.lookup(encoding or "").name
    except LookupError:
        return None
    return "utf-8" if name == "utf-8-sig" else name


def reread(text: str, encoding: str | None, other: str) -> str | None:
    """`text`, read from a file as `encoding`, as reading that file as `other` gives it; None if it cannot."""
    codec = _codec(encoding)
    if codec is None or codec == _codec(other):
        return None
    try:
        return text.encode(codec).decode(other)
    except UnicodeError:
        return None


def _how(explanation: Sequence[tuple[str, str]]) -> str:
    """ftfy's repair plan in the user's terms."""
    encoded = [_name(p.removeprefix("sloppy-")) for step, p in explanation if step == "encode"]
    decoded = [_name(p) for step, p in explanation if step == "decode"]
    if encoded in (["Latin-1"], ["Windows-1252"]) and decoded == ["UTF-8"]:
        return "UTF-8 text read as Windows-1252 or Latin-1"  # the two read UTF-8's bytes alike
    if len(encoded) == len(decoded) == 1:
        return f"{decoded[0]} text read as {encoded[0]}"
    return "text read in the wrong encoding, maybe more than once"


def _name(encoding: str | None) -> str:
    return ENCODING_NAMES.get(_codec(encoding) or "", encoding or "")


def garbled(text: str, encoding: str | None) -> Garble | None:
    """How `text`, read as `encoding`, is garbled; None when it is not."""
    if not _HINT.search(text):
        return None
    if "\ufffd" in text:
        return Garble("lost")
    fixed = ftfy.fix_encoding_and_explain(text)
    if fixed.text != text:
        how = _how(fixed.explanation or [])
        right = next((e for e in REREAD_IN if reread(text, encoding, e) == fixed.text), None)
        return Garble("mojibake", fixed.text, right, how)
    if _C1_CONTROLS.search(text):
        return Garble("controls")
    return None


def _remedy(garble: Garble, encoding: str | None) -> str:
    if garble.encoding:
        return (
            f"the file is {_name(garble.encoding)}, not {_name(encoding)}: "
            f"set `encoding: {garble.encoding}` in the parse step's run config (ops: leads: ops: parse: config)"
        )
    if garble.kind == "mojibake":
        return f"it was garbled before the file was written ({garble.how}), so no `encoding:` reads it right"
    if garble.kind == "lost":
        return "U+FFFD (�) stands where characters were lost before the file was written"
    return "control characters U+0080-U+009F are in no text: the file's encoding is not the one it was read as"


def header_problem(headers: list[str], encoding: str | None, maps: Callable[[str], bool]) -> str | None:
    """Why the headers are garbled (the first garbled one, what it probably is, what to do), or None.

    A header is garbled when it holds mojibake or lost characters, or when it maps to no lead field but does once
    read in another encoding (`Prťnom`, a Windows-1252 `Prénom` read as mac_latin2).
    """
    found = []
    for column, header in enumerate(headers, 1):
        garble = garbled(header, encoding)
        if garble is None and not maps(header):
            for other in REREAD_IN:
                text = reread(header, encoding, other)
                if text is not None and text != header and maps(text):
                    garble = Garble("mojibake", text, other)
                    break
        if garble is not None:
            found.append((column, header, garble))
    if not found:
        return None
    column, header, garble = found[0]
    probably = f", probably {garble.probably!r}" if garble.probably else ""
    more = f" ({len(found) - 1} more garbled: {[h for _, h, _ in found[1:]]})" if len(found) > 1 else ""
    return f"garbled header {header!r} in column {column}{probably}{more}: {_remedy(garble, encoding)}"


@dataclass
class _Column:
    count: int = 0
    lines: list[int] = field(default_factory=list)
    example: tuple[str, Garble] | None = None


class GarbledValues:
    """Garbled values found chunk by chunk: per column and kind, how many, the first lines, an example."""

    def __init__(self, headers: list[str], encoding: str | None):
        self._headers, self._encoding = headers, encoding
        self._found: dict[tuple[int, str], _Column] = {}

    def check(self, chunk: RawChunk) -> None:
        """Look for garbled values in `chunk` (cells `c0`, `c1`... as the file's columns)."""
        # Only values beyond ASCII can be garbled, and telling them by length is 6 times faster than any regex
        # (0.05 s for 7.5M values; 0.3 s to look for HINT in all of them, a third of reading them).
        cells = chunk.cells
        wide = cells.select((pl.all().str.len_bytes() != pl.all().str.len_chars()).fill_null(False))
        for name, any_wide in wide.select(pl.all().any()).row(0, named=True).items():
            if not any_wide:
                continue
            values, lines = cells[name].filter(wide[name]), chunk.source_rows.filter(wide[name])
            hinted = values.str.contains(HINT)
            for value, line in zip(values.filter(hinted), lines.filter(hinted), strict=True):
                garble = garbled(value, self._encoding)
                if garble is None:
                    continue
                found = self._found.setdefault((int(name[1:]), garble.kind), _Column())
                found.count += 1
                if len(found.lines) < EXAMPLE_LINES:
                    found.lines.append(line)
                if found.example is None:
                    found.example = (value, garble)

    def warnings(self) -> list[str]:
        """One warning per column and kind of garbling found, in column order."""
        said = []
        for (column, _kind), found in sorted(self._found.items()):
            assert found.example is not None
            value, garble = found.example
            values = "1 value" if found.count == 1 else f"{found.count:,} values"
            probably = f", probably {garble.probably!r}" if garble.probably else ""
            said.append(
                f"column {self._headers[column]!r}: {values} garbled, on {line_list(found.lines, found.count)} "
                f"(e.g. {value!r}{probably}), imported as written; {_remedy(garble, self._encoding)}"
            )
        return said
