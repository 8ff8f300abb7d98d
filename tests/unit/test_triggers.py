"""SQLite triggers to PL/pgSQL: the translation is plain data, checked here without a server."""

from __future__ import annotations

import pytest

from tasks.core.sqlddl import DDLError, Untranslatable
from tasks.core.triggers import function_body, translate_trigger, trigger_sql

COLUMNS = {
    "items": {"id": "bigint", "price": "double precision", "flag": "boolean", "at": "timestamp"},
    "log book": {"id": "bigint", "item_id": "bigint", "note": "text", "at": "timestamp"},
}
NAMES = {n.lower(): n for t, cols in COLUMNS.items() for n in (t, *cols)}


def tr(sql: str):
    return translate_trigger(sql, lambda n: NAMES.get(n.lower()), COLUMNS, frozenset({"flag"}))


def test_statements_keep_their_meaning_over_new_and_old():
    t = tr(
        "CREATE TRIGGER IF NOT EXISTS main.t1 AFTER UPDATE OF Price ON Items FOR EACH ROW"
        " WHEN NEW.price <> OLD.price AND new.flag = 1 BEGIN"
        " UPDATE items SET at = CURRENT_TIMESTAMP, flag = 0 WHERE id = NEW.id;"
        " INSERT INTO \"log book\" (item_id, note, at) VALUES (OLD.id, 'was ' || OLD.price, datetime('now'));"
        " DELETE FROM \"log book\" WHERE item_id = OLD.id AND note = 'x';"
        " END;"
    )
    assert (t.name, t.table, t.timing, t.event) == ("t1", "items", "AFTER", 'UPDATE OF "price"')
    assert t.when == 'NEW."price" <> OLD."price" AND NEW."flag" = TRUE'
    update, insert, delete = t.statements
    # a timestamp column gets a timestamp, a boolean column a boolean: no runtime cast errors
    assert update == (
        'UPDATE "items" SET "at" = date_trunc(\'second\', now() AT TIME ZONE \'UTC\'), "flag" = FALSE'
        ' WHERE "id" = NEW."id";'
    )
    assert insert.startswith('INSERT INTO "log book" ("item_id", "note", "at") VALUES (OLD."id",')
    assert insert.endswith("date_trunc('second', now() AT TIME ZONE 'UTC'));")
    assert delete == 'DELETE FROM "log book" WHERE "item_id" = OLD."id" AND "note" = \'x\';'


def test_raise_guards_become_if_then_raise_and_ignore_skips_the_row():
    abort = tr(
        "CREATE TRIGGER g BEFORE INSERT ON items BEGIN"
        " SELECT RAISE(ABORT, 'it''s negative') WHERE NEW.price < 0;"
        " SELECT CASE WHEN NEW.price > 100 THEN RAISE(FAIL, 'too big') END;"
        " END"
    )
    assert abort.timing == "BEFORE" and abort.event == "INSERT"
    assert abort.statements == (
        "IF (NEW.\"price\" < 0) THEN RAISE EXCEPTION USING MESSAGE = 'it''s negative'; END IF;",
        "IF (NEW.\"price\" > 100) THEN RAISE EXCEPTION USING MESSAGE = 'too big'; END IF;",
    )
    ignore = tr(
        'CREATE TRIGGER k BEFORE DELETE ON items BEGIN SELECT RAISE(IGNORE) FROM "log book"'
        " WHERE item_id = OLD.id; END"
    )
    body = function_body(ignore)
    assert 'IF EXISTS (SELECT 1 FROM "log book" WHERE ("item_id" = OLD."id")) THEN' in body
    assert "RETURN NULL; END IF;" in body  # the row is skipped
    assert body.rstrip().endswith("RETURN OLD;\nEND")  # otherwise the delete goes ahead


def test_probes_are_the_statements_with_new_and_old_as_typed_nulls():
    t = tr(
        "CREATE TRIGGER p BEFORE UPDATE ON items BEGIN"
        " SELECT RAISE(ABORT, 'no') WHERE NEW.flag = 1 AND OLD.price > 2;"
        " UPDATE items SET at = CURRENT_TIMESTAMP WHERE id = NEW.id;"
        ' DELETE FROM "log book" WHERE item_id = OLD.id; END'
    )
    assert t.probes == (
        "SELECT (CAST(NULL AS boolean) = TRUE AND CAST(NULL AS double precision) > 2)",
        "UPDATE \"items\" SET \"at\" = date_trunc('second', now() AT TIME ZONE 'UTC')"
        ' WHERE "id" = CAST(NULL AS bigint)',
        'DELETE FROM "log book" WHERE "item_id" = CAST(NULL AS bigint)',
    )
    with pytest.raises(Untranslatable, match=r"NEW\.nope"):
        tr(
            "CREATE TRIGGER q AFTER INSERT ON items BEGIN DELETE FROM items WHERE id = NEW.nope; END"
        )


def test_the_body_never_recurses_and_before_triggers_keep_the_row():
    t = tr("CREATE TRIGGER touch UPDATE ON items BEGIN UPDATE items SET flag = 1; END")
    assert t.timing == "BEFORE"  # SQLite's default
    body = function_body(t)
    guard = body.split("current_setting('", 1)[1].split("'", 1)[0]
    assert guard.startswith("shipyard.trigger_")
    assert body.index(f"set_config('{guard}', 'on', true)") < body.index("UPDATE")
    assert body.count(f"set_config('{guard}', '', true)") == 1
    assert "RETURN NEW;" in body
    after = tr("CREATE TRIGGER a AFTER DELETE ON items BEGIN DELETE FROM items; END")
    assert "RETURN NULL;\nEND" in function_body(after)


def test_created_disabled_with_hostile_names_quoted_and_a_safe_dollar_tag():
    t = tr(
        'CREATE TRIGGER "x"" ; DROP TABLE items; --" AFTER INSERT ON "log book" BEGIN'
        " INSERT INTO items (id, price) VALUES (NEW.id, length('$shipyard$')); END"
    )
    create_fn, create_trigger, disable = trigger_sql(t, "stage", '"app", public')
    assert create_fn.startswith('CREATE FUNCTION "stage"."x"" ; DROP TABLE items; --"()')
    assert 'SET search_path = "app", public AS $shipyard_$' in create_fn
    assert create_fn.endswith("$shipyard_$")
    assert 'CREATE TRIGGER "x"" ; DROP TABLE items; --" AFTER INSERT ON "stage"."log book"' in (
        create_trigger
    )
    assert disable == 'ALTER TABLE "stage"."log book" DISABLE TRIGGER "x"" ; DROP TABLE items; --"'


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("CREATE TRIGGER v INSTEAD OF INSERT ON items BEGIN SELECT 1; END", Untranslatable),
        ("CREATE TRIGGER s AFTER INSERT ON items BEGIN SELECT 1; END", Untranslatable),
        (
            "CREATE TRIGGER o AFTER INSERT ON items BEGIN UPDATE OR IGNORE items SET flag = 0; END",
            Untranslatable,
        ),
        (
            "CREATE TRIGGER r AFTER INSERT ON items BEGIN REPLACE INTO items (id) VALUES (1); END",
            Untranslatable,
        ),
        (
            "CREATE TRIGGER j AFTER INSERT ON items BEGIN UPDATE items SET price = json_extract(NEW.price, '$'); END",
            Untranslatable,
        ),
        ("CREATE TRIGGER m AFTER INSERT ON missing BEGIN DELETE FROM items; END", Untranslatable),
        (
            "CREATE TRIGGER c AFTER INSERT ON items BEGIN UPDATE items SET nope = 1; END",
            Untranslatable,
        ),
        ("CREATE TRIGGER e AFTER INSERT ON items BEGIN END", DDLError),
        ("CREATE TRIGGER b AFTER INSERT ON items DELETE FROM items", DDLError),
        (
            "CREATE TRIGGER w AFTER INSERT ON items BEGIN WITH x AS (SELECT 1) DELETE FROM items; END",
            Untranslatable,
        ),
    ],
)
def test_what_has_no_faithful_translation_is_refused(sql, error):
    with pytest.raises(error):
        tr(sql)


def test_a_name_postgresql_would_truncate_is_refused_at_plan_time():
    with pytest.raises(ValueError, match="63 bytes"):
        tr(f"CREATE TRIGGER {'x' * 64} AFTER INSERT ON items BEGIN DELETE FROM items; END")


def test_date_functions_read_new_and_old_timestamp_columns():
    t = translate_trigger(
        "CREATE TRIGGER d AFTER UPDATE ON items WHEN NEW.at > datetime(OLD.at, '+1 hour') BEGIN"
        ' INSERT INTO "log book" (item_id, note, at)'
        " VALUES (NEW.id, 'day ' || date(NEW.at), datetime(NEW.at, 'start of day'));"
        " END",
        lambda n: NAMES.get(n.lower()),
        COLUMNS,
        column_types={"at": "timestamp"},
    )
    assert t.when == ("NEW.\"at\" > date_trunc('second', (OLD.\"at\" + interval '1 hour'))")
    assert t.statements[0] == (
        'INSERT INTO "log book" ("item_id", "note", "at") VALUES (NEW."id",'
        " 'day ' || to_char(NEW.\"at\", 'YYYY-MM-DD'),"
        " date_trunc('second', date_trunc('day', NEW.\"at\")));"
    )
    # the probes PostgreSQL type-checks read the same functions of typed NULLs
    assert any("to_char(CAST(NULL AS timestamp), 'YYYY-MM-DD')" in p for p in t.probes)


def test_is_not_compares_any_values_null_safely():
    t = tr(
        "CREATE TRIGGER p AFTER UPDATE ON items WHEN NEW.price IS NOT OLD.price"
        " BEGIN UPDATE items SET flag = 1 WHERE id = NEW.id; END"
    )
    assert t.when == 'NEW."price" IS DISTINCT FROM OLD."price"'
