"""`import-pipeline`: start everything, import a file, read the history, print the database DSN, stop the embedded server."""

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from pathlib import Path

import dagster as dg
import psycopg
import yaml

from import_pipeline.config import (
    DATABASE_URL_ENV,
    PROJECT_ROOT,
    UI_URL_ENV,
    RunConfigError,
    dagster_storage_url,
    home_dir,
    landing_dir,
    process_environment,
)
from import_pipeline.database import initialize_pools, migrate_once
from import_pipeline.embedded_server import (
    StopOutcome,
    embedded_dagster_url,
    embedded_server_pid,
    keep_for_user,
    start_embedded_server,
    stop_embedded_server,
)
from import_pipeline.schema import COUNT_KEYS, REVERT_COUNTS

DEV_HOST, DEV_PORT = "127.0.0.1", 3000

# Exit codes (README, "Command line").
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DATABASE = 0, 1, 2, 3


class UsageError(Exception):
    """Bad arguments or run config: nothing ran."""


class _Parser(argparse.ArgumentParser):
    """Argument errors raise, so that `--json` still gets its one object."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _database_unreachable(url: str, error: psycopg.OperationalError) -> str:
    """One line naming the server (never the password) and the driver's first line."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
        where = f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"
    except psycopg.ProgrammingError:
        where = "the configured URL"
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return f"the leads database at {where} is unreachable: {first}"


def _log_file() -> Path:
    return home_dir() / "logs" / "import-pipeline.log"


def _keep_traceback(error: BaseException) -> Path | None:
    """Append the traceback to the state folder's log (the terminal gets one line); where it went."""
    try:
        path = _log_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as log:
            log.write("".join(traceback.format_exception(error)))
        return path
    except OSError:
        return None


@contextmanager
def _run_logs(verbose: bool) -> Iterator[None]:
    """Dagster's event lines on the terminal with `--verbose`; else appended to the state folder's log only."""
    if verbose:
        yield
        return
    path = _log_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as log, redirect_stderr(log):
        yield


def _read_run_config(path: str | None) -> dict:
    """The `--config` YAML as a run config, checked whole (`run_config.check_run_config`)."""
    if not path:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"--config {path}: {e.strerror or e}") from None
    try:
        run_config = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"--config {path}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    # Here, not at the top: the config classes bring polars, pandera and phonenumbers (1.3 s of every command).
    from import_pipeline.run_config import check_run_config

    try:
        check_run_config(run_config)
    except RunConfigError as e:
        raise UsageError(f"--config {path}: {e}") from None
    return run_config


def bootstrap() -> str:
    """Resolve the state folder and databases, migrate, and export what every Dagster process needs.

    Returns the leads database URL. The embedded server, when it is the database, keeps running after
    this process exits: only `stop`, and `dev` when it started the server itself, stop it.
    """
    home = home_dir()
    landing_dir(home).mkdir(parents=True, exist_ok=True)
    configured = os.environ.get(DATABASE_URL_ENV)
    if configured:
        leads_url, dagster_url = configured, dagster_storage_url(configured)
    else:
        leads_url = start_embedded_server(home, keep_running=True)
        dagster_url = dagster_storage_url(embedded_dagster_url(leads_url))
    migrate_once(leads_url)
    os.environ.update(process_environment(home, leads_url, dagster_url, embedded=not configured))
    with dg.DagsterInstance.get() as instance:
        initialize_pools(instance)
    return leads_url


def _dev(args: argparse.Namespace) -> int:
    embedded = not os.environ.get(DATABASE_URL_ENV)
    started_here = embedded and embedded_server_pid(home_dir()) is None
    bootstrap()
    try:
        landing = landing_dir(home_dir())
        # Notification links point at this UI, on the port it really listens on (unless set explicitly).
        os.environ.setdefault(UI_URL_ENV, f"http://{DEV_HOST}:{args.port}")
        print(f"Dagster UI: http://{DEV_HOST}:{args.port}   landing folder: {landing}", file=sys.stderr)
        print(f"Try: cp {PROJECT_ROOT / 'samples' / 'leads_sample.csv'} {landing}/", file=sys.stderr)
        # This interpreter's own Dagster: from a virtualenv that is not activated, `dagster` is not on PATH.
        dagster_dev = [sys.executable, "-m", "dagster", "dev"]
        command = [*dagster_dev, "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", DEV_HOST, "-p", str(args.port)]
        # Forward a stop request; `dagster dev` shuts down its webserver, daemon and code server itself.
        # The handlers come first: a handled signal is back to its default in the child, an ignored one
        # (this process started in the background by a script) would stay ignored there, and `dagster dev`
        # never heard the stop (measured: still running 30 s after SIGINT; 5 s to shut down with this order).
        children: list[subprocess.Popen] = []

        def forward(sig: int, _frame: object) -> None:
            for child in children:
                child.send_signal(sig)

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, forward)
        children.append(subprocess.Popen(command, cwd=PROJECT_ROOT))
        return children[0].wait()
    finally:
        if started_here:
            # Stopped only when nobody else uses it and `dsn` did not ask for it; a second Ctrl-C meanwhile
            # goes to the exited child.
            _report_stop(stop_embedded_server(home_dir(), unless_kept=True))
        elif embedded:
            print(
                "the embedded server keeps running: it was running before `import-pipeline dev` started;"
                " `import-pipeline stop` stops it",
                file=sys.stderr,
            )


def _report_stop(outcome: StopOutcome) -> None:
    """One line on stderr: the embedded server stopped, was not running, or keeps running and why."""
    if not outcome.was_running:
        print(f"the embedded server under {home_dir()} is not running", file=sys.stderr)
    elif outcome.stopped:
        print("the embedded server stopped", file=sys.stderr)
    elif outcome.kept:
        print(
            "the embedded server keeps running: `import-pipeline dsn` asked for it; `import-pipeline stop` stops it",
            file=sys.stderr,
        )
    elif outcome.users:
        print(
            f"the embedded server keeps running: in use by {'; '.join(outcome.users)}; "
            "`import-pipeline stop` stops it once they are done (`--force` ends their sessions)",
            file=sys.stderr,
        )
    else:
        print(f"the embedded server keeps running: {outcome.error}", file=sys.stderr)


def _import(args: argparse.Namespace) -> int:
    from import_pipeline.launch import import_file

    run_config = _read_run_config(args.config)  # before the database: a bad config needs no server
    if args.plan:
        from import_pipeline.run_config import with_plan

        run_config = with_plan(run_config)
    bootstrap()
    with _run_logs(args.verbose):
        result = import_file(Path(args.path), run_config)
    if args.json:
        print(json.dumps(result, default=str))
    else:
        _print_summary(result)
    return 0 if result["status"] in ("success", "skipped", "planned", "awaiting approval") else 1


def _print_summary(result: dict) -> None:
    when = ""
    if result.get("started_at"):
        started = datetime.datetime.fromtimestamp(result["started_at"]).astimezone()
        when = f"  {started:%Y-%m-%d %H:%M:%S %Z}"
        if result.get("duration_s") is not None:
            when += f"  {result['duration_s']:.1f} s"
    print(f"{result['status'].upper()}  {result['partition_key']}  run {result['run_id']}{when}")
    if result.get("latest_status") and result.get("latest_run_id") != result["run_id"]:
        print(f"  since then: {result['latest_status']} in run {result['latest_run_id']}")
    if result.get("replaces_run_id"):
        print(f"  imports again the reverted import of run {result['replaces_run_id']}")
    if result.get("action") == "revert" and result.get("rows_changed") is not None:
        print(
            "  rows the import changed {rows_changed}: removed {removed}  restored {restored}  conflicts {conflict}"
            "  untouched {untouched}  (overridden {overridden})".format(
                **{k: result.get(k) or 0 for k in REVERT_COUNTS}
            )
        )
        if result.get("already_reverted"):
            print("  reverted already: nothing changed this time")
        if result.get("reverted_run_id"):
            print(f"  reverted the import of run {result['reverted_run_id']}")
    if result.get("rows_read") is not None:
        print(
            "  read {rows_read}  rejected {rows_rejected}  duplicates in file {duplicates_in_file}"
            "  skipped as existing {duplicates_existing}  inserted {inserted}  updated {updated}"
            "  merged {merged}  created {created}".format(**{k: result.get(k) or 0 for k in COUNT_KEYS})
        )
    if result.get("already_imported_as"):
        print(f"  same bytes as the earlier import {result['already_imported_as']}")
    if result.get("error"):
        print(f"  error: {result['error']}")
    if result.get("reject_report"):
        print(f"  rejected rows: {result['reject_report']}")
    if result.get("plan_report"):
        print(f"  planned changes: {result['plan_report']}")
    if result.get("revert_report") and result.get("conflict"):
        print(f"  conflicts: {result['revert_report']}")


def _retry(args: argparse.Namespace) -> int:
    from import_pipeline.launch import reexecute_from_failure

    bootstrap()
    try:
        with _run_logs(args.verbose):
            result = reexecute_from_failure(args.run_id)
    except ValueError as e:
        result = {"run_id": args.run_id, "partition_key": None, "status": "failed", "error": str(e)}
    if args.json:
        print(json.dumps(result, default=str))
    else:
        _print_summary(result)
    return 0 if result["status"] in ("success", "skipped", "planned", "reverted") else 1


def _revert(args: argparse.Namespace) -> int:
    from import_pipeline.launch import revert_partition

    bootstrap()
    try:
        with _run_logs(args.verbose):
            result = revert_partition(args.partition, force=args.force)
    except ValueError as e:
        result = {"run_id": None, "partition_key": args.partition, "status": "failed", "error": str(e)}
    if args.json:
        print(json.dumps(result, default=str))
    else:
        _print_summary(result)
    return 0 if result["status"] == "reverted" else 1


def _history(args: argparse.Namespace) -> int:
    import dagster as dg

    from import_pipeline.history import import_history

    bootstrap()
    with dg.DagsterInstance.get() as instance:
        rows = import_history(instance, args.limit)
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    for row in rows:
        _print_summary(row)
    if not rows:
        print("no imports yet")
    return 0


def _init(_args: argparse.Namespace) -> int:
    bootstrap()
    print("leads schema migrated; Dagster storage and the leads_db pool ready", file=sys.stderr)
    return 0


def _dsn(_args: argparse.Namespace) -> int:
    embedded = not os.environ.get(DATABASE_URL_ENV)  # bootstrap exports the URL it resolves
    url = bootstrap()
    print(url)
    if embedded:
        keep_for_user(home_dir())
        print("the embedded server keeps running until `import-pipeline stop`", file=sys.stderr)
    return 0


def _stop(args: argparse.Namespace) -> int:
    if os.environ.get(DATABASE_URL_ENV):
        print(
            f"{DATABASE_URL_ENV} is set: the leads database is not the embedded server, nothing to stop",
            file=sys.stderr,
        )
        return 0
    outcome = stop_embedded_server(home_dir(), force=args.force)
    _report_stop(outcome)
    return 0 if outcome.stopped or not outcome.was_running else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `import-pipeline` command."""
    parser = _Parser(prog="import-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="start the Dagster UI, daemon, sensors and schedules")
    dev.add_argument("--port", type=int, default=DEV_PORT)
    dev.set_defaults(handler=_dev)

    imp = commands.add_parser("import", help="import one file through the import job")
    imp.add_argument("path")
    imp.add_argument("--config", help="run config YAML, as in the Launchpad")
    imp.add_argument("--plan", action="store_true", help="only show what the import would do; commit nothing")
    imp.add_argument("--json", action="store_true", help="print one JSON object")
    imp.add_argument("--verbose", action="store_true", help="print Dagster's event log lines as the run goes")
    imp.set_defaults(handler=_import)

    retry = commands.add_parser("retry", help="re-execute a failed import from its failed step")
    retry.add_argument("run_id")
    retry.add_argument("--json", action="store_true", help="print one JSON object")
    retry.add_argument("--verbose", action="store_true", help="print Dagster's event log lines as the run goes")
    retry.set_defaults(handler=_retry)

    revert = commands.add_parser("revert", help="revert the committed import of a partition (see `history`)")
    revert.add_argument("partition")
    revert.add_argument("--force", action="store_true", help="revert leads changed since the import too")
    revert.add_argument("--json", action="store_true", help="print one JSON object")
    revert.add_argument("--verbose", action="store_true", help="print Dagster's event log lines as the run goes")
    revert.set_defaults(handler=_revert)

    history = commands.add_parser("history", help="recent imports, newest first")
    history.add_argument("--json", action="store_true")
    history.add_argument("--limit", type=int, default=20)
    history.set_defaults(handler=_history)

    init = commands.add_parser("init", help="migrate the databases and create the load pool, then exit (deployments)")
    init.set_defaults(handler=_init)

    dsn = commands.add_parser("dsn", help="print the leads database connection string")
    dsn.set_defaults(handler=_dsn)

    stop = commands.add_parser("stop", help="stop the embedded server, unless other sessions use it")
    stop.add_argument("--force", action="store_true", help="stop it anyway, ending every session")
    stop.set_defaults(handler=_stop)

    arguments = sys.argv[1:] if argv is None else argv
    as_json = "--json" in arguments
    try:
        args = parser.parse_args(arguments)
        return args.handler(args)
    except (UsageError, RunConfigError) as e:
        return _refuse(as_json, str(e), EXIT_USAGE)
    except psycopg.OperationalError as e:
        url = os.environ.get(DATABASE_URL_ENV, "")
        _keep_traceback(e)
        return _refuse(as_json, _database_unreachable(url, e), EXIT_DATABASE)
    except Exception as e:
        log = _keep_traceback(e)
        first = (str(e).strip().splitlines() or [""])[0]
        where = f"; the traceback is in {log}" if log else ""
        return _refuse(as_json, f"unexpected error ({type(e).__name__}): {first}{where}", EXIT_FAILED)


def _refuse(as_json: bool, error: str, code: int) -> int:
    """Report a failure that ran no import: one JSON object with `--json`, else one line on stderr."""
    if as_json:
        print(json.dumps({"run_id": None, "partition_key": None, "status": "failed", "error": error}))
    else:
        print(error if error.startswith("import-pipeline") else f"import-pipeline: {error}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
