"""Ingest → store/index → search on the bundled sample corpus (hash embedder: state and access, not meaning)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from assistant.documents import Principals
from assistant.engine import Engine
from connectors.local_files import LocalFilesConnector

ALICE = Principals(email="alice@northwind.example")
BOB = Principals(email="bob@northwind.example")


@pytest.fixture(scope="session")
def embedder(hash_embedder):
    """Sync, state and access, not meaning: conftest's ``engine`` (and these tests) get the hash embedder."""
    return hash_embedder


def _sync(engine, folder, **kw):
    return engine.sync(LocalFilesConnector(folder, name="sample", acl_file=folder / "acl.toml"), **kw)


def _consistent(engine) -> bool:
    return np.array_equal(np.sort(engine.index.ids()), engine.store.chunk_ids())


def test_ingest_sample_then_search_finds_the_right_document(engine, sample_folder):
    rep = _sync(engine, sample_folder)
    assert rep.failed == 0, rep.failures
    assert rep.added == engine.store.document_count() >= 12
    hits = engine.search("how much paid leave for a new parent", who=BOB, k=3)
    assert hits[0].path == "handbook/parental-leave.md"
    assert _consistent(engine)


def test_reingest_unchanged_folder_embeds_nothing(engine, sample_folder, embedder):
    _sync(engine, sample_folder)
    before = embedder.texts_embedded
    rep = _sync(engine, sample_folder)
    assert embedder.texts_embedded == before
    assert rep.unchanged == engine.store.document_count() and rep.added == rep.updated == 0


def test_edits_and_deletions_propagate(engine, sample_folder):
    _sync(engine, sample_folder)
    n = engine.store.document_count()
    doc = sample_folder / "handbook" / "pto-and-holidays.md"
    doc.write_text(
        doc.read_text() + "\n\n## Volcano day\n\nEveryone gets a zorblax volcano day off each March.\n"
    )
    os.utime(doc, (time.time() + 5, time.time() + 5))
    (sample_folder / "it" / "printer-setup.md").unlink()
    rep = _sync(engine, sample_folder)
    assert (rep.updated, rep.deleted) == (1, 1)
    assert engine.store.document_count() == n - 1
    assert engine.search("zorblax volcano", who=BOB, k=1)[0].path == "handbook/pto-and-holidays.md"
    assert all(h.path != "it/printer-setup.md" for h in engine.search("printer setup", who=BOB, k=20))
    assert _consistent(engine)


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
def test_restricted_document_never_reaches_another_user(engine, sample_folder, mode):
    _sync(engine, sample_folder)
    query = "salary bands compensation ranges for engineers"
    bob = engine.search(query, who=BOB, k=50, mode=mode)
    assert all(not h.path.startswith("restricted/") for h in bob)
    alice = engine.search(query, who=ALICE, k=5, mode=mode)
    assert any(h.path.startswith("restricted/") for h in alice)
    unknown = engine.search(query, who=Principals(), k=50, mode=mode)
    assert all(not h.path.startswith("restricted/") for h in unknown)


class _Boom(Exception):
    pass


class CrashingConnector(LocalFilesConnector):
    """Raises (like a kill would stop it) when fetching the N-th item of this run."""

    def __init__(self, *a, crash_after: int, **kw):
        super().__init__(*a, **kw)
        self.left = crash_after

    def fetch(self, ref):
        self.left -= 1
        if self.left < 0:
            raise _Boom("simulated crash")
        return super().fetch(ref)


def test_crash_mid_ingest_then_rerun_converges_exactly(settings, embedder, sample_folder):
    eng = Engine.open(settings, embedder=embedder)
    conn = CrashingConnector(
        sample_folder, name="sample", acl_file=sample_folder / "acl.toml", page_size=3, crash_after=5
    )
    rep = eng.sync(
        conn
    )  # per-item errors are failures, the run goes on: the crash must be a BaseException-like stop
    assert rep.failed > 0
    eng.close()
    eng = Engine.open(settings, embedder=embedder)  # a fresh process: reconcile at start-up
    rep = eng.sync(
        LocalFilesConnector(sample_folder, name="sample", acl_file=sample_folder / "acl.toml", page_size=3)
    )
    files = [p for p in sample_folder.rglob("*") if p.is_file() and p.name != "acl.toml"]
    assert eng.store.document_count() == len(files)
    assert eng.store.failures() == []
    assert _consistent(eng)
    eng.close()


class KillingConnector(LocalFilesConnector):
    def __init__(self, *a, kill_after: int, **kw):
        super().__init__(*a, **kw)
        self.left = kill_after

    def fetch(self, ref):
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt  # not an item failure: the whole run stops here, as on a kill
        return super().fetch(ref)


def test_interrupted_run_resumes_from_saved_cursor_without_duplicates(settings, embedder, sample_folder):
    eng = Engine.open(settings, embedder=embedder)
    acl = sample_folder / "acl.toml"
    with pytest.raises(KeyboardInterrupt):
        eng.sync(KillingConnector(sample_folder, name="sample", acl_file=acl, page_size=4, kill_after=6))
    partial = eng.store.document_count()
    assert 0 < partial < 12
    assert eng.store.get_cursor("sample") is not None
    eng.close()
    eng = Engine.open(settings, embedder=embedder)
    rep = eng.sync(LocalFilesConnector(sample_folder, name="sample", acl_file=acl, page_size=4))
    files = [p for p in sample_folder.rglob("*") if p.is_file() and p.name != "acl.toml"]
    assert eng.store.document_count() == len(files)
    assert rep.added == len(files) - partial
    rows = eng.store.execute(
        "SELECT source, doc_id, count(*) FROM documents GROUP BY 1, 2 HAVING count(*) > 1"
    )
    assert rows == []
    assert _consistent(eng)
    eng.close()


def test_corrupt_file_is_reported_and_skipped(engine, sample_folder):
    (sample_folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    rep = _sync(engine, sample_folder)
    assert [f.item_id for f in rep.failures] == ["broken.pdf"]
    assert "corrupt" in rep.failures[0].reason.lower() or "cannot read" in rep.failures[0].reason.lower()
    st = engine.status()
    assert st["failures"][0]["item_id"] == "broken.pdf"
    assert st["documents"] >= 12  # the rest went in


def test_index_file_lost_or_torn_is_rebuilt_from_the_store(settings, embedder, sample_folder):
    eng = Engine.open(settings, embedder=embedder)
    _sync(eng, sample_folder)
    n = eng.store.chunk_count()
    eng.close()
    (settings.data_dir / "index.faiss").write_bytes(b"torn")
    eng = Engine.open(settings, embedder=embedder)
    assert eng.index.ntotal == n and _consistent(eng)
    assert eng.search("parental leave", who=BOB, k=1)[0].path == "handbook/parental-leave.md"
    eng.close()


def test_permission_change_updates_access_without_reembedding(engine, sample_folder, embedder):
    _sync(engine, sample_folder)
    before = embedder.texts_embedded
    acl = sample_folder / "acl.toml"
    acl.write_text(
        acl.read_text()
        + '\n[[rule]]\nglob = "handbook/parental-leave.md"\nusers = ["alice@northwind.example"]\n'
    )
    rep = engine.sync(LocalFilesConnector(sample_folder, name="sample", acl_file=acl))
    assert rep.updated == 1
    assert embedder.texts_embedded == before
    assert all(h.path != "handbook/parental-leave.md" for h in engine.search("parental leave", who=BOB, k=20))
    assert engine.search("parental leave", who=ALICE, k=1)[0].path == "handbook/parental-leave.md"
