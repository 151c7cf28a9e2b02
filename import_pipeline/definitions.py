"""The Dagster code location: the import job, its sensor and the resources they share."""

import dagster as dg

from import_pipeline.config import DATABASE_URL_ENV, HOME_ENV, apply_environment_defaults
from import_pipeline.jobs import import_leads_job
from import_pipeline.resources import LandingFolder, LeadsDatabase, ParquetIOManager
from import_pipeline.sensors import landing_sensor

apply_environment_defaults()

defs = dg.Definitions(
    jobs=[import_leads_job],
    sensors=[landing_sensor],
    resources={
        "leads_db": LeadsDatabase(url=dg.EnvVar(DATABASE_URL_ENV), home=dg.EnvVar(HOME_ENV)),
        "landing": LandingFolder(home=dg.EnvVar(HOME_ENV)),
        "io_manager": ParquetIOManager(home=dg.EnvVar(HOME_ENV)),
    },
)


def resolved_import_leads_job() -> dg.JobDefinition:
    """The import job with the resources above bound; `dg.reconstructable` target for scripts and tests."""
    return defs.get_job_def(import_leads_job.name)
