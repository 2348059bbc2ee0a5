"""Shared fixtures. Heavy models load once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from assistant.settings import load_settings
from tests.ci_skips import pytest_runtest_makereport  # noqa: F401 - in CI a missing ../shared corpus fails

REPO = Path(__file__).resolve().parents[1]
HANDBOOK = REPO.parent / "shared" / "corpora" / "sourcegraph-handbook"
SAMPLE_DOCS = REPO / "assistant" / "sample_docs"


def make_settings(data_dir: Path, **overrides):
    return load_settings(environ={}, overrides={"data_dir": str(data_dir), **overrides})


@pytest.fixture(scope="session")
def embedder():
    from assistant.embeddings import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


@pytest.fixture(scope="session")
def hash_embedder():
    """For tests about ingestion state, not meaning: hashed bags of words, microseconds per text."""
    from tests.fakes.hash_embedder import HashEmbedder

    return HashEmbedder()


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "data")


@pytest.fixture
def engine(settings, embedder):
    from assistant.engine import Engine

    eng = Engine.open(settings, embedder=embedder)
    yield eng
    eng.close()


@pytest.fixture
def sample_folder(tmp_path) -> Path:
    """A private copy of the bundled sample corpus that tests may edit."""
    dst = tmp_path / "sample"
    shutil.copytree(SAMPLE_DOCS, dst)
    return dst


@pytest.fixture
def handbook() -> Path:
    if not HANDBOOK.exists():
        pytest.skip("the handbook corpus (../shared/corpora/sourcegraph-handbook) is not present")
    return HANDBOOK


@pytest.fixture(autouse=True)
def _per_user_data_dir_in_tmp(tmp_path, monkeypatch):
    """``data_dir = "auto"`` resolves under $XDG_DATA_HOME: keep it inside the test's tmp dir, never ~/.local."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
