"""import_pipeline: landed lead files into clean, deduplicated leads in PostgreSQL, with Dagster."""
