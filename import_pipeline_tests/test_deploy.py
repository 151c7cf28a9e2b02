"""The Docker set-up in deploy/: its instance loads into a real instance on PostgreSQL, and its files agree.

No Docker daemon here: the images are not built. What can be checked without one is: Dagster's own
loader accepts deploy/dagster.yaml with the environment docker-compose.yaml gives the services, the
compose `init` command really migrates and creates the pool, and every name shared between the files
(service, port, location, network, volume, paths, variables) is the same on both sides.
"""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import psycopg
import pytest
import yaml
from dagster._core.utils import parse_env_var
from psycopg import sql

from import_pipeline import config, schema
from import_pipeline.config import CODE_LOCATION, LOAD_POOL, PROJECT_ROOT, dagster_storage_url

DEPLOY = PROJECT_ROOT / "deploy"
DAGSTER_SERVICES = ("init", "code", "webserver", "daemon")


def _yaml(path: Path):
    return yaml.safe_load(path.read_text())


COMPOSE = _yaml(DEPLOY / "docker-compose.yaml")
INSTANCE_YAML = _yaml(DEPLOY / "dagster.yaml")
LAUNCHER = INSTANCE_YAML["run_launcher"]["config"]

_INTERPOLATION = re.compile(r"\$(?:(\$)|\{(\w+)(?::-([^}]*))?\}|(\w+))")


def _interpolate(value, shell: dict[str, str]) -> str:
    """Compose's `$$`, `$VAR`, `${VAR}` and `${VAR:-default}`; anything else is left and then refused."""

    def substitute(match: re.Match) -> str:
        if match.group(1):
            return "$"
        name, default = match.group(2) or match.group(4), match.group(3)
        return shell.get(name) or (default if default is not None else "")

    text = _INTERPOLATION.sub(substitute, str(value))
    assert "${" not in text, f"interpolation this test does not understand: {value!r}"
    return text


def _environment(service: str, shell: dict[str, str] | None = None) -> dict[str, str]:
    """A service's environment as `docker compose up` gives it, from a shell that sets `shell` only."""
    environment = COMPOSE["services"][service]["environment"]
    assert isinstance(environment, dict)
    return {key: _interpolate(value, shell or {}) for key, value in environment.items()}


def _option(command: list[str], *names: str) -> str:
    """The value following the first of `names` in an argv list."""
    for name in names:
        if name in command:
            return command[command.index(name) + 1]
    raise AssertionError(f"none of {names} in {command}")


def _env_vars_read(node) -> set[str]:
    """Every variable a Dagster config file reads with `{env: NAME}`."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(_env_vars_read(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_env_vars_read(v) for v in node)) if node else set()
    return set()


def _dockerfile() -> tuple[str, dict[str, str], list[str], str]:
    """WORKDIR, ENV assignments, the exec-form CMD and the RUN lines of deploy/Dockerfile."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    workdir = [line.split(None, 1)[1] for line in lines if line.startswith("WORKDIR ")]
    env = dict(pair.split("=", 1) for line in lines if line.startswith("ENV ") for pair in line.split()[1:])
    cmd = [yaml.safe_load(line.split(None, 1)[1]) for line in lines if line.startswith("CMD ")]
    runs = " ".join(line for line in lines if line.startswith("RUN "))
    assert len(workdir) == 1 and len(cmd) == 1
    return workdir[0], env, cmd[0], runs


@pytest.fixture
def deploy_env(pipeline, tmp_path, monkeypatch) -> dict[str, str]:
    """The daemon's compose environment, pointed at this test's databases, state folder and a DAGSTER_HOME
    holding a copy of deploy/dagster.yaml (Dagster writes logs/ beside it)."""
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", dagster_home / "dagster.yaml")
    env = _environment("daemon") | {
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_URL": os.environ["DAGSTER_PG_URL"],
        "IMPORT_PIPELINE_DATABASE_URL": pipeline.leads_url,
        "IMPORT_PIPELINE_HOME": str(pipeline.home),
        "IMPORT_PIPELINE_DAGSTER_DIR": str(pipeline.home / "dagster"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_deploy_instance_loads_on_postgres_with_the_docker_launcher(pipeline, deploy_env):
    root = pipeline.instance  # the root dagster.yaml, loaded by the fixture
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_coordinator.dequeue_interval_seconds == root.run_coordinator.dequeue_interval_seconds
        assert instance.compute_log_manager._base_dir == deploy_env["IMPORT_PIPELINE_DAGSTER_DIR"]
        assert instance.root_directory == deploy_env["IMPORT_PIPELINE_DAGSTER_DIR"]

        launcher = instance.run_launcher
        assert type(launcher).__name__ == "DockerRunLauncher"
        assert launcher.image == deploy_env["IMPORT_PIPELINE_IMAGE"] == "import_pipeline:latest"
        assert launcher.networks == [COMPOSE["networks"]["import_pipeline"]["name"]]
        assert launcher.container_kwargs["volumes"] == [
            f"{COMPOSE['volumes']['import_pipeline_state']['name']}:{_environment('daemon')['IMPORT_PIPELINE_HOME']}"
        ]
        # The launcher copies each variable from the daemon's environment, and refuses a launch when one is unset.
        assert set(launcher.env_vars) <= set(_environment("daemon"))
        passed = dict(parse_env_var(name) for name in launcher.env_vars)
        assert passed == {name: deploy_env[name] for name in launcher.env_vars}
        # Run containers load the instance (every `{env: X}` of the file) and the code (every variable config.py names).
        project_vars = {value for name, value in vars(config).items() if name.endswith("_ENV")}
        assert project_vars | _env_vars_read(INSTANCE_YAML) | {"DAGSTER_HOME"} <= set(launcher.env_vars)

        # Same queue, tag limit, pool limit, monitoring and retries as `import-pipeline dev`.
        assert instance.get_concurrency_config() == root.get_concurrency_config()
        assert instance.get_concurrency_config().run_queue_config.tag_concurrency_limits  # not two empty defaults
        assert instance.run_monitoring_settings == root.run_monitoring_settings
        assert instance.run_monitoring_enabled and instance.run_monitoring_start_timeout_seconds == 180
        assert (instance.run_retries_enabled, instance.run_retries_max_retries) == (True, 2)
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        for block in ("telemetry", "nux"):
            assert instance.get_settings(block) == root.get_settings(block) == {"enabled": False}

        # The yaml's comment: Docker could resume a dead run in place, but the import job's in-process
        # executor would redo every step, so resuming stays off and run retries re-execute from failure.
        assert launcher.supports_resume_run
        assert instance.run_monitoring_max_resume_run_attempts == 0
        from import_pipeline.jobs import import_leads_job

        assert import_leads_job.executor_def.name == "in_process"


def test_deploy_instance_differs_from_the_root_dagster_yaml_only_by_its_run_launcher():
    # A block added to or changed in one file and not the other (a new limit, an interval) fails here.
    root = _yaml(PROJECT_ROOT / "dagster.yaml")
    assert "run_launcher" not in root
    for block in sorted((set(root) | set(INSTANCE_YAML)) - {"run_launcher"}):
        assert INSTANCE_YAML.get(block) == root.get(block), block
    assert {"storage", "run_coordinator", "concurrency", "run_monitoring", "run_retries"} <= set(root)


def test_deploy_init_service_migrates_and_creates_the_load_pool(pipeline, deploy_env, server_url):
    empty = f"deploy_leads_{os.getpid()}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(empty)))
    leads_url = server_url.replace("/postgres?", f"/{empty}?", 1)
    pipeline.instance.event_log_storage.delete_concurrency_limit(LOAD_POOL)
    assert LOAD_POOL not in pipeline.instance.event_log_storage.get_concurrency_keys()

    command = COMPOSE["services"]["init"]["command"]
    assert command[0] == "import-pipeline"
    done = subprocess.run(
        [sys.executable, "-m", "import_pipeline.cli", *command[1:]],
        env=os.environ
        | {"IMPORT_PIPELINE_DATABASE_URL": leads_url, "IMPORT_PIPELINE_DAGSTER_HOME": deploy_env["DAGSTER_HOME"]},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr

    with psycopg.connect(leads_url) as conn:
        applied = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert applied == [version for version, _name, _statement in schema.MIGRATIONS]
    assert pipeline.instance.event_log_storage.get_concurrency_info(LOAD_POOL).slot_count == 2


def test_deploy_workspace_and_code_server_agree():
    code = COMPOSE["services"]["code"]["command"]
    (entry,) = _yaml(DEPLOY / "workspace.yaml")["load_from"]
    server = entry["grpc_server"]
    assert server["host"] == "code" and "code" in COMPOSE["services"]
    assert _option(code, "-h", "--host") == "0.0.0.0"
    assert server["port"] == int(_option(code, "-p", "--port")) == 4000
    assert server["location_name"] == _option(code, "--location-name") == CODE_LOCATION
    # The same module as `import-pipeline dev`'s workspace.yaml and pyproject's [tool.dagster].
    (local,) = _yaml(PROJECT_ROOT / "workspace.yaml")["load_from"]
    assert _option(code, "-m", "--module-name") == local["python_module"]["module_name"]
    assert local["python_module"]["location_name"] == CODE_LOCATION
    assert code[:3] == ["dagster", "code-server", "start"]


def test_deploy_dockerfile_matches_compose():
    workdir, env, cmd, runs = _dockerfile()
    # The image's default command is the code server; the compose service states it explicitly.
    assert cmd == COMPOSE["services"]["code"]["command"]
    # `COPY . WORKDIR`: deploy/ of the repository is WORKDIR/deploy in the image, and DAGSTER_HOME points there.
    assert f"COPY . {workdir}" in (DEPLOY / "Dockerfile").read_text()
    dagster_home = env["DAGSTER_HOME"]
    assert dagster_home == f"{workdir}/deploy"
    for service in DAGSTER_SERVICES:
        assert _environment(service)["DAGSTER_HOME"] == dagster_home
        # `import-pipeline` commands in the containers (init among them) use the same instance.
        assert _environment(service)["IMPORT_PIPELINE_DAGSTER_HOME"] == dagster_home
    for service in ("webserver", "daemon"):
        assert _option(COMPOSE["services"][service]["command"], "-w", "--workspace") == f"{dagster_home}/workspace.yaml"
    assert COMPOSE["services"]["webserver"]["command"][0] == "dagster-webserver"
    assert COMPOSE["services"]["daemon"]["command"][:2] == ["dagster-daemon", "run"]
    # The run launcher's package: the version pinned in the image = the dev extra = what this test ran with.
    pin = re.search(r"dagster-docker==([\w.]+)", runs).group(1)
    dev = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert f"dagster-docker=={pin}" in dev and version("dagster-docker") == pin
    assert "pip install ." in runs
    # The image installs the versions this suite runs with: every package installed here is pinned at its version.
    assert "-c deploy/constraints.txt" in runs
    pins = dict(
        line.split("==")
        for line in (DEPLOY / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for name in ("dagster", "dagster-postgres", "polars", "pandera", "psycopg", "phonenumbers", "dagster-docker"):
        assert pins[name] == version(name), name


def test_deploy_compose_network_volume_and_environment_agree_with_the_instance():
    services = COMPOSE["services"]
    shell_free = {service: _environment(service) for service in DAGSTER_SERVICES}
    # Every Dagster container gets the same environment, including every `{env: X}` the instance reads.
    reads = _env_vars_read(INSTANCE_YAML)
    assert reads >= {"DAGSTER_PG_URL", "IMPORT_PIPELINE_DAGSTER_DIR", "IMPORT_PIPELINE_IMAGE"}
    for service, env in shell_free.items():
        assert env == shell_free["daemon"], service
        assert reads <= set(env), service
        assert all(env[name] for name in reads), service
        # Built once and reused: the run containers start from the image the services run.
        assert _interpolate(services[service]["image"], {}) == env["IMPORT_PIPELINE_IMAGE"]
        assert services[service]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / services[service]["build"]["context"] / "deploy" / "Dockerfile").is_file()

    # One network, under the fixed name the launcher attaches run containers to.
    ((network_key, network),) = COMPOSE["networks"].items()
    assert network["name"] == LAUNCHER["network"]
    for service, definition in services.items():
        assert definition["networks"] == [network_key], service

    # The state volume: mounted by name at IMPORT_PIPELINE_HOME wherever state is read or written.
    home = shell_free["daemon"]["IMPORT_PIPELINE_HOME"]
    volume_name = COMPOSE["volumes"]["import_pipeline_state"]["name"]
    assert LAUNCHER["container_kwargs"]["volumes"] == [f"{volume_name}:{home}"]
    for service in ("code", "webserver", "daemon"):
        assert f"import_pipeline_state:{home}" in services[service]["volumes"], service
    # The IO manager, parse's work folder and the cleanup use $IMPORT_PIPELINE_HOME/dagster, not the variable.
    assert shell_free["daemon"]["IMPORT_PIPELINE_DAGSTER_DIR"] == f"{home}/dagster"
    assert shell_free["daemon"]["IMPORT_PIPELINE_LANDING_DIR"] in ("", f"{home}/landing")
    # The daemon launches run containers; the webserver stops them when a run is terminated.
    for service in ("daemon", "webserver"):
        assert "/var/run/docker.sock:/var/run/docker.sock" in services[service]["volumes"], service
    # An empty port would fail EnvVar.int in the notifier.
    assert int(shell_free["daemon"]["IMPORT_PIPELINE_SMTP_PORT"]) == 25


def test_deploy_compose_databases_and_start_order():
    services = COMPOSE["services"]
    postgres = services["postgres"]
    env = _environment("daemon", {"POSTGRES_PASSWORD": "s3cret"})
    pg = _environment("postgres", {"POSTGRES_PASSWORD": "s3cret"})
    leads, dagster = urlsplit(env["IMPORT_PIPELINE_DATABASE_URL"]), urlsplit(env["DAGSTER_PG_URL"])
    for url in (leads, dagster):
        assert (url.hostname, url.port) == ("postgres", 5432)
        assert (
            (url.username, url.password)
            == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
            == ("import_pipeline", "s3cret")
        )
    assert leads.path == f"/{pg['POSTGRES_DB']}"
    # Dagster's database is created by the init script the postgres image runs on first start.
    (init_sql,) = [v.split(":")[0] for v in postgres["volumes"] if "docker-entrypoint-initdb.d" in v]
    created = re.findall(r"CREATE DATABASE (\w+)", (DEPLOY / init_sql).read_text())
    assert dagster.path == f"/{created[0]}" and created != [pg["POSTGRES_DB"]]
    # dagster-postgres needs psycopg2 (the root dagster.yaml's note): the URL is already in that form.
    assert (
        dagster.scheme == "postgresql+psycopg2" and dagster_storage_url(env["DAGSTER_PG_URL"]) == env["DAGSTER_PG_URL"]
    )
    assert leads.scheme == "postgresql"
    # postgres 18+ images refuse a volume at the old /var/lib/postgresql/data.
    assert int(postgres["image"].split(":")[1].split(".")[0]) >= 18
    assert any(v.endswith(":/var/lib/postgresql") for v in postgres["volumes"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])

    assert services["init"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["init"]["restart"] == "no"
    for service in ("code", "webserver", "daemon"):
        assert services[service]["depends_on"]["init"] == {"condition": "service_completed_successfully"}, service
