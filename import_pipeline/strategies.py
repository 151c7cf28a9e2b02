"""Strategies: what becomes of each staged row (a new lead, a change to the lead it matches, a duplicate of it),
while the application goes on writing leads."""

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from import_pipeline.database import one_value
from import_pipeline.dedupe import EVERY_ROW, keys_with_email, match_existing, still_matches
from import_pipeline.progress import Laps
from import_pipeline.schema import CANONICAL_FIELDS, EXTERNAL_SOURCE, EXTRA, OWNER, PHONE_E164
from import_pipeline.staging import LEAD_VALUES

if TYPE_CHECKING:  # load.py, which runs these strategies, defines their config
    from import_pipeline.load import LoadConfig

# Rounds of insert, match again and apply before an attempt gives up: each round only handles rows
# whose lead the application inserted, deleted or re-keyed since the previous one.
MAX_ROUNDS = 10
UNDECIDED = sql.SQL("NOT EXISTS (SELECT FROM outcomes o WHERE o.source_row = s.source_row)")
LIVE_EMAIL_INDEX = "leads_email_key_live"


class LostRaces(Exception):
    """Rows kept losing their lead to other sessions' writes for `MAX_ROUNDS` rounds: the attempt starts again."""


def _assign_owners(
    cur: psycopg.Cursor, staging: sql.Identifier, config: "LoadConfig", new_rows: sql.Composable
) -> None:
    """Set the owner of the rows about to become leads."""
    if config.assign == "none":
        return  # staged owners are only filled for `by_column`
    if config.assign == "single":
        cur.execute(sql.SQL("UPDATE {} SET owner = %s").format(staging), (config.owners[0],))
    elif config.assign == "by_column":
        fallback = config.owners[0] if config.owners else None
        cur.execute(sql.SQL("UPDATE {} SET owner = COALESCE(owner, %s)").format(staging), (fallback,))
    else:
        cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(staging, new_rows))
        count = one_value(cur)
        # The rotation row is locked until commit, so concurrent imports continue it fairly.
        cur.execute(
            """
            INSERT INTO owner_rotation (owners, next_index) VALUES (%(owners)s, %(count)s)
            ON CONFLICT (owners) DO UPDATE SET next_index = owner_rotation.next_index + %(count)s
            RETURNING next_index - %(count)s
            """,
            {"owners": json.dumps(config.owners), "count": count},
        )
        start = one_value(cur)
        cur.execute(
            sql.SQL(
                """
                UPDATE {staging} s SET owner = (%(owners)s::text[])[1 + (%(start)s + n.rank - 1) %% %(size)s]
                FROM (SELECT source_row, row_number() OVER (ORDER BY source_row) AS rank FROM {staging} WHERE {new_rows}) n
                WHERE s.source_row = n.source_row
                """
            ).format(staging=staging, new_rows=new_rows),
            {"owners": config.owners, "start": start, "size": len(config.owners)},
        )


def _in_round(round_number: int) -> sql.Composable:
    """The staged rows a round handles: all of them first, then those that lost a race in the round before."""
    if round_number == 0:
        return EVERY_ROW
    return sql.SQL("s.source_row IN (SELECT source_row FROM losers WHERE round = {})").format(sql.Literal(round_number))


def _insert_statement(staging: sql.Identifier, where: sql.Composable, action: str, arbitrated: bool) -> sql.Composed:
    columns = sql.SQL(", ").join(map(sql.Identifier, (*LEAD_VALUES, OWNER, EXTERNAL_SOURCE)))
    insert = sql.SQL(
        """
        INSERT INTO leads ({columns}, duplicate_of, created_by_import, updated_by_import, source_file, source_row)
        SELECT {columns}, {duplicate_of}, %(import_id)s, %(import_id)s, %(source_file)s, source_row
        FROM {staging} s WHERE {where}
        ORDER BY email_key, source_row
        """
    ).format(
        columns=columns,
        duplicate_of=sql.SQL("match_id" if action == "created" else "NULL"),
        staging=staging,
        where=where,
    )
    if not arbitrated:
        return insert
    return sql.SQL(
        """
        WITH inserted AS (
            {insert}
            ON CONFLICT (email_key) WHERE email_key IS NOT NULL AND deleted_at IS NULL AND duplicate_of IS NULL DO NOTHING
            RETURNING id, source_row
        )
        INSERT INTO outcomes (source_row, lead_id, action) SELECT source_row, id, %(action)s FROM inserted
        """
    ).format(insert=insert)


def _insert(
    cur: psycopg.Cursor, staging: sql.Identifier, where: sql.Composable, action: str, import_id: int, source_file: str
) -> None:
    """Insert the staged rows `where` as new leads; a row whose email a live lead took meanwhile is left out."""
    # The live-email index arbitrates against the application: a lead it inserted since matching
    # wins, and the row is matched again. Key order keeps the email index's pages in order as they fill.
    statement = _insert_statement(staging, sql.SQL("{} AND {}").format(where, UNDECIDED), action, arbitrated=True)
    cur.execute(statement, {"import_id": import_id, "source_file": source_file, "action": action})


def _insert_all_new(
    cur: psycopg.Cursor, staging: sql.Identifier, import_id: int, source_file: str
) -> tuple[int, int | None] | None:
    """Insert every unmatched row at once, without arbitration: how many, and the savepoint's transaction id
    (the new leads' `xmin`) if any; None (nothing inserted) when one's email was taken.

    Usually no session took any of them since matching: a plain INSERT, its rows found again by
    `created_by_import`, skips the speculative insertion and the RETURNING of each row (measured: 750k
    leads into 1M, three interleaved runs each on a busy machine: 15.0-19.2 s arbitrated, 10.6-15.1 s plain).
    """
    statement = _insert_statement(staging, sql.SQL("match_id IS NULL"), "inserted", arbitrated=False)
    try:
        with cur.connection.transaction():  # a savepoint: a lost race undoes only this statement
            cur.execute(statement, {"import_id": import_id, "source_file": source_file})
    except psycopg.errors.UniqueViolation as e:
        if e.diag.constraint_name != LIVE_EMAIL_INDEX:
            raise
        return None
    count = cur.rowcount
    if not count:
        return 0, None
    # Rows written in a savepoint carry its own transaction id; a revert tells them from later changes by it.
    cur.execute("SELECT xmin::text::bigint FROM leads WHERE created_by_import = %s LIMIT 1", (import_id,))
    return count, one_value(cur)


def field_values(lead: str, incoming: str, incoming_wins: bool) -> dict[str, sql.Composable]:
    """Each field's new value when the lead (alias `lead`) takes the values of `incoming`: non-empty incoming
    values overwrite (`update`) or only fill empty fields (`merge`)."""
    first, second = (incoming, lead) if incoming_wins else (lead, incoming)
    values: dict[str, sql.Composable] = {
        f: sql.SQL("COALESCE({}, {})").format(sql.Identifier(first, f), sql.Identifier(second, f))
        for f in (*CANONICAL_FIELDS, PHONE_E164)
    }
    # jsonb `||` keeps the right side's value for a key both sides have.
    merged = "COALESCE({l}, '{{}}') || {i}" if incoming_wins else "{i} || COALESCE({l}, '{{}}')"
    values[EXTRA] = sql.SQL("CASE WHEN {i} IS NULL THEN {l} ELSE " + merged + " END").format(
        i=sql.Identifier(incoming, EXTRA), l=sql.Identifier(lead, EXTRA)
    )
    return values


def field_changes(names: Sequence[str]) -> sql.Composed:
    """The fields of `names` whose value differs between the lead's old row `o` and its updated row `u`, as one
    jsonb object of {old, new}."""
    pairs = sql.SQL(", ").join(
        sql.SQL(
            "{name}, CASE WHEN o.{f} IS DISTINCT FROM u.{f} THEN jsonb_build_object('old', o.{f}, 'new', u.{f}) END"
        ).format(name=sql.Literal(f), f=sql.Identifier(f))
        for f in names
    )
    return sql.SQL(
        "(SELECT jsonb_object_agg(key, value) FROM jsonb_each(jsonb_build_object({})) WHERE value <> 'null')"
    ).format(pairs)


def _change(
    config: "LoadConfig",
    import_id: int,
    staging: sql.Identifier,
    keys: Sequence[str],
    scope: sql.Composable = EVERY_ROW,
    on_existing: str | None = None,
) -> tuple[sql.Composed, dict]:
    """The `update`/`merge` statement (`on_existing`, by default the config's): changed leads only, with each
    changed field's old and new value."""
    incoming_wins = (on_existing or config.on_existing) == "update"
    values = field_values("l", "s", incoming_wins)
    if config.reassign_existing:
        values[OWNER] = sql.SQL("COALESCE(s.owner, l.owner)")
    names = list(values)
    changes = field_changes(names)
    # The match keys are generated columns: they follow the fields. `still_matches` is checked again
    # on the row's newest version when the application changed it since matching.
    return sql.SQL(
        """
        WITH old AS (
            SELECT l.* FROM leads l WHERE l.id IN (SELECT match_id FROM {staging} s WHERE {scope} AND {undecided})
        ), changed AS (
            UPDATE leads l SET {assignments}, updated_by_import = %(import_id)s, updated_at = now()
            FROM {staging} s
            WHERE l.id = s.match_id AND {scope} AND {undecided} AND {still_matches}
              AND ({current}) IS DISTINCT FROM ({incoming})
            RETURNING l.*, s.source_row AS staged_row
        )
        INSERT INTO outcomes (source_row, lead_id, action, changes)
        SELECT u.staged_row, u.id, %(action)s, {changes}
        FROM changed u JOIN old o ON o.id = u.id
        """
    ).format(
        staging=staging,
        scope=scope,
        undecided=UNDECIDED,
        still_matches=still_matches(keys),
        assignments=sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(n), values[n]) for n in names),
        current=sql.SQL(", ").join(sql.SQL("l.{}").format(sql.Identifier(n)) for n in names),
        incoming=sql.SQL(", ").join(values[n] for n in names),
        changes=changes,
    ), {"import_id": import_id, "action": "updated" if incoming_wins else "merged"}


def _match_losers_again(
    cur: psycopg.Cursor, staging: sql.Identifier, keys: Sequence[str], keep: str, scope: sql.Composable, import_id: int
) -> None:
    """Match the rows that lost a race to the lead that won it; a lead another row already has makes them its duplicates."""
    cur.execute(sql.SQL("UPDATE {} s SET match_id = NULL, fuzzy_match = false WHERE {}").format(staging, scope))
    match_existing(cur, staging, keys, keep, scope=scope)
    cur.execute(
        sql.SQL(
            """
            WITH wanted AS (
                SELECT match_id FROM {staging} s WHERE {scope} AND match_id IS NOT NULL
            ), taken AS (
                SELECT lead_id, min(source_row) AS by_row FROM (
                    SELECT o.lead_id, o.source_row FROM outcomes o
                    WHERE o.action <> 'duplicate_in_file' AND o.lead_id IN (SELECT match_id FROM wanted)
                    UNION ALL
                    SELECT l.id, l.source_row FROM leads l
                    WHERE l.id IN (SELECT match_id FROM wanted) AND l.created_by_import = %(import_id)s
                    UNION ALL
                    SELECT s.match_id, s.source_row FROM {staging} s
                    WHERE s.match_id IN (SELECT match_id FROM wanted) AND NOT ({scope})
                ) claims GROUP BY lead_id
            ), moved AS (
                INSERT INTO outcomes (source_row, lead_id, action, duplicate_of_row, survivor_row)
                SELECT s.source_row, s.match_id, 'duplicate_in_file', t.by_row, t.by_row
                FROM {staging} s JOIN taken t ON t.lead_id = s.match_id WHERE {scope}
                RETURNING source_row
            )
            DELETE FROM {staging} WHERE source_row IN (SELECT source_row FROM moved)
            """
        ).format(staging=staging, scope=scope),
        {"import_id": import_id},
    )


def apply_strategy(
    cur: psycopg.Cursor,
    staging: sql.Identifier,
    config: "LoadConfig",
    import_id: int,
    source_file: str,
    keys: Sequence[str],
    keep: str,
    lap: "Laps",
    log=None,
    auto_merged: bool = False,
) -> tuple[int, int | None]:
    """Give every staged row its outcome: a new lead, a change to the lead it matches, or a duplicate of it.

    No lock but the rows written: the application may insert, change or delete leads meanwhile. A row
    whose email it took, or whose matched lead it deleted or re-keyed, is matched again in the next
    round. With `auto_merged`, flagged possible duplicates (`fuzzy_match`) are merged into their candidate
    whatever `on_existing`. Returns the leads inserted without an `outcomes` row (see `_insert_all_new`) and the transaction
    id of the savepoint they were inserted in.
    """
    unmatched, matched = sql.SQL("match_id IS NULL"), sql.SQL("match_id IS NOT NULL")
    _assign_owners(cur, staging, config, sql.SQL("TRUE") if config.on_existing == "create" else unmatched)
    all_keys = keys_with_email(keys)
    inserted_plainly, savepoint_xid = 0, None
    for round_number in range(MAX_ROUNDS):
        scope = _in_round(round_number)
        if round_number:
            _match_losers_again(cur, staging, all_keys, keep, scope, import_id)
        plain = _insert_all_new(cur, staging, import_id, source_file) if round_number == 0 else None
        if plain is None:
            _insert(cur, staging, sql.SQL("{} AND {}").format(unmatched, scope), "inserted", import_id, source_file)
        else:
            inserted_plainly, savepoint_xid = plain
        if config.on_existing == "create":
            _insert(cur, staging, sql.SQL("{} AND {}").format(matched, scope), "created", import_id, source_file)
        if round_number == 0:
            # Temporary tables are never analyzed automatically; the joins below need their sizes.
            cur.execute("ANALYZE outcomes")
            lap("insert new leads")
        next_round = {"next": round_number + 1}
        if plain is None:
            cur.execute(
                sql.SQL(
                    "INSERT INTO losers SELECT %(next)s, source_row FROM {} s WHERE {} AND match_id IS NULL AND {}"
                ).format(staging, scope, UNDECIDED),
                next_round,
            )
        if config.on_existing in ("update", "merge"):
            exact = sql.SQL("{} AND NOT s.fuzzy_match").format(scope) if auto_merged else scope
            statement, params = _change(config, import_id, staging, all_keys, exact)
            cur.execute(statement, params)
            if round_number == 0:
                lap(f"{config.on_existing} matched leads")
        if auto_merged:
            # The merge path of `on_existing: merge`: the candidate's values stay, its empty fields are filled.
            fuzzy = sql.SQL("{} AND s.fuzzy_match").format(scope)
            statement, params = _change(config, import_id, staging, all_keys, fuzzy, on_existing="merge")
            cur.execute(statement, params)
            if round_number == 0:
                lap("merge flagged possible duplicates")
        # Matched rows that changed nothing (or strategy `skip`) are duplicates of the lead they match.
        # Under `skip` nothing is written, so a lead the application deletes meanwhile is no race: the
        # same as its deleting the lead just after the import (re-checking each cost 3 s at 1M rows).
        # Under `update`/`merge` a row the UPDATE passed over may have lost its lead: checked again.
        recheck = config.on_existing in ("update", "merge") or auto_merged
        cur.execute(
            sql.SQL(
                """
                INSERT INTO outcomes (source_row, lead_id, action)
                SELECT s.source_row, s.match_id, 'skipped' FROM {staging} s {join}
                WHERE {scope} AND match_id IS NOT NULL AND {undecided} AND {still_matches}
                """
            ).format(
                staging=staging,
                scope=scope,
                undecided=UNDECIDED,
                join=sql.SQL("JOIN leads l ON l.id = s.match_id" if recheck else ""),
                still_matches=still_matches(all_keys) if recheck else sql.SQL("TRUE"),
            )
        )
        if recheck:
            # Left: rows whose lead was deleted or re-keyed since matching.
            cur.execute(
                sql.SQL(
                    "INSERT INTO losers SELECT %(next)s, source_row FROM {} s WHERE {} AND match_id IS NOT NULL AND {}"
                    " ON CONFLICT DO NOTHING"
                ).format(staging, scope, UNDECIDED),
                next_round,
            )
        cur.execute("SELECT count(*) FROM losers WHERE round = %(next)s", next_round)
        lost = one_value(cur)
        lap("skipped rows" if round_number == 0 else f"round {round_number + 1}")
        if not lost:
            return inserted_plainly, savepoint_xid
        if log is not None:
            log.info(f"load: {lost:,} rows lost their lead to another session's write; matching them again")
    raise LostRaces(f"rows still lost their lead to other sessions' writes after {MAX_ROUNDS} rounds")
