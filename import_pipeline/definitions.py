"""The Dagster code location: the import job, its sensor and the resources they share."""

import dagster as dg

from import_pipeline.approval import decline_import_job
from import_pipeline.bucket import BucketStore
from import_pipeline.cleanup import cleanup_job, cleanup_schedule
from import_pipeline.config import (
    DATABASE_URL_ENV,
    DB_RETRY_SECONDS_ENV,
    EMBEDDED_SERVER_ENV,
    HOME_ENV,
    S3_BUCKET_ENV,
    S3_ENDPOINT_ENV,
    S3_PREFIX_ENV,
    SMTP_HOST_ENV,
    SMTP_PORT_ENV,
    SMTP_TO_ENV,
    UI_URL_ENV,
    WEBHOOK_URL_ENV,
    int_setting,
    setting,
)
from import_pipeline.database import LeadsDatabase
from import_pipeline.jobs import approve_import_job, import_leads_job, leads
from import_pipeline.notify import Notifier
from import_pipeline.parts import ParquetIOManager
from import_pipeline.resolve_duplicates import possible_duplicates, resolve_duplicates_job
from import_pipeline.revert import revert_import_job
from import_pipeline.sensors import (
    bucket_sensor,
    import_failed_sensor,
    import_succeeded_sensor,
    landing_sensor,
    possible_duplicates_sensor,
)
from import_pipeline.state import StateFolder

defs = dg.Definitions(
    # Every job in-process, the one the catalog's Materialize launches (`__ASSET_JOB`) too: the multiprocess
    # executor spends about 2.5 s starting each step on two cores.
    executor=dg.in_process_executor,
    assets=[leads, possible_duplicates],
    jobs=[
        import_leads_job,
        approve_import_job,
        decline_import_job,
        revert_import_job,
        resolve_duplicates_job,
        cleanup_job,
    ],
    schedules=[cleanup_schedule],
    sensors=[landing_sensor, bucket_sensor, import_succeeded_sensor, import_failed_sensor, possible_duplicates_sensor],
    resources={
        "leads_db": LeadsDatabase(
            url=setting(DATABASE_URL_ENV),
            home=setting(HOME_ENV),
            retry_seconds=int_setting(DB_RETRY_SECONDS_ENV),
            embedded_server=int_setting(EMBEDDED_SERVER_ENV),
        ),
        "state": StateFolder(home=setting(HOME_ENV)),
        "bucket": BucketStore(
            bucket=setting(S3_BUCKET_ENV), prefix=setting(S3_PREFIX_ENV), endpoint_url=setting(S3_ENDPOINT_ENV)
        ),
        "io_manager": ParquetIOManager(home=setting(HOME_ENV)),
        "notifier": Notifier(
            ui_url=setting(UI_URL_ENV),
            webhook_url=setting(WEBHOOK_URL_ENV),
            smtp_host=setting(SMTP_HOST_ENV),
            smtp_port=int_setting(SMTP_PORT_ENV),
            smtp_to=setting(SMTP_TO_ENV),
        ),
    },
)


def resolved_import_leads_job() -> dg.JobDefinition:
    """The import job with the resources above bound; `dg.reconstructable` target for scripts and tests."""
    return defs.resolve_job_def(import_leads_job.name)


def resolved_revert_import_job() -> dg.JobDefinition:
    """The revert job with the resources above bound; `dg.reconstructable` target for the CLI and tests."""
    return defs.resolve_job_def(revert_import_job.name)
