"""`import-pipeline dev` started as a user starts it, for the browser test and the latency benchmark."""

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from import_pipeline.config import PROJECT_ROOT
from import_pipeline_tests.shared import CLI

STARTUP_SECONDS = 120


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def tail(path: Path, lines: int = 60) -> str:
    """The last lines of a log."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def start_dev(
    port: int, log_path: Path, command: list[str] = CLI, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """`COMMAND dev --port PORT` in a session of its own, stdout and stderr to `log_path`."""
    with log_path.open("wb") as log:
        # Its own session: the CLI, `dagster dev`, the webserver, daemon, code server and run processes
        # all share one process group.
        return subprocess.Popen(
            [*command, "dev", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=os.environ.copy() if env is None else env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for_ui(process: subprocess.Popen, port: int, log_path: Path) -> str:
    """The UI's URL once `/server_info` answers; raises with the log's tail if `dev` exits or never answers."""
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_SECONDS
    while not _answers(f"{base}/server_info"):
        if process.poll() is not None:
            raise RuntimeError(f"import-pipeline dev exited with {process.returncode}:\n{tail(log_path)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the UI did not answer within {STARTUP_SECONDS} s:\n{tail(log_path)}")
        time.sleep(0.5)
    return base


def stop_dev(process: subprocess.Popen) -> None:
    """What Ctrl+C does (the CLI forwards it and `dagster dev` shuts its services down), then SIGKILL to
    anything of ours still left in the process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@contextmanager
def dev_server(port: int, log_path: Path) -> Iterator[str]:
    """`import-pipeline dev --port PORT` with this process's environment; yields the UI's URL.

    Stops only what it started: its own process group.
    """
    process = start_dev(port, log_path)
    try:
        yield wait_for_ui(process, port, log_path)
    finally:
        stop_dev(process)
