"""The leads database: canonical lead fields and the versioned migrations that create its tables."""

import psycopg
from psycopg import sql

CANONICAL_FIELDS = (
    "company_name",
    "first_name",
    "last_name",
    "email",
    "phone",
    "title",
    "industry",
    "company_website",
    "city",
    "state",
    "country",
    "external_id",
    "notes",
)
DEFAULT_MAX_LENGTH = 255
MAX_LENGTH = {field: DEFAULT_MAX_LENGTH for field in CANONICAL_FIELDS} | {"email": 254, "notes": 10_000}

# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 7_246_001


def _lead_columns() -> sql.Composable:
    return sql.SQL(",\n").join(sql.SQL("{} text").format(sql.Identifier(f)) for f in CANONICAL_FIELDS)


MIGRATIONS: tuple[tuple[int, str, sql.Composable], ...] = (
    (
        1,
        "imports, leads and rejected rows",
        sql.SQL(
            """
            CREATE TABLE imports (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                partition_key text NOT NULL UNIQUE,
                content_hash text NOT NULL UNIQUE,
                run_id text NOT NULL,
                source_file text NOT NULL,
                imported_at timestamptz NOT NULL DEFAULT now(),
                counts jsonb NOT NULL DEFAULT '{{}}'
            );
            CREATE TABLE leads (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                {lead_columns},
                email_key text,
                created_by_import bigint NOT NULL REFERENCES imports (id),
                updated_by_import bigint NOT NULL REFERENCES imports (id),
                imported_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now(),
                source_file text NOT NULL,
                source_row integer NOT NULL,
                deleted_at timestamptz
            );
            -- Soft-deleted leads neither match nor block a new lead with the same email.
            CREATE UNIQUE INDEX leads_email_key_live ON leads (email_key)
                WHERE email_key IS NOT NULL AND deleted_at IS NULL;
            CREATE INDEX leads_created_by_import ON leads (created_by_import);
            CREATE TABLE rejected_rows (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                import_id bigint NOT NULL REFERENCES imports (id) ON DELETE CASCADE,
                source_row integer NOT NULL,
                raw_values jsonb NOT NULL,
                reasons jsonb NOT NULL
            );
            CREATE INDEX rejected_rows_import ON rejected_rows (import_id, source_row);
            """
        ).format(lead_columns=_lead_columns()),
    ),
    (
        2,
        "normalized phone and the columns no field maps to",
        sql.SQL(
            """
            ALTER TABLE leads
                ADD COLUMN phone_e164 text,
                ADD COLUMN extra jsonb;
            """
        ),
    ),
    (
        3,
        "match keys, possible duplicates, owners and the per-lead audit trail",
        sql.SQL(
            """
            ALTER TABLE leads
                ADD COLUMN external_key text,
                ADD COLUMN phone_company_key text,
                ADD COLUMN duplicate_of bigint REFERENCES leads (id),
                ADD COLUMN owner text;
            -- Leads flagged as possible duplicates (strategy `create`) may share a key with the lead they match.
            DROP INDEX leads_email_key_live;
            CREATE UNIQUE INDEX leads_email_key_live ON leads (email_key)
                WHERE email_key IS NOT NULL AND deleted_at IS NULL AND duplicate_of IS NULL;
            CREATE INDEX leads_external_key_live ON leads (external_key)
                WHERE external_key IS NOT NULL AND deleted_at IS NULL AND duplicate_of IS NULL;
            CREATE INDEX leads_phone_company_key_live ON leads (phone_company_key)
                WHERE phone_company_key IS NOT NULL AND deleted_at IS NULL AND duplicate_of IS NULL;
            CREATE TABLE lead_history (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                import_id bigint NOT NULL REFERENCES imports (id) ON DELETE CASCADE,
                source_row integer NOT NULL,
                lead_id bigint REFERENCES leads (id),
                action text NOT NULL CHECK (action IN
                    ('inserted', 'updated', 'merged', 'created', 'skipped', 'duplicate_in_file')),
                duplicate_of_row integer,
                changes jsonb,
                -- One outcome per source row per import: a replayed load cannot add a second.
                UNIQUE (import_id, source_row)
            );
            CREATE INDEX lead_history_lead ON lead_history (lead_id);
            -- Where round-robin owner assignment continues from, across imports.
            CREATE TABLE owner_rotation (
                owners text PRIMARY KEY,
                next_index bigint NOT NULL DEFAULT 0
            );
            """
        ),
    ),
    (
        4,
        "no per-row foreign-key checks on the bulk-loaded provenance and history columns",
        sql.SQL(
            """
            -- Each checked reference cost about 5.5 s per million rows loaded (measured: 2 references,
            -- 13.4 s against 2.1 s). Only the load writes these columns, in the transaction that
            -- creates the import they point at, so the references hold by construction.
            ALTER TABLE leads
                DROP CONSTRAINT leads_created_by_import_fkey,
                DROP CONSTRAINT leads_updated_by_import_fkey;
            ALTER TABLE lead_history
                DROP CONSTRAINT lead_history_import_id_fkey,
                DROP CONSTRAINT lead_history_lead_id_fkey;
            CREATE INDEX lead_history_import ON lead_history (import_id);
            """
        ),
    ),
    (
        5,
        "no second index on lead_history.import_id",
        sql.SQL(
            """
            -- UNIQUE (import_id, source_row) serves lookups and deletes by import already; the extra
            -- index cost about 3 s and 63 MB of WAL per million history rows.
            DROP INDEX lead_history_import;
            """
        ),
    ),
)


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply the migrations this database lacks, in order; return the versions applied."""
    applied_now = []
    with conn.transaction():
        # Serialises concurrent starts (webserver, daemon and runs all migrate on first use).
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, statement in MIGRATIONS:
            if version in done:
                continue
            conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied_now.append(version)
    return applied_now
