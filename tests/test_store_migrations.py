"""Versioned migrations: a schema-1 store (built as the old code built it) upgrades in place, keeps
its data, and then holds the scheduler's and the bot's tables; a newer store is refused plainly."""

from __future__ import annotations

import sqlite3

import pytest

from assistant import store as store_mod
from assistant.errors import StoreError
from assistant.reports import add_schedule, list_schedules, remove_schedule, runs_of
from assistant.store import SCHEMA_VERSION, Store
from tests.fakes.store_v1 import build_v1_store


def _tables(path) -> set[str]:
    db = sqlite3.connect(str(path))
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()


@pytest.mark.parametrize("with_scheduler_tables", [True, False], ids=["v1+ad-hoc-tables", "v1-bare"])
def test_a_v1_store_upgrades_in_place_and_keeps_its_data(tmp_path, with_scheduler_tables):
    path = tmp_path / "store.sqlite"
    build_v1_store(path, with_scheduler_tables=with_scheduler_tables)
    store = Store(path)  # schema 1 used to be the only one accepted; now it is upgraded
    try:
        assert store.get_meta("schema") == str(SCHEMA_VERSION) and SCHEMA_VERSION >= 3
        assert [d.title for d in store.iter_documents()] == ["Leave policy"]
        assert store.keyword_search("parental leave", limit=5)[0][0] == store.chunk_ids()[0]
        assert store.get_cursor("sample") == "cursor-1"
        assert {
            "schedules",
            "schedule_runs",
            "slackbot_events",
            "slackbot_answers",
            "slackbot_votes",
        } <= _tables(path)
        old = list_schedules(store)
        if with_scheduler_tables:  # the schedule and its posted run survive
            assert [s.spec for s in old] == ["daily 09:00"]
            assert [r["status"] for r in runs_of(store, old[0].id)] == ["posted"]
        else:
            assert old == []
        s = add_schedule(store, "weekly mon 09:00", channel="#eng", tz="Europe/Berlin", now=1_800_000_000)
        assert [x.spec for x in list_schedules(store)][-1] == "weekly mon 09:00"
        assert remove_schedule(store, s.id) and not remove_schedule(store, s.id)
    finally:
        store.close()
    again = Store(path)
    try:
        assert again.migrate() == []  # reopening applies nothing
    finally:
        again.close()


def test_a_fresh_store_is_created_at_the_latest_version(tmp_path):
    store = Store(tmp_path / "store.sqlite")
    try:
        assert store.get_meta("schema") == str(SCHEMA_VERSION)
        assert store.migrate() == []
    finally:
        store.close()


def test_a_store_from_a_newer_version_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "store.sqlite"
    Store(path).close()
    db = sqlite3.connect(str(path))
    db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="Upgrade the assistant"):
        Store(path)


def test_migrations_are_numbered_one_to_the_latest():
    assert sorted(store_mod._MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))
