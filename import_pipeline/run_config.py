"""Run config checked whole before a run reads anything: each op's `*Config` with its rules, one plain message.

The import's steps are ops inside the graph-backed `leads` asset, so the job's own form nests them:
`ops: leads: ops: parse: config: ...`. Users may write the short form `ops: parse: config: ...` (the CLI's
`--config`, `import_file`); `job_run_config` turns either into the job's form.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg
import pydantic

from import_pipeline.archive import ArchiveConfig
from import_pipeline.config import RunConfigError
from import_pipeline.dedupe import DedupeConfig
from import_pipeline.load import LoadConfig
from import_pipeline.parse import ParseConfig
from import_pipeline.validate import ValidateConfig

__all__ = [
    "OP_CONFIGS",
    "RunConfigError",
    "check_against_job",
    "check_config",
    "check_run_config",
    "job_run_config",
    "short_form",
]

ASSET_NODE = "leads"  # the graph-backed asset's node: its steps are `leads.parse`, `leads.load`...
STEP_CONFIGS: dict[str, type[dg.Config]] = {
    "parse": ParseConfig,
    "validate": ValidateConfig,
    "dedupe": DedupeConfig,
    "load": LoadConfig,
    "archive_file": ArchiveConfig,
}
OP_CONFIGS = STEP_CONFIGS


def short_form(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """Each op's section by its short name (`parse`, `reject_rate`...), from either form of run config."""
    ops = dict(run_config.get("ops") or {})
    nested = ops.pop(ASSET_NODE, None)
    if nested is not None:
        if not isinstance(nested, Mapping) or not isinstance(nested.get("ops") or {}, Mapping):
            raise RunConfigError(f"ops.{ASSET_NODE} must be a mapping `ops:` of the import's steps")
        for op, section in (nested.get("ops") or {}).items():
            ops[op] = section
    return ops


def job_run_config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """`run_config` in the import job's own form (the steps' sections under `ops: leads: ops:`)."""
    ops = short_form(run_config)
    steps = {op: ops.pop(op) for op in list(ops) if op in STEP_CONFIGS}
    nested = {ASSET_NODE: {"ops": steps}} if steps else {}
    return {**run_config, "ops": {**ops, **nested}} if steps or ops else dict(run_config)


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
    if not isinstance(run_config.get("ops") or {}, Mapping):
        raise RunConfigError("run config: `ops` must be a mapping of op names to their config")
    ops = short_form(run_config)
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
    if not context.has_partition_key:
        raise dg.Failure(
            description="This run has no partition, so it does not know which file to import. Choose the file's "
            "partition at the top of the Launchpad, or open the `leads` asset, press Materialize and pick the "
            "file (Add partition takes a file name from the landing folder).",
            allow_retries=False,
        )
    try:
        check_run_config(context.run_config)
    except RunConfigError as e:
        raise dg.Failure(description=str(e), allow_retries=False) from None


def with_plan(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """`run_config` with the load as a plan (`load: config: plan: true`): the same load, rolled back."""
    ops = short_form(run_config)
    load = dict(ops.get("load") or {})
    load["config"] = {**(load.get("config") or {}), "plan": True}
    return job_run_config({**run_config, "ops": {**ops, "load": load}})
