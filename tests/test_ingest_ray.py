"""Ingestion on Ray (``assistant ingest --workers N`` / ``--ray-address``): the same store as in-process,
crash safety with a SIGKILLed driver, and errors that say what to do.

One local Ray instance (2 CPUs, 200 MB object store) serves the whole module; the chaos children
connect to it with ``--ray-address`` instead of starting their own. The embedder is the hash
embedder (``tests/fakes/hash_embedder.py``): what is checked is where the work runs and what gets
written, not meaning.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sqlite3
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from assistant.engine import Engine
from assistant.errors import ConfigError
from tests.ci_skips import in_ci
from tests.conftest import SAMPLE_DOCS, make_settings
from tests.fakes.hash_embedder import HashEmbedder

ROOT = Path(__file__).resolve().parents[1]

if importlib.util.find_spec("ray") is None:
    if in_ci():  # CI installs the [ray] extra: a missing Ray there is a broken install, not a skip
        raise RuntimeError("ray is not installed; the CI install path (Makefile) installs '.[ray]'")
    pytest.skip("ray is not installed (pip install '.[ray]')", allow_module_level=True)

from assistant.ingest_ray import RayOptions, ray_session  # noqa: E402


def _chaos():
    spec = importlib.util.spec_from_file_location("chaos_ingest", ROOT / "scripts" / "chaos_ingest.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["chaos_ingest"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


chaos = _chaos()


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance for the module; yields its address for ``--ray-address``."""
    with ray_session(RayOptions(workers=2)) as ray:
        yield ray.get_runtime_context().gcs_address


def _drive_connector(fake, page_size: int):
    from connectors.google_drive import DriveConfig, GoogleDriveConnector

    cfg = DriveConfig(
        credentials_info=fake.world.service_account_info(),
        subject=fake.world.admin,
        api_endpoint=fake.url,
        token_uri=fake.url + "/token",
        all_shared_drives=True,
        page_size=page_size,
        backoff_base_s=0.01,
    )
    return GoogleDriveConnector(cfg), partial(GoogleDriveConnector, cfg)


def _contents(data_dir: Path) -> dict:
    """Everything a user could observe in a store: documents, access, chunks with their vectors, cursors."""
    con = sqlite3.connect(f"file:{data_dir / 'store.sqlite'}?mode=ro", uri=True)
    try:
        docs = con.execute(
            "SELECT source, doc_id, path, title, mime, url, modified, version, content_hash, metadata "
            "FROM documents ORDER BY source, doc_id"
        ).fetchall()
        access = con.execute(
            "SELECT d.source, d.doc_id, a.principal FROM access a JOIN documents d ON d.key = a.doc_key "
            "ORDER BY 1, 2, 3"
        ).fetchall()
        chunks = con.execute(
            'SELECT d.source, d.doc_id, c.ordinal, c.text, c.heading_path, c.start, c."end", c.vector '
            "FROM chunks c JOIN documents d ON d.key = c.doc_key ORDER BY 1, 2, 3"
        ).fetchall()
        cursors = con.execute("SELECT source, cursor FROM cursors ORDER BY source").fetchall()
    finally:
        con.close()
    vectors = np.stack([np.frombuffer(c[-1], dtype=np.float32) for c in chunks]) if chunks else None
    return {
        "documents": docs,
        "access": access,
        "chunks": [c[:-1] for c in chunks],
        "vectors": vectors,
        "cursors": cursors,
    }


def _same(a: dict, b: dict) -> None:
    for key in ("documents", "access", "chunks", "cursors"):
        assert a[key] == b[key], key
    np.testing.assert_allclose(a["vectors"], b["vectors"], atol=1e-6)


def test_ray_ingest_writes_what_the_in_process_ingest_writes(ray_address, tmp_path):
    from tests.fakes.gdrive import FakeDrive

    with FakeDrive() as fake:
        w = fake.world
        ids = chaos.build_drive(w, 60)  # Markdown, Google Docs, text and Sheets; My Drive and a shared drive
        # the in-process path and the Ray path each ingest the same world into their own data_dir
        local_dir, ray_dir = tmp_path / "local", tmp_path / "ray"
        opts = RayOptions(workers=2, address=ray_address, embedder_factory=HashEmbedder)

        def sync(data_dir: Path, *, on_ray: bool):
            conn, factory = _drive_connector(fake, page_size=10)
            with Engine.open(make_settings(data_dir), embedder=HashEmbedder()) as eng:
                if on_ray:
                    return eng.sync(conn, ray=opts, connector_factory=factory)
                return eng.sync(conn)

        before = len(w.downloads())
        rep_local = sync(local_dir, on_ray=False)
        local_downloads = len(w.downloads()) - before
        rep_ray = sync(ray_dir, on_ray=True)
        assert (rep_ray.added, rep_ray.failed, rep_ray.chunks) == (rep_local.added, 0, rep_local.chunks)
        assert rep_ray.added == 60 and rep_ray.pages == rep_local.pages
        assert len(w.downloads()) - before == 2 * local_downloads  # each file fetched once per path
        _same(_contents(local_dir), _contents(ray_dir))

        # incremental: an edit, a new reader, a trashed file; both paths see the same changes
        w.edit(ids[0], "# Note 0: expense reports\n\nRewritten: expenses are now filed in the new tool.\n")
        w.share(ids[5], "user", email="carol@example.com", role="reader")
        w.trash(ids[9])
        before = len(w.downloads())
        rep_local = sync(local_dir, on_ray=False)
        rep_ray = sync(ray_dir, on_ray=True)
        assert (rep_ray.updated, rep_ray.deleted, rep_ray.added) == (rep_local.updated, 1, 0)
        assert rep_ray.updated >= 2 and rep_ray.chunks == rep_local.chunks == 1  # only the edit re-embeds
        assert len(w.downloads()) - before == 2 * rep_local.fetched  # unchanged files are not fetched
        contents = _contents(ray_dir)
        _same(_contents(local_dir), contents)
        assert any("Rewritten" in c[3] for c in contents["chunks"])
        assert ("gdrive", ids[5], "user:carol@example.com") in contents["access"]


def test_sigkilled_ray_ingest_reruns_to_an_exact_consistent_state(ray_address, tmp_path):
    # the child (the driver, the only writer) is SIGKILLed while its 2 Ray workers prepare pages
    r = chaos.run_seed(0, docs=200, page_size=20, workdir=tmp_path, workers=2, ray_address=ray_address)
    assert r.problems == []
    assert r.documents == 200
    assert r.killed and r.committed_at_kill > 0  # killed mid-run, after some pages were committed
    assert r.downloads_killed_run + r.downloads_rerun <= 160 + 20  # at most one page fetched twice


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("form", ["host:port", "ray://host:port"])
def test_an_unreachable_ray_address_says_how_to_fix_it(form, ray_address):
    addr = form.replace("host:port", f"127.0.0.1:{_closed_port()}")
    with pytest.raises(ConfigError, match=r"No Ray cluster answers at .*ray start --head.*--workers N"):
        with ray_session(RayOptions(address=addr)):
            pass


def test_a_malformed_ray_address_is_refused(ray_address):
    with pytest.raises(ConfigError, match="is not a Ray address"):
        with ray_session(RayOptions(address="http://example.com")):
            pass


def _cli(args: list[str], data_dir: Path, *, pythonpath: list[Path] = ()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    env.update(
        {
            "ASSISTANT_DATA_DIR": str(data_dir),
            "ASSISTANT_LOG_LEVEL": "WARNING",
            "ASSISTANT_EMBEDDING__BACKEND": "torch",  # no ONNX export on the workers
            "PYTHONPATH": os.pathsep.join(str(p) for p in [*pythonpath, ROOT]),
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "assistant.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_without_ray_installed_the_flags_say_how_to_install_it(tmp_path):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "ray.py").write_text("raise ImportError(\"No module named 'ray'\")\n")  # as if not installed
    p = _cli(["ingest", str(SAMPLE_DOCS), "--workers", "2"], tmp_path / "data", pythonpath=[shadow])
    assert p.returncode == 2, p.stderr
    assert "pip install 'workplace-assistant[ray]'" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "data" / "store.sqlite").exists()  # refused before anything was written


def test_cli_refuses_an_unreachable_ray_address_before_writing_anything(tmp_path):
    addr = f"ray://127.0.0.1:{_closed_port()}"
    p = _cli(["ingest", str(SAMPLE_DOCS), "--ray-address", addr], tmp_path / "data")
    assert p.returncode == 2, p.stderr
    assert f"No Ray cluster answers at {addr}" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "data" / "store.sqlite").exists()


def test_cli_ingest_on_a_ray_cluster_with_the_configured_embedder(ray_address, tmp_path):
    # one worker loads the configured model (MiniLM, torch) itself; this process never loads it
    data = tmp_path / "data"
    p = _cli(
        ["ingest", str(SAMPLE_DOCS), "--source", "sample", "--acl-file", str(SAMPLE_DOCS / "acl.toml"),
         "--workers", "1", "--ray-address", ray_address, "--json"],
        data,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert '"added": 14' in p.stdout and '"failed": 0' in p.stdout
    c = _contents(data)
    assert len(c["documents"]) == 14 and c["vectors"].shape == (len(c["chunks"]), 384)
    np.testing.assert_allclose(np.linalg.norm(c["vectors"], axis=1), 1.0, atol=1e-3)
    laptop = [i for i, ch in enumerate(c["chunks"]) if ch[1] == "it/laptop-request.txt"]
    others = [i for i in range(len(c["chunks"])) if i not in laptop]
    sims = c["vectors"][laptop[0]] @ c["vectors"][others].T
    assert sims.max() < 0.99  # distinct texts, distinct vectors
