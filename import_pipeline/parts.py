"""Step outputs as files: frames as parquet parts read one at a time, hand-offs as JSON, under the run's folder."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl

from import_pipeline.config import dagster_dir
from import_pipeline.summary import HANDOFFS, FileSummary, LoadResult, from_json, to_json


def step_output_dir(home: str, run_id: str, step_key: str) -> Path:
    """Where a step's outputs are kept: `storage/<run_id>/outputs/<step>/`, pruned by the cleanup job."""
    return dagster_dir(Path(home).resolve()) / "storage" / run_id / "outputs" / step_key


@dataclass(frozen=True)
class Parts:
    """A frame kept as parquet parts and read one part at a time, so memory follows a part, not the file."""

    paths: tuple[str, ...]
    rows: int

    def frames(self) -> Iterator[pl.DataFrame]:
        for path in self.paths:
            yield pl.read_parquet(path)

    def scans(self) -> Iterator[pl.LazyFrame]:
        """Each part on its own, read only for what a query of it takes."""
        for path in self.paths:
            yield pl.scan_parquet(path)

    def scan(self) -> pl.LazyFrame:
        return pl.scan_parquet(list(self.paths))


class PartsWriter:
    """Writes frames as numbered parquet parts into a folder; `parts` lists them once done."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.paths: list[str] = []
        self.rows = 0
        self._empty: pl.DataFrame | None = None

    def write(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            self._empty = frame  # kept for its columns, in case no part has rows
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"part-{len(self.paths):05d}.parquet"
        frame.write_parquet(path)
        self.paths.append(str(path))
        self.rows += frame.height

    def parts(self) -> Parts:
        if not self.paths and self._empty is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._empty.write_parquet(self.directory / "part-00000.parquet")
            self.paths.append(str(self.directory / "part-00000.parquet"))
        return Parts(tuple(self.paths), self.rows)


class ParquetIOManager(dg.ConfigurableIOManager):
    """Keeps op outputs as files, so a re-execution reloads upstream results instead of recomputing.

    Frames become parquet, `Parts` (written by the op itself, chunk by chunk) a list of their files,
    hand-offs (`summary.FileSummary`, `summary.LoadResult`) JSON. Inputs are read from the run that produced them, which for steps skipped by
    "re-execute from failure" is the parent run.
    """

    home: str = ""

    def _path(self, run_id: str, step_key: str, name: str) -> Path:
        return step_output_dir(self.home, run_id, step_key) / name

    def handle_output(
        self, context: dg.OutputContext, obj: pl.DataFrame | Parts | FileSummary | LoadResult | str | None
    ) -> None:
        path = self._path(context.run_id, context.step_key, context.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, pl.DataFrame):
            obj.write_parquet(path.with_suffix(".parquet"))
        elif isinstance(obj, Parts):
            path.with_suffix(".parts.json").write_text(json.dumps({"paths": obj.paths, "rows": obj.rows}))
        elif isinstance(obj, FileSummary | LoadResult):
            path.with_suffix(".json").write_text(json.dumps(to_json(obj)))
        else:
            path.with_suffix(".json").write_text(json.dumps(obj))

    def load_input(self, context: dg.InputContext) -> pl.DataFrame | Parts | FileSummary | LoadResult | str | None:
        upstream = context.upstream_output
        assert upstream is not None, "an input with no upstream output is not ours to load"
        path = self._path(upstream.run_id, upstream.step_key, upstream.name)
        if path.with_suffix(".parquet").exists():
            return pl.read_parquet(path.with_suffix(".parquet"))
        if path.with_suffix(".parts.json").exists():
            listed = json.loads(path.with_suffix(".parts.json").read_text())
            return Parts(tuple(listed["paths"]), listed["rows"])
        data = json.loads(path.with_suffix(".json").read_text())
        if not isinstance(data, dict):
            return data
        # The input's own type reads a summary a run wrote before hand-offs were typed (re-execution).
        expected = context.dagster_type.typing_type if context.dagster_type is not None else None
        return from_json(data, expected if expected in HANDOFFS.values() else None)
