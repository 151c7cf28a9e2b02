"""The project's dagster.yaml, loaded into a real instance exactly as the CLI and the UI load it."""

from dagster._core.storage.runs.base import RunStorage


def test_instance_dagster_yaml_settings(pipeline):
    instance = pipeline.instance

    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert isinstance(instance.run_storage, RunStorage)
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert instance.run_monitoring_enabled
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert instance.run_retries_retry_on_asset_or_op_failure is False
    # The queue daemon reads the `concurrency:` block through get_concurrency_config, not the coordinator.
    assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 4
