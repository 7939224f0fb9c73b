"""Schema creation and migration on every backend (storage.migrations)."""

from __future__ import annotations

import pytest
from peewee import SchemaManager

from storage import schema_v1
from storage.db import open_database
from storage.migrations import (
    LATEST,
    LOOKUP_INDEXES,
    STEPS,
    SchemaError,
    check_schema,
    schema_version,
    upgrade,
)
from storage.models import MODELS, Call, SchemaVersion, utc_now


@pytest.fixture
def db(backend):
    database = open_database(backend.url)
    database.connect()
    yield database
    database.close()


def _create_version_1(db) -> None:
    """A database as icall's first schema left it, with a call in it."""
    for model in schema_v1.MODELS:
        SchemaManager(model, db).create_all()
    schema_v1.SchemaVersion.insert(id=1, version=1, upgraded_at=utc_now()).execute(db)
    schema_v1.Call.insert(uuid="old-call", caller_id="5551000").execute(db)


def test_an_empty_database_is_upgraded_to_the_latest_version_with_every_table(db):
    assert schema_version(db) == 0

    assert upgrade(db) == sorted(STEPS)

    assert schema_version(db) == LATEST
    assert check_schema(db) == LATEST
    for model in MODELS:
        assert db.table_exists(model._meta.table_name), model.__name__
        columns = {c.name for c in db.get_columns(model._meta.table_name)}
        assert {f.column_name for f in model._meta.sorted_fields} <= columns, model.__name__


def test_upgrading_twice_changes_nothing_the_second_time(db):
    upgrade(db)
    assert upgrade(db) == []
    assert schema_version(db) == LATEST


def test_a_version_1_database_is_migrated_keeping_its_rows(db):
    _create_version_1(db)
    assert schema_version(db) == 1
    with pytest.raises(SchemaError, match=f"version 1, this icall needs version {LATEST}: run `icall db upgrade"):
        check_schema(db)

    assert upgrade(db) == [2, 3, 4, 5]

    assert "updated_at" in {c.name for c in db.get_columns("calls")}
    assert "calls_caller_id" in {i.name for i in db.get_indexes("calls")}
    assert "cdr_outbox_delivered_at_next_attempt_at" in {i.name for i in db.get_indexes("cdr_outbox")}
    old = Call.select().where(Call.uuid == "old-call").get(db)
    assert old.caller_id == "5551000" and old.updated_at is None


def test_a_version_2_step_interrupted_after_adding_the_column_can_be_run_again(db):
    # MySQL commits DDL as it goes: a step cut short must be safe to repeat.
    _create_version_1(db)
    from peewee import DateTimeField
    from playhouse.migrate import SchemaMigrator, migrate

    migrate(SchemaMigrator.from_database(db).add_column("calls", "updated_at", DateTimeField(null=True)))

    assert upgrade(db) == [2, 3, 4, 5]
    assert schema_version(db) == LATEST


def test_a_database_newer_than_this_icall_is_refused_and_left_alone(db):
    upgrade(db)
    SchemaVersion.update(version=LATEST + 1).execute(db)

    with pytest.raises(SchemaError, match="newer than this icall knows"):
        upgrade(db)
    with pytest.raises(SchemaError, match="upgrade icall"):
        check_schema(db)
    assert schema_version(db) == LATEST + 1


def test_the_service_check_on_an_empty_database_says_to_run_db_upgrade(db):
    with pytest.raises(SchemaError, match="no icall schema yet: run `icall db upgrade"):
        check_schema(db)


def _lookup_index_names() -> set[str]:
    return {"_".join((table, *columns)) for table, columns in LOOKUP_INDEXES}


def _create_version_3(db) -> None:
    """A database as the icall before the lookup indexes left it (its call kept)."""
    _create_version_1(db)
    for version in (2, 3):
        STEPS[version](db)
    SchemaVersion.update(version=3).execute(db)


def test_a_version_3_database_gets_the_lookup_indexes_keeping_its_rows(db):
    _create_version_3(db)
    assert not _lookup_index_names() & {i.name for i in db.get_indexes("calls")}

    assert upgrade(db) == [4, 5]

    indexes = {i.name: i.columns for i in db.get_indexes("calls")}
    for table, columns in LOOKUP_INDEXES:
        assert indexes["_".join((table, *columns))] == list(columns)  # on the columns named
    assert Call.select().where(Call.uuid == "old-call").get(db).caller_id == "5551000"


def test_the_lookup_index_step_interrupted_after_one_index_can_be_run_again(db):
    # MySQL commits each CREATE INDEX as it goes: step 5 cut short must be safe to repeat.
    from playhouse.migrate import SchemaMigrator, migrate

    _create_version_3(db)
    migrate(SchemaMigrator.from_database(db).add_index("calls", ("caller_id", "started_at"), False))

    assert upgrade(db) == [4, 5]
    assert _lookup_index_names() <= {i.name for i in db.get_indexes("calls")}
