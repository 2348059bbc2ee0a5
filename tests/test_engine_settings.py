"""Engine.set_retrieval: the public way to search one engine with other retrieval settings."""

from __future__ import annotations

from assistant.engine import Engine
from assistant.registry import build_connector
from tests.conftest import make_settings
from tests.fakes.hash_embedder import HashEmbedder


def test_set_retrieval_changes_how_the_same_engine_searches(tmp_path, sample_folder):
    settings = make_settings(tmp_path / "data", retrieval={"mode": "dense"})
    with Engine.open(settings, embedder=HashEmbedder()) as engine:
        engine.sync(build_connector(settings, path=sample_folder))
        query = "qqzzxv wqxjyk"  # no word of it is in any document
        assert len(engine.search(query, k=3)) == 3  # dense: the nearest chunks, however far
        engine.set_retrieval(settings.retrieval.model_copy(update={"mode": "keyword"}))
        assert engine.search(query, k=3) == []  # keyword: nothing matches
        assert engine.settings.retrieval.mode == "keyword" and settings.retrieval.mode == "dense"
