"""Headers: the row that names the columns, found below any title banner, never in the data."""

import csv
import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from import_pipeline.mapping import maps_company

HEADER_SEARCH_ROWS = 30


@dataclass(frozen=True)
class HeaderPosition:
    """Where the header record starts: records (blank lines included) and physical lines above it."""

    records_above: int = 0
    lines_above: int = 0


def header_index(rows: Sequence[Sequence[str | None]]) -> int:
    """Which of a file's first rows is the header.

    Exports put blank lines, a report title or an export date above it, one filled cell each: the
    header is the first row naming the company column or filling two cells or more. A row of data is
    never skipped. Without such a row (a one-column file), the first non-blank row.
    """
    first = None
    for i, row in enumerate(rows):
        filled = sum(1 for cell in row if cell is not None and str(cell).strip())
        if filled and (maps_company(row) or filled > 1):
            return i
        if filled and first is None:
            first = i
    return first or 0


def find_header(sample: str, delimiter: str) -> HeaderPosition:
    """Where a CSV's header starts (see `header_index`)."""
    reader = csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter)
    rows, lines_above = [], [0]
    try:
        for row in itertools.islice(reader, HEADER_SEARCH_ROWS):
            rows.append(row)
            lines_above.append(reader.line_num)
    except csv.Error:
        pass  # a broken quote in the sample: the full read reports it with its line
    at = header_index(rows)
    return HeaderPosition(at, lines_above[at])
