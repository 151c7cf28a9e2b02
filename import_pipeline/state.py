"""The state folder: landing, quarantine, reports and processed files under one home."""

import datetime
import hashlib
import os
from pathlib import Path

import dagster as dg

from import_pipeline.config import landing_dir
from import_pipeline.landing import move_aside


class StateFolder(dg.ConfigurableResource):
    """The state folder (`IMPORT_PIPELINE_HOME`): where files land, and where they go once imported or refused."""

    home: str = ""

    @property
    def landing_path(self) -> Path:
        return landing_dir(Path(self.home).resolve())

    @property
    def quarantine_path(self) -> Path:
        return Path(self.home).resolve() / "quarantine"

    @property
    def declined_path(self) -> Path:
        return Path(self.home).resolve() / "declined"

    @property
    def reports_path(self) -> Path:
        return Path(self.home).resolve() / "reports"

    @property
    def processed_path(self) -> Path:
        return Path(self.home).resolve() / "processed"

    @property
    def grants_path(self) -> Path:
        return Path(self.home).resolve() / "grants"

    def _grant_file(self, path: Path) -> Path:
        return self.grants_path / hashlib.sha256(os.fsencode(os.path.realpath(path))).hexdigest()

    # A run's config can name a file, and the UI's Launchpad can write any config: only files a shell user
    # named (`import-pipeline import PATH`) may be read from outside the landing folder.
    def grant(self, path: Path) -> None:
        """Let runs import `path` though it lies outside the landing folder (the CLI was given it)."""
        self.grants_path.mkdir(parents=True, exist_ok=True)
        self._grant_file(path).write_text(os.path.realpath(path) + "\n", encoding="utf-8", errors="surrogateescape")

    def may_read(self, path: Path) -> bool:
        """Whether a run may import `path`: inside the landing folder, or granted by the CLI."""
        real = Path(os.path.realpath(path))
        return real.is_relative_to(Path(os.path.realpath(self.landing_path))) or self._grant_file(path).is_file()

    def archive(self, path: Path, day: datetime.date) -> Path | None:
        """Move a landed file to `processed/YYYY/MM/DD/`; files from elsewhere stay put."""
        if not path.resolve().is_relative_to(self.landing_path.resolve()) or not path.exists():
            return None
        return move_aside(path, self.processed_path / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}")

    def quarantine(self, path: Path, reason: str, folder: Path | None = None) -> Path | None:
        """Move a landed file to quarantine (or `folder`) with a `.reason.txt` beside it; files from elsewhere stay put."""
        if not path.resolve().is_relative_to(self.landing_path.resolve()) or not path.is_file():
            return None
        moved = move_aside(path, folder or self.quarantine_path)
        moved.with_name(moved.name + ".reason.txt").write_text(reason + "\n", encoding="utf-8")
        return moved
