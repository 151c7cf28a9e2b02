"""The embedded server's lifetime, as a user lives it: real `import-pipeline` processes, a real server.

No command drops a session it did not open; `import-pipeline stop` refuses while others use the server.
"""

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
import pytest

from import_pipeline.config import (
    CHUNK_ROWS_ENV,
    DAGSTER_DIR_ENV,
    DAGSTER_HOME_ENV,
    DAGSTER_PG_URL_ENV,
    DATABASE_URL_ENV,
    HOME_ENV,
    LANDING_DIR_ENV,
)
from import_pipeline_tests.dev_server import free_port, start_dev, stop_dev, tail, wait_for_ui
from import_pipeline_tests.shared import CLI, SAMPLES


@dataclass
class EmbeddedHome:
    """A state folder whose embedded server only `import-pipeline` commands start."""

    home: Path
    env: dict[str, str]
    postmasters: set[int] = field(default_factory=set)
    command: list[str] = field(default_factory=lambda: list(CLI))

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([*self.command, *args], env=self.env, capture_output=True, text=True, timeout=120)
        self.note_postmaster()
        return done

    def postmaster_pid(self) -> int | None:
        """The running server's pid, from `pgdata/postmaster.pid`; None once it is gone."""
        try:
            pid = int((self.home / "pgdata" / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if psutil.pid_exists(pid) else None

    def note_postmaster(self) -> None:
        pid = self.postmaster_pid()
        if pid is not None:
            self.postmasters.add(pid)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedHome]:
    """The CLI's environment on the embedded default; stops every server it started by its postmaster pid."""
    # Nothing from the suite's own pipelines: Dagster's storage and folders follow the embedded server.
    # The suite's chunks of three records would only slow the import down here.
    inherited = (DAGSTER_PG_URL_ENV, DAGSTER_DIR_ENV, DAGSTER_HOME_ENV, "DAGSTER_HOME", LANDING_DIR_ENV, CHUNK_ROWS_ENV)
    env = {k: v for k, v in os.environ.items() if k not in inherited}
    env[HOME_ENV] = str(tmp_path / "home")
    env[DATABASE_URL_ENV] = ""
    state = EmbeddedHome(tmp_path / "home", env)
    yield state
    state.note_postmaster()
    for pid in state.postmasters:
        try:
            process = psutil.Process(pid)
            if not process.name().startswith("postgres"):
                continue
            process.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
            process.wait(30)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            process.kill()


def _session(embedded: EmbeddedHome) -> psycopg.Connection:
    done = embedded.cli("dsn")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "keeps running" in done.stderr
    return psycopg.connect(done.stdout.strip(), autocommit=True, application_name="crm")


def _backend_pid(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def test_embedded_server_session_survives_import_and_history(embedded):
    with _session(embedded) as conn:
        backend, postmaster = _backend_pid(conn), embedded.postmaster_pid()

        imported = embedded.cli("import", str(SAMPLES / "leads_sample.csv"), "--json")
        history = embedded.cli("history", "--json")

        assert imported.returncode == 0, imported.stderr[-3000:]
        assert json.loads(imported.stdout)["status"] == "success"
        assert history.returncode == 0, history.stderr[-3000:]
        assert [row["status"] for row in json.loads(history.stdout)] == ["success"]
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert _backend_pid(conn) == backend
        assert embedded.postmaster_pid() == postmaster
        assert conn.execute("SELECT count(*) FROM leads").fetchone() == (936,)


def test_embedded_server_dsn_keeps_it_running_until_stop(embedded):
    conn = _session(embedded)
    backend, postmaster = _backend_pid(conn), embedded.postmaster_pid()

    history = embedded.cli("history", "--json")

    assert history.returncode == 0, history.stderr[-3000:]
    assert json.loads(history.stdout) == []
    assert conn.execute("SELECT 1").fetchone() == (1,)
    assert _backend_pid(conn) == backend and embedded.postmaster_pid() == postmaster

    refused = embedded.cli("stop")

    assert refused.returncode == 1
    assert f"session {backend} (postgres on leads, crm)" in refused.stderr
    assert conn.execute("SELECT 1").fetchone() == (1,)
    assert _backend_pid(conn) == backend and embedded.postmaster_pid() == postmaster

    conn.close()
    stopped = embedded.cli("stop")

    assert stopped.returncode == 0, stopped.stderr
    assert "the embedded server stopped" in stopped.stderr
    assert not psutil.pid_exists(postmaster)
    assert not (embedded.home / "pgdata" / "postmaster.pid").exists()

    again = embedded.cli("stop")
    assert again.returncode == 0 and "is not running" in again.stderr


def _holder(embedded: EmbeddedHome, keep_running: bool) -> subprocess.Popen:
    """A process that starts (or reuses) the server as every command or run does, and holds it until its stdin closes."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from import_pipeline.embedded_server import start_embedded_server; "
            "start_embedded_server(Path(sys.argv[1]), keep_running=sys.argv[2] == 'keep'); print('ready', flush=True); "
            "sys.stdin.read()",
            str(embedded.home),
            "keep" if keep_running else "stop at exit",
        ],
        env=embedded.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "ready\n"
    embedded.note_postmaster()
    return holder


def _release(holder: subprocess.Popen) -> None:
    holder.stdin.close()
    holder.wait(30)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root's server runs as another system user")
def test_embedded_server_stop_works_once_its_folder_is_closed_to_others(embedded):
    assert embedded.cli("dsn").returncode == 0
    postmaster = embedded.postmaster_pid()
    # What another pytest session does to /tmp/pytest-of-root, or a user to a home folder.
    embedded.home.parent.chmod(0o700)

    stopped = embedded.cli("stop")

    assert stopped.returncode == 0, stopped.stderr
    assert "the embedded server stopped" in stopped.stderr
    assert not psutil.pid_exists(postmaster)
    log = (embedded.home / "pgdata" / "log").read_text()
    assert log.rstrip().endswith("database system is shut down"), log[-2000:]
    assert "abnormal database system shutdown" not in log and "PANIC" not in log, log[-2000:]


def test_embedded_server_stop_refuses_while_a_command_uses_it(embedded):
    holder = _holder(embedded, keep_running=True)
    try:
        postmaster = embedded.postmaster_pid()

        refused = embedded.cli("stop")

        assert refused.returncode == 1
        assert f"process {holder.pid} (" in refused.stderr
        assert embedded.postmaster_pid() == postmaster
    finally:
        _release(holder)

    stopped = embedded.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not psutil.pid_exists(postmaster)


def test_embedded_server_a_process_stops_only_the_server_it_started_unless_dsn_asked(embedded):
    # A run under a bare `dagster dev` starts the server this way: it stops it on exit when nobody uses it.
    alone = _holder(embedded, keep_running=False)
    started = embedded.postmaster_pid()
    _release(alone)
    assert started is not None and not psutil.pid_exists(started)

    # One that found it running leaves it alone.
    embedded.cli("dsn")
    running = embedded.postmaster_pid()
    reuser = _holder(embedded, keep_running=False)
    _release(reuser)
    assert embedded.postmaster_pid() == running
    assert embedded.cli("stop").returncode == 0

    # One that started it, after which `dsn` handed it to the user, leaves it for `import-pipeline stop`.
    starter = _holder(embedded, keep_running=False)
    asked = embedded.cli("dsn")
    _release(starter)

    assert "keeps running until `import-pipeline stop`" in asked.stderr
    kept = embedded.postmaster_pid()
    assert kept is not None and psutil.pid_exists(kept)
    stopped = embedded.cli("stop")
    assert stopped.returncode == 0 and "the embedded server stopped" in stopped.stderr, stopped.stderr
    assert not psutil.pid_exists(kept)


def test_embedded_server_stop_with_a_configured_database_has_nothing_to_stop(embedded):
    embedded.env[DATABASE_URL_ENV] = "postgresql://nobody@127.0.0.1:1/leads"

    done = embedded.cli("stop")

    assert done.returncode == 0
    assert "nothing to stop" in done.stderr
    assert not (embedded.home / "pgdata").exists()


def _console_script() -> list[str]:
    """`import-pipeline` by absolute path: the console script beside this interpreter, else the interpreter itself."""
    script = Path(sys.executable).parent / "import-pipeline"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "import_pipeline"]


def _path_without_dagster() -> str:
    """PATH less every folder with a `dagster` program: what a virtualenv that is not activated leaves."""
    folders = os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
    return os.pathsep.join(f for f in folders if f and not (Path(f) / "dagster").exists())


def test_embedded_server_dev_by_absolute_path_without_dagster_on_path(embedded, tmp_path):
    embedded.env["PATH"] = _path_without_dagster()
    embedded.command = _console_script()
    assert embedded.cli("dsn").returncode == 0
    postmaster = embedded.postmaster_pid()
    port, log_path = free_port(), tmp_path / "dev.log"

    dev = start_dev(port, log_path, embedded.command, embedded.env)
    try:
        base = wait_for_ui(dev, port, log_path)
        with urllib.request.urlopen(f"{base}/server_info", timeout=10) as response:
            assert "dagster_webserver_version" in json.loads(response.read())
        started = psutil.Process(dev.pid).children(recursive=True)
        commands = [" ".join(p.cmdline()) for p in started]
        history = embedded.cli("history", "--json")
        refused = embedded.cli("stop")

        assert any("dagster_webserver" in c for c in commands), commands
        assert any("dagster._daemon run" in c for c in commands), commands
        assert history.returncode == 0, history.stderr[-3000:]
        assert json.loads(history.stdout) == []
        assert refused.returncode == 1, refused.stderr
        assert f"process {dev.pid} (" in refused.stderr

        dev.send_signal(signal.SIGINT)  # Ctrl-C
        _gone, alive = psutil.wait_procs([psutil.Process(dev.pid), *started], timeout=60)
    finally:
        stop_dev(dev)

    assert alive == [], [p.pid for p in alive]
    log = tail(log_path)
    assert "the embedded server keeps running: it was running before `import-pipeline dev` started" in log, log
    assert embedded.postmaster_pid() == postmaster
    stopped = embedded.cli("stop")
    assert stopped.returncode == 0 and "the embedded server stopped" in stopped.stderr, stopped.stderr
