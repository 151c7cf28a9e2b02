"""Tests of import_pipeline, on real PostgreSQL and a real Dagster instance."""
