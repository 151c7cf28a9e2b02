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

# Columns the stages add beside the canonical fields.
SOURCE_ROW = "source_row"  # the line of the file a record starts on
ROW_PROBLEM = "row_problem"  # what is wrong with the record's shape (too many fields...), or null
EXTRA_PREFIX = "extra."  # a source column no field maps to; leads keep them as one JSON object, `extra`
# The reject report's own columns: a corrected report dropped back into the landing folder is recognised by
# them, and they are never stored as data; each resubmitted row is linked to the import and line it came from.
REPORT_LINE, REPORT_PROBLEMS, REPORT_IMPORT = "Rejected line", "Why rejected", "Rejected in import"
REPORT_COLUMNS = (REPORT_LINE, REPORT_PROBLEMS, REPORT_IMPORT)
ORIGIN_IMPORT, ORIGIN_ROW = "origin_import", "origin_row"  # a resubmitted record's import (partition) and line
PHONE_E164, EXTRA, OWNER, EXTERNAL_SOURCE = "phone_e164", "extra", "owner", "external_source"
DUPLICATE_OF = "duplicate_of"  # a lead that is not live: it repeats this lead

# A valid row's outcome (`lead_history.action`) and the import count it adds to.
OUTCOME_COUNTS = {
    "inserted": "inserted",
    "updated": "updated",
    "merged": "merged",
    "created": "created",
    "skipped": "duplicates_existing",
    "duplicate_in_file": "duplicates_in_file",
}
OUTCOMES = tuple(OUTCOME_COUNTS)
# An import's counts: every row read is rejected or has one outcome.
COUNT_KEYS = (
    "rows_read",
    "rows_valid",
    "rows_rejected",
    "duplicates_in_file",
    "duplicates_existing",
    "inserted",
    "updated",
    "merged",
    "created",
)

# A lead that matches and can be matched: not soft-deleted, not flagged as another lead's duplicate.
LIVE = sql.SQL("deleted_at IS NULL AND duplicate_of IS NULL")

# What a revert does with each row its import changed (`revert_history.action`), and its counts:
# `overridden` are the removed or restored rows changed since the import (reverted with `force`).
REVERT_OUTCOMES = ("removed", "restored", "conflict", "untouched")
REVERT_COUNTS = (*REVERT_OUTCOMES, "overridden", "rows_changed")

# Unicode White_Space, as a PostgreSQL regular expression: what an email key never contains.
WHITE_SPACE = r"[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"

# How the database computes each match key from a lead's own fields (functions of migration 6).
KEY_EXPRESSIONS = {
    "email_key": sql.SQL("lead_email_key(email)"),
    "external_key": sql.SQL("lead_external_key(external_source, external_id)"),
    "phone_company_key": sql.SQL("lead_phone_company_key(phone_e164, phone, company_name)"),
}

# The email key of any text (migration 6's lead_email_key; lead_email_key_unicode since migration 7).
_EMAIL_KEY_BODY = sql.SQL(
    """$$
    DECLARE
        key text := regexp_replace(email, {white_space}, '', 'g');
    BEGIN
        -- normalize() costs about 1 s per million values; ASCII text is already in NFC.
        IF octet_length(key) <> length(key) THEN
            key := normalize(key, NFC);
        END IF;
        RETURN NULLIF(lower(key), '');
    END $$"""
).format(white_space=sql.Literal(WHITE_SPACE))

# Words of a company's name that say nothing of which company it is (legal forms, articles), as a PostgreSQL
# regular expression over lead_fuzzy_text: "S.A." is "s a" there.
LEGAL_FORMS = (
    r"\m(inc|incorporated|llc|l l c|ltd|limited|corp|corporation|co|company|gmbh|mbh|ag|sa|s a|sas|s a s|sarl|"
    r"spa|s p a|srl|plc|bv|nv|pty|oy|ab|as|kg|the|and|group)\M"
)

# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 7_246_001


def _lead_columns() -> sql.Composable:
    return sql.SQL(",\n").join(sql.SQL("{} text").format(sql.Identifier(f)) for f in CANONICAL_FIELDS)


MIGRATIONS: tuple[tuple[int, str, sql.SQL | sql.Composed], ...] = (
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
    (
        6,
        "match keys computed by the database; leads the application writes need no import bookkeeping",
        sql.SQL(
            """
            -- The one definition of each match key, used by the generated columns below and by the
            -- load's staging table: a lead the application writes is matched exactly like an imported one.
            CREATE FUNCTION lead_email_key(email text) RETURNS text
            LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS {email_key_body};
            CREATE FUNCTION lead_external_key(external_source text, external_id text) RETURNS text
            LANGUAGE sql IMMUTABLE PARALLEL SAFE
            RETURN external_source || ':' || NULLIF(regexp_replace(external_id, {trim}, '', 'g'), '');
            CREATE FUNCTION lead_phone_company_key(phone_e164 text, phone text, company_name text) RETURNS text
            LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
            DECLARE
                number text := COALESCE(phone_e164, NULLIF(regexp_replace(phone, '[^0-9+]', '', 'g'), ''));
                name text := company_name;
            BEGIN
                IF octet_length(name) <> length(name) THEN
                    name := normalize(name, NFKD);  -- accents become marks, which the next step drops
                END IF;
                RETURN number || '|' || NULLIF(regexp_replace(lower(name), '[^[:alnum:]]', '', 'g'), '');
            END $$;
            -- The system an external id belongs to; it was the prefix of the stored key.
            ALTER TABLE leads ADD COLUMN external_source text DEFAULT 'default';
            UPDATE leads SET external_source = left(external_key, -length(lead_external_key('', external_id)))
                WHERE external_key IS NOT NULL AND lead_external_key('', external_id) IS NOT NULL;
            ALTER TABLE leads
                DROP COLUMN email_key,
                DROP COLUMN external_key,
                DROP COLUMN phone_company_key;
            ALTER TABLE leads
                ADD COLUMN email_key text GENERATED ALWAYS AS ({email_key}) STORED,
                ADD COLUMN external_key text GENERATED ALWAYS AS ({external_key}) STORED,
                ADD COLUMN phone_company_key text GENERATED ALWAYS AS ({phone_company_key}) STORED,
                ALTER COLUMN created_by_import DROP NOT NULL,
                ALTER COLUMN updated_by_import DROP NOT NULL,
                ALTER COLUMN source_file DROP NOT NULL,
                ALTER COLUMN source_row DROP NOT NULL;
            CREATE UNIQUE INDEX leads_email_key_live ON leads (email_key)
                WHERE email_key IS NOT NULL AND deleted_at IS NULL AND duplicate_of IS NULL;
            -- The foreign key's check on every DELETE of a lead scanned the whole table for leads
            -- flagged as its duplicates: 2.1 s per application DELETE at 1.75M leads.
            CREATE INDEX leads_duplicate_of ON leads (duplicate_of) WHERE duplicate_of IS NOT NULL;
            -- The weaker keys' indexes are built, concurrently, by the first import that matches by them
            -- (dedupe.ensure_key_indexes): each costs seconds per million leads inserted.
            -- An inserted lead records its import and line itself; lead_history keeps every other outcome.
            CREATE VIEW import_outcomes AS
                SELECT import_id, source_row, lead_id, action, duplicate_of_row, changes FROM lead_history
                UNION ALL
                SELECT l.created_by_import, l.source_row, l.id, 'inserted', NULL, NULL FROM leads l
                WHERE l.created_by_import IS NOT NULL AND NOT EXISTS (
                    SELECT FROM lead_history h WHERE h.import_id = l.created_by_import AND h.source_row = l.source_row
                );
            """
        ).format(
            email_key_body=_EMAIL_KEY_BODY,
            trim=sql.Literal(f"^{WHITE_SPACE}|{WHITE_SPACE}$"),
            **{key: KEY_EXPRESSIONS[key] for key in KEY_EXPRESSIONS},
        ),
    ),
    (
        7,
        "the email key without a function call for printable ASCII addresses",
        sql.SQL(
            """
            -- The same keys as migration 6's function, so no stored key changes. Nearly every address is
            -- printable ASCII (no white space, already NFC): lower() is its key. As a SQL function the
            -- test is inlined into the generated column; the PL/pgSQL call it avoids cost 2.4 s per 750,000
            -- keys, the inlined test 0.3 s (measured: 750,000 generated keys, 1.8 s -> 1.25 s a COPY).
            -- Replaced in place: the generated columns call the function by its identity.
            CREATE FUNCTION lead_email_key_unicode(email text) RETURNS text
            LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS {email_key_body};
            CREATE OR REPLACE FUNCTION lead_email_key(email text) RETURNS text
            LANGUAGE sql IMMUTABLE PARALLEL SAFE
            RETURN CASE WHEN email ~ '[^!-~]' THEN lead_email_key_unicode(email) ELSE NULLIF(lower(email), '') END;
            """
        ).format(email_key_body=_EMAIL_KEY_BODY),
    ),
    (
        8,
        "each sheet of a workbook is an import of its own",
        sql.SQL(
            """
            -- The same bytes are one import per sheet: "" for a CSV, and for workbooks imported before this
            -- migration (their sheet was not recorded). `imports` is the pipeline's own table, not `leads`.
            ALTER TABLE imports ADD COLUMN sheet text NOT NULL DEFAULT '';
            ALTER TABLE imports DROP CONSTRAINT imports_content_hash_key;
            ALTER TABLE imports ADD CONSTRAINT imports_content_hash_sheet_key UNIQUE (content_hash, sheet);
            """
        ),
    ),
    (
        9,
        "rows of a corrected reject report, linked to the import and line they were rejected in",
        sql.SQL(
            """
            CREATE TABLE resubmitted_rows (
                import_id bigint NOT NULL REFERENCES imports (id) ON DELETE CASCADE,
                source_row integer NOT NULL,
                rejected_in text,  -- the partition the report row names, as the user left it
                rejected_in_import bigint REFERENCES imports (id) ON DELETE SET NULL,
                rejected_row integer,
                PRIMARY KEY (import_id, source_row)
            );
            CREATE INDEX resubmitted_rows_rejected_in ON resubmitted_rows (rejected_in_import, rejected_row);
            CREATE OR REPLACE VIEW import_outcomes AS
                SELECT o.*, r.rejected_in_import AS resubmitted_from_import, r.rejected_row AS resubmitted_from_row
                FROM (
                    SELECT import_id, source_row, lead_id, action, duplicate_of_row, changes FROM lead_history
                    UNION ALL
                    SELECT l.created_by_import, l.source_row, l.id, 'inserted', NULL, NULL FROM leads l
                    WHERE l.created_by_import IS NOT NULL AND NOT EXISTS (
                        SELECT FROM lead_history h
                        WHERE h.import_id = l.created_by_import AND h.source_row = l.source_row
                    )
                ) o
                LEFT JOIN resubmitted_rows r ON r.import_id = o.import_id AND r.source_row = o.source_row;
            """
        ),
    ),
    (
        10,
        "an import can be reverted, and its file imported again",
        sql.SQL(
            """
            -- A reverted import stays in the ledger; only live imports claim their partition and bytes.
            ALTER TABLE imports
                ADD COLUMN reverted_at timestamptz,
                -- The earlier, reverted import of the same partition this one imports again.
                ADD COLUMN replaces_import bigint REFERENCES imports (id),
                -- The transaction ids (32-bit, as `xmin` shows them) the load wrote leads under: a lead whose
                -- row version has another `xmin` was changed since, by the application or another import.
                ADD COLUMN xids bigint[];
            ALTER TABLE imports
                DROP CONSTRAINT imports_partition_key_key,
                DROP CONSTRAINT imports_content_hash_sheet_key;
            CREATE UNIQUE INDEX imports_partition_key_live ON imports (partition_key) WHERE reverted_at IS NULL;
            CREATE UNIQUE INDEX imports_content_live ON imports (content_hash, sheet) WHERE reverted_at IS NULL;
            CREATE TABLE import_reverts (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                import_id bigint NOT NULL UNIQUE REFERENCES imports (id),
                run_id text NOT NULL,
                reverted_at timestamptz NOT NULL DEFAULT now(),
                forced boolean NOT NULL,
                counts jsonb NOT NULL
            );
            -- What the revert did with each row the import changed.
            CREATE TABLE revert_history (
                revert_id bigint NOT NULL REFERENCES import_reverts (id),
                source_row integer NOT NULL,
                lead_id bigint,
                action text NOT NULL CHECK (action IN ('removed', 'restored', 'conflict', 'untouched')),
                -- removed: the lead as it was; restored: {field: {from, to}}; conflict: {field: {written,
                -- current}}; untouched: {reason}
                detail jsonb,
                PRIMARY KEY (revert_id, source_row)
            );
            """
        ),
    ),
    (
        11,
        "possible duplicates: the review queue, pairs kept separate, first-name forms, fuzzy comparison keys",
        sql.SQL(
            """
            -- Text as fuzzy comparison sees it: lower case, accents dropped (NFKD, then the combining marks),
            -- punctuation as single spaces. ASCII text skips normalize(), which costs about 1 s per million.
            CREATE FUNCTION lead_fuzzy_text(t text) RETURNS text
            LANGUAGE sql IMMUTABLE PARALLEL SAFE
            RETURN NULLIF(btrim(regexp_replace(
                CASE WHEN t ~ '[^ -~]' THEN regexp_replace(normalize(lower(t), NFKD), '[\u0300-\u036f]', '', 'g')
                     ELSE lower(t) END,
                '[^[:alnum:]]+', ' ', 'g')), '');
            -- A company's name without legal forms, articles, punctuation or spaces: "ACME Inc." = "Acme
            -- Incorporated" = "acme". About 5 us a call: for compared pairs only, never for a whole table.
            CREATE FUNCTION lead_company_key(t text) RETURNS text
            LANGUAGE sql IMMUTABLE PARALLEL SAFE
            RETURN NULLIF(replace(regexp_replace(lead_fuzzy_text(t), {legal_forms}, '', 'g'), ' ', ''), '');
            -- The first word of a company's name (after "the"): what a blocking key may hold of it.
            CREATE FUNCTION lead_company_word(t text) RETURNS text
            LANGUAGE sql IMMUTABLE PARALLEL SAFE
            RETURN NULLIF(split_part(regexp_replace(lead_fuzzy_text(t), '^the ', ''), ' ', 1), '');
            -- The last nine digits of a phone: the same number written with or without its country code.
            CREATE FUNCTION lead_phone_digits(phone_e164 text, phone text) RETURNS text
            LANGUAGE sql IMMUTABLE PARALLEL SAFE
            RETURN CASE WHEN length(regexp_replace(COALESCE(phone_e164, phone), '[^0-9]', '', 'g')) >= 7
                THEN right(regexp_replace(COALESCE(phone_e164, phone), '[^0-9]', '', 'g'), 9) END;
            -- An email's local part without dots and +tags: bob.smith+crm@x = bobsmith@y.
            CREATE FUNCTION lead_email_local(email_key text) RETURNS text
            LANGUAGE sql IMMUTABLE PARALLEL SAFE
            RETURN NULLIF(regexp_replace(split_part(split_part(email_key, '@', 1), '+', 1), '[^[:alnum:]]', '', 'g'), '');
            -- Each form of a first name, and the formal names it is a form of (bob -> robert; robert -> robert).
            CREATE TABLE first_name_forms (
                name text NOT NULL,
                formal text NOT NULL,
                PRIMARY KEY (name, formal)
            );
            -- The review queue: each imported row that probably repeats a live lead, which the application
            -- may read too. `lead_id` is the lead the row became (the candidate itself when auto-merged).
            CREATE TABLE possible_duplicates (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                import_id bigint NOT NULL REFERENCES imports (id),
                source_row integer NOT NULL,
                lead_id bigint NOT NULL,
                candidate_id bigint NOT NULL,
                score real NOT NULL,
                band text NOT NULL CHECK (band IN ('flagged', 'review')),
                reasons jsonb NOT NULL,
                status text NOT NULL DEFAULT 'open'
                    CHECK (status IN ('open', 'merged', 'kept_separate', 'reverted')),
                resolved_at timestamptz,
                resolved_by_run text,
                UNIQUE (import_id, source_row)
            );
            CREATE INDEX possible_duplicates_open ON possible_duplicates (score DESC) WHERE status = 'open';
            -- Pairs a user kept separate (lower id first): never proposed again.
            CREATE TABLE kept_separate (
                lead_id bigint NOT NULL,
                other_id bigint NOT NULL,
                kept_at timestamptz NOT NULL DEFAULT now(),
                run_id text,
                PRIMARY KEY (lead_id, other_id),
                CHECK (lead_id < other_id)
            );
            """
        ).format(legal_forms=sql.Literal(LEGAL_FORMS)),
    ),
    (
        12,
        "possible duplicates: each live lead's values as scoring compares them (lead_comparison)",
        sql.SQL(
            """
            -- Kept by scoring imports (lead_comparison.py); `version` is the lead's xmin the values were
            -- computed from. No foreign key: the application's deletes of leads stay as they were.
            CREATE TABLE lead_comparison (
                lead_id bigint PRIMARY KEY,
                version xid NOT NULL,
                f text, l text, ls text, c text, e text, d text, p text, y text,
                block_name_company text, block_company_first_initial text, block_phone text, block_email_local text
            );
            -- The nickname list is read from the `nicknames` package by the scoring itself now.
            DROP TABLE first_name_forms;
            """
        ),
    ),
    (
        13,
        "possible duplicates: the surname and company block takes the first initial; lead_comparison refilled",
        sql.SQL(
            """
            -- Its blocking keys were computed without the initial: the next scoring import computes every live
            -- lead again (as the first one did). The table is the pipeline's own: the application never waits.
            TRUNCATE lead_comparison;
            """
        ),
    ),
)


def build_index_concurrently(conn: psycopg.Connection, index: str, expression: sql.Composable) -> bool:
    """Build the partial index `index` on live leads' `expression` unless it is there and valid, concurrently
    (writes go on; `conn` in autocommit); returns whether it was built now."""
    valid = conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s", (index,)
    ).fetchone()
    if valid and valid[0]:
        return False
    if valid:  # a build that was interrupted leaves an invalid index behind
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(index)))
    conn.execute(
        sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON leads ({}) WHERE {} IS NOT NULL AND {}").format(
            sql.Identifier(index), expression, expression, LIVE
        )
    )
    return True


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
