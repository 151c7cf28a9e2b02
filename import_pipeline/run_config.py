"""Run config checked whole before a run reads anything: each op's `*Config` with its rules, one plain message."""

from collections.abc import Mapping
from typing import Any

import dagster as dg
import pydantic

from import_pipeline.config import RunConfigError
from import_pipeline.dedupe import DedupeConfig
from import_pipeline.load import LoadConfig
from import_pipeline.parse import ParseConfig
from import_pipeline.validate import ValidateConfig

__all__ = ["OP_CONFIGS", "RunConfigError", "check_against_job", "check_config", "check_run_config"]

OP_CONFIGS: dict[str, type[dg.Config]] = {
    "parse": ParseConfig,
    "validate": ValidateConfig,
    "dedupe": DedupeConfig,
    "load": LoadConfig,
}


def _explained(op: str, error: pydantic.ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(["ops", op, "config", *(str(part) for part in first["loc"])])
    why = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:  # a rule across fields
        return f"{where}: {why}"
    return f"{where} = {first['input']!r}: {why}"


def check_run_config(run_config: Mapping[str, Any]) -> None:
    """Raise RunConfigError for the first setting of `run_config` that no run could use."""
    if not isinstance(run_config, Mapping):
        raise RunConfigError(f"run config must be a mapping (ops: ...), not {type(run_config).__name__}")
    ops = run_config.get("ops") or {}
    if not isinstance(ops, Mapping):
        raise RunConfigError("run config: `ops` must be a mapping of op names to their config")
    for op in ops:
        if op not in OP_CONFIGS:
            raise RunConfigError(f"ops.{op}: no such op with config; the import job's are {', '.join(OP_CONFIGS)}")
    for op, config_class in OP_CONFIGS.items():
        section = ops.get(op) or {}
        values = section.get("config") if isinstance(section, Mapping) else None
        if values is not None and not isinstance(values, Mapping):
            raise RunConfigError(f"ops.{op}.config must be a mapping of settings, not {values!r}")
        unknown = sorted(set(values or {}) - set(config_class.model_fields))
        if unknown:
            allowed = ", ".join(config_class.model_fields)
            raise RunConfigError(f"ops.{op}.config.{unknown[0]}: no such setting; {op} takes {allowed}")
        try:
            config_class.model_validate(dict(values or {}))
        except pydantic.ValidationError as e:
            raise RunConfigError(_explained(op, e)) from None


def check_against_job(job: dg.JobDefinition, run_config: Mapping[str, Any]) -> None:
    """Raise RunConfigError when Dagster's own schema of `job` refuses `run_config` (resources, execution...)."""
    try:
        dg.validate_run_config(job, run_config)
    except dg.DagsterInvalidConfigError as e:
        first = e.errors[0].message if e.errors else str(e)
        raise RunConfigError(f"run config: {' '.join(first.split())}") from None


# Dagster checks the config's shape when a run is launched, but a `*Config`'s rules (ranges, known regions,
# settings that need each other) only when the step that takes it starts: this step checks them all first.
@dg.op
def check_config(context: dg.OpExecutionContext) -> None:
    """Check every step's config before the file is read; a bad setting fails the run at once, not retried."""
    try:
        check_run_config(context.run_config)
    except RunConfigError as e:
        raise dg.Failure(description=str(e), allow_retries=False) from None
