"""What the import's steps hand each other about the file, beside its records: typed, and kept as JSON."""

import dataclasses
import time
from typing import Any

from import_pipeline.possible_duplicates import DuplicateScoring
from import_pipeline.schema import COUNT_KEYS


@dataclasses.dataclass(frozen=True)
class FileSummary:
    """One file on its way in: parse fills the first fields, validate and dedupe the later ones."""

    partition_key: str
    source_file: str  # the landed file's path, or the bucket object's s3:// URI
    content_hash: str
    mapping: dict[str, str]  # source header -> canonical field
    rows_read: int
    seconds: dict[str, float]  # each step's duration so far
    sheet: str = ""  # the workbook's sheet imported; "" for a CSV: with the hash, what the import is of
    # Parquet parts of a corrected reject report's origins: each record's line, and the import and line it was
    # rejected in (schema.ORIGIN_IMPORT, ORIGIN_ROW). Empty for any other file.
    origins: tuple[str, ...] = ()
    rows_valid: int = 0
    rows_rejected: int = 0
    match_keys: tuple[str, ...] = ()
    keep: str = "first"  # which occurrence of a key within the file survives
    source: str = "default"  # the system the file's external ids belong to
    warnings: tuple[str, ...] = ()  # what the user must know about how the file was read (garbled values...)
    rejected_sample: tuple[dict[str, str], ...] = ()  # the first rejected lines, as the reject report has them
    reject_report: str = ""  # the CSV of every rejected line; "" when none was rejected
    review: bool = False  # its mapping profile requires approval before anything is committed
    scoring: DuplicateScoring | None = None  # possible-duplicate scoring, when on

    def __post_init__(self) -> None:
        # Lists, when read back from JSON.
        object.__setattr__(self, "match_keys", tuple(self.match_keys))
        object.__setattr__(self, "origins", tuple(self.origins))
        object.__setattr__(self, "warnings", tuple(self.warnings))
        object.__setattr__(self, "rejected_sample", tuple(self.rejected_sample))
        if isinstance(self.scoring, dict):
            object.__setattr__(self, "scoring", DuplicateScoring(**self.scoring))

    def after(self, step: str, started: float, **changes: Any) -> "FileSummary":
        """This summary with `changes`, and `step`'s seconds since `started` (`time.perf_counter()`)."""
        return dataclasses.replace(self, seconds=self.seconds | {step: time.perf_counter() - started}, **changes)


@dataclasses.dataclass(frozen=True)
class LoadResult:
    """What the load committed for the file (or found committed already), for the steps after it."""

    summary: FileSummary
    status: str  # success; planned (nothing committed); or skipped when these bytes were imported before
    counts: dict[str, int]  # schema.COUNT_KEYS
    # The import's record as JSON-ready values: the `leads` materialization's metadata (`load.as_metadata`).
    record: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def source_file(self) -> str:
        return self.summary.source_file


HANDOFFS = {cls.__name__: cls for cls in (FileSummary, LoadResult)}


def to_json(value: FileSummary | LoadResult) -> dict:
    """The hand-off as JSON-ready data, tagged with its type."""
    return {"type": type(value).__name__, "value": dataclasses.asdict(value)}


def from_json(data: dict, expected: type | None = None) -> FileSummary | LoadResult:
    """A hand-off read back; untagged data (written before hand-offs were typed) is read as `expected`."""
    cls, value = (HANDOFFS[data["type"]], data["value"]) if "type" in data and "value" in data else (expected, data)
    if cls is None:
        raise ValueError(f"cannot tell which hand-off {sorted(data)} is")
    return _build(cls, value)


def _build(cls: type, value: dict) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {name: value[name] for name in known if name in value}
    if cls is LoadResult:
        # Untagged, the load's result was the summary's fields, the counts and the status side by side.
        kwargs["summary"] = _build(FileSummary, value.get("summary", value))
        kwargs.setdefault("counts", {k: value[k] for k in COUNT_KEYS if k in value})
    return cls(**kwargs)
