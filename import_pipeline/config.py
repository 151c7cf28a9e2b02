"""Settings the pipeline reads from its environment, and where its state folders are."""

import os
from pathlib import Path

import dagster as dg

HOME_ENV = "IMPORT_PIPELINE_HOME"
DATABASE_URL_ENV = "IMPORT_PIPELINE_DATABASE_URL"
# The load op's concurrency pool; dagster.yaml's `pools: default_limit` caps loads running at once.
LOAD_POOL = "leads_db"
# workspace.yaml's location name: runs launched outside the UI carry it so the UI can re-execute them.
CODE_LOCATION = "import_pipeline"
LANDING_DIR_ENV = "IMPORT_PIPELINE_LANDING_DIR"
DAGSTER_PG_URL_ENV = "DAGSTER_PG_URL"
DAGSTER_DIR_ENV = "IMPORT_PIPELINE_DAGSTER_DIR"
# The folder holding the dagster.yaml the CLI's processes use; default: the repository's own.
DAGSTER_HOME_ENV = "IMPORT_PIPELINE_DAGSTER_HOME"
S3_BUCKET_ENV = "IMPORT_PIPELINE_S3_BUCKET"
S3_PREFIX_ENV = "IMPORT_PIPELINE_S3_PREFIX"
S3_ENDPOINT_ENV = "IMPORT_PIPELINE_S3_ENDPOINT_URL"
UI_URL_ENV = "IMPORT_PIPELINE_UI_URL"
WEBHOOK_URL_ENV = "IMPORT_PIPELINE_WEBHOOK_URL"
SMTP_HOST_ENV = "IMPORT_PIPELINE_SMTP_HOST"
SMTP_PORT_ENV = "IMPORT_PIPELINE_SMTP_PORT"
SMTP_TO_ENV = "IMPORT_PIPELINE_SMTP_TO"

DEFAULT_HOME = ".import_pipeline"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
SENSOR_INTERVAL_SECONDS = 3
# Files the landing sensor looks at per tick: bounds the tick's time and the cursor's size.
MAX_FILES_PER_TICK = 100
# Records in flight take about 2 KB each (frames and their copies): 25k records keep a 15-column import
# near 350 MB whatever the file's size. The suite sets a tiny size through the environment (read when a
# run starts, `ParseConfig.rows_per_chunk`) so that every test crosses chunk boundaries.
CHUNK_ROWS_ENV = "IMPORT_PIPELINE_CHUNK_ROWS"
DB_RETRY_SECONDS_ENV = "IMPORT_PIPELINE_DB_RETRY_SECONDS"
# "1" when the leads URL is the embedded server's (exported by the CLI): a load starts it again if it stopped.
EMBEDDED_SERVER_ENV = "IMPORT_PIPELINE_EMBEDDED_SERVER"
DEFAULT_CHUNK_ROWS = 25_000
# Files still being written by common tools and browsers carry one of these suffixes.
IN_PROGRESS_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".filepart")


def home_dir() -> Path:
    """The state folder: embedded database, landing folder, Dagster storage."""
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).resolve()


# The defaults of the variables the resources read (`setting`) but the state folder's: the embedded server
# under the state folder, notifications by log line only, no bucket (its sensor skips; credentials: boto3's chain).
_RESOURCE_DEFAULTS = {
    DATABASE_URL_ENV: "",
    UI_URL_ENV: "http://127.0.0.1:3000",
    WEBHOOK_URL_ENV: "",
    SMTP_HOST_ENV: "",
    SMTP_PORT_ENV: "25",
    SMTP_TO_ENV: "",
    S3_BUCKET_ENV: "",
    S3_PREFIX_ENV: "",
    S3_ENDPOINT_ENV: "",
    DB_RETRY_SECONDS_ENV: "120",
    EMBEDDED_SERVER_ENV: "0",
}


def resource_defaults() -> dict[str, str]:
    """The value of each variable the resources read, when it is not set."""
    return {HOME_ENV: str(home_dir()), **_RESOURCE_DEFAULTS}


def setting(name: str) -> str | dg.EnvVar:
    """A resource field: the variable `name`, read when the resource is built, if it is set; else its default.

    A bare `dagster dev` needs nothing exported, and nothing is written to the environment. A process
    that sets the variables only after importing the definitions (the test suite) exports them first.
    """
    return dg.EnvVar(name) if name in os.environ else resource_defaults()[name]


def int_setting(name: str) -> int:
    """`setting` for a number (`dg.EnvVar.int` is an int to the resource)."""
    return dg.EnvVar.int(name) if name in os.environ else int(resource_defaults()[name])


def landing_dir(home: Path) -> Path:
    """Where files are dropped; `$IMPORT_PIPELINE_HOME/landing` unless configured."""
    configured = os.environ.get(LANDING_DIR_ENV)
    return Path(configured).resolve() if configured else home / "landing"


def dagster_dir(home: Path) -> Path:
    """Dagster's local files: run outputs and compute logs under `storage/<run_id>/`."""
    return home / "dagster"


def dagster_storage_url(leads_url: str) -> str:
    """Dagster's own storage URL: `DAGSTER_PG_URL`, else the leads server's `dagster` database.

    dagster-postgres needs the psycopg2 driver: with SQLAlchemy 2.1 a plain `postgresql://`
    URL selects psycopg 3 and every event write then fails on `NOTIFY run_events, $1`.
    """
    configured = os.environ.get(DAGSTER_PG_URL_ENV)
    url = configured or leads_url
    scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg2://{rest}" if scheme in ("postgresql", "postgres") else url


def process_environment(home: Path, leads_url: str, dagster_url: str, embedded: bool = False) -> dict[str, str]:
    """The variables every Dagster process (webserver, daemon, code server, runs) is started with."""
    return {
        HOME_ENV: str(home),
        DATABASE_URL_ENV: leads_url,
        EMBEDDED_SERVER_ENV: "1" if embedded else "0",
        DAGSTER_PG_URL_ENV: dagster_url,
        "DAGSTER_HOME": os.environ.get(DAGSTER_HOME_ENV) or str(PROJECT_ROOT),
        DAGSTER_DIR_ENV: str(dagster_dir(home)),
    }


class RunConfigError(ValueError):
    """The run config cannot run: the message names the field, the value and what is allowed."""
