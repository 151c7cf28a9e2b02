-- Run once by the postgres image on an empty data directory: Dagster's own storage (DAGSTER_PG_URL)
-- lives beside the leads database (POSTGRES_DB).
CREATE DATABASE dagster;
