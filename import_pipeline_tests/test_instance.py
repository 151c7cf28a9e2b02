"""The project's dagster.yaml, loaded into a real instance exactly as the CLI and the UI load it."""

import dagster as dg
import psycopg

from import_pipeline.embedded_server import bulk_load_settings, start_embedded_server


def test_instance_dagster_yaml_settings(pipeline):
    instance = pipeline.instance

    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert instance.run_monitoring_enabled
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert instance.run_retries_retry_on_asset_or_op_failure is False
    # The queue daemon reads the `concurrency:` block through get_concurrency_config, not the coordinator.
    queue = instance.get_concurrency_config().run_queue_config
    assert queue.max_concurrent_runs == 4
    assert instance.run_coordinator.dequeue_interval_seconds == 1
    assert [(t["key"], t["value"], t["limit"]) for t in queue.tag_concurrency_limits] == [
        ("import_pipeline/target", "leads", 3)
    ]
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 2
    # Created up front (as `import-pipeline` does), so concurrent first loads don't race to create it.
    assert instance.event_log_storage.get_concurrency_info("leads_db").slot_count == 2


def test_instance_definitions_are_loadable():
    from import_pipeline import definitions

    dg.Definitions.validate_loadable(definitions.defs)
    assert {job.name for job in definitions.defs.jobs} == {
        "import_leads_job",
        "approve_import_job",
        "decline_import_job",
        "revert_import_job",
        "resolve_duplicates_job",
        "cleanup_job",
    }
    assert {sensor.name for sensor in definitions.defs.sensors} == {
        "landing_sensor",
        "bucket_sensor",
        "import_succeeded_sensor",
        "import_failed_sensor",
        "possible_duplicates_sensor",
    }


def test_instance_imports_carry_the_queue_tag_and_the_load_pool():
    from import_pipeline.jobs import import_leads_job, leads

    assert import_leads_job.tags["import_pipeline/target"] == "leads"
    assert leads.node_def.node_named("load").definition.pool == "leads_db"


def test_instance_embedded_server_is_tuned_for_bulk_loads(tmp_path):
    url = start_embedded_server(tmp_path / "home")

    with psycopg.connect(url) as conn:
        live = dict(
            conn.execute(
                "SELECT name, current_setting(name) FROM unnest(%s::text[]) name",
                (["max_wal_size", "checkpoint_timeout"],),
            ).fetchall()
        )
        # shared_buffers is read at server start: it is written for the next one.
        written = dict(
            conn.execute(
                "SELECT name, setting FROM pg_file_settings WHERE applied OR name = 'shared_buffers'"
            ).fetchall()
        )
    assert live == {"max_wal_size": "8GB", "checkpoint_timeout": "30min"}
    assert written["shared_buffers"] == bulk_load_settings()["shared_buffers"]
