"""Crash-safety check: ingestion killed with SIGKILL at a random moment, then rerun to completion.

Usage: ``python scripts/chaos_ingest.py --seeds 20 [--docs 5000] [--page-size 200] [--workers 2 [--ray-address A]]``

With ``--workers N`` the children ingest on Ray (``assistant.ingest_ray``): N worker actors fetch,
parse, chunk and embed, the child (the driver) writes. Each child starts its own local Ray instance,
or connects to the cluster at ``--ray-address`` (the test does this, so one Ray instance serves every
child). The same checks apply; a worker of the killed child still downloading after the kill would
show up as an extra download in the rerun. (A child's own local instance dies with it: raylet and
workers at once; Ray's dashboard and runtime-env agents notice within about a minute.)

For each seed: a world of ``--docs`` small documents, four fifths in a fake Google Drive (the local
HTTP fake of ``tests/fakes/gdrive.py``, served by this process; My Drive and a shared drive, Docs,
Sheets and blobs) and one fifth in a local folder with an ACL file. A child process ingests both
sources into a fresh data_dir through the real ``Engine.sync`` (FAISS saved after every page, to
give the kill more chances to land mid-write) and is killed with SIGKILL after a random number of
committed documents (or, for some seeds, at a random early time). A second child reruns the sync
to completion. Then the parent checks:

- exactly ``--docs`` documents and no duplicate (source, id);
- after ``Engine.open`` (which reconciles), FAISS ids == SQLite chunk ids, and a second open has
  nothing left to repair;
- ``PRAGMA integrity_check`` = ok;
- the rerun downloaded exactly the Drive files that were not committed before the kill (nothing
  committed is fetched again), and the killed run had fetched at most one page beyond what it
  committed (the unfinished page).

It also kills a child that saves ``VectorIndex`` in a loop and checks that the index at the final
path still loads (no torn file). Prints ``N/N consistent``; exit status 1 if any seed fails.
The embedder is ``tests/fakes/hash_embedder.HashEmbedder`` (real MiniLM tokenizer, hashed
vectors): what is checked is durability, not meaning, and the real model would take minutes per
seed on a small CPU. ``tests/test_chaos.py`` runs a small version of the same functions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TOPICS = [
    "expense reports",
    "parking permits",
    "laptop refresh",
    "quarterly planning",
    "on-call rota",
    "office plants",
    "printer toner",
    "team offsite",
    "security training",
    "badge access",
    "invoice approval",
    "holiday calendar",
    "desk booking",
    "VPN setup",
    "hiring loop",
]
TEAMS = ["finance", "facilities", "IT", "platform", "people ops", "sales", "design", "legal"]


def doc_text(i: int) -> str:
    """A small, distinct workplace note (one chunk)."""
    topic, team = TOPICS[i % len(TOPICS)], TEAMS[(i // len(TOPICS)) % len(TEAMS)]
    return (
        f"# Note {i}: {topic}\n\nThe {team} team reviewed {topic} in meeting {i}. "
        f"Action item {i * 7 % 1000}: follow up with the {team} lead before Friday.\n"
    )


# -- the world ----------------------------------------------------------------------------------------
def build_drive(world, n: int) -> list[str]:
    """``n`` files across My Drive folders and a shared drive; returns their ids."""
    from tests.fakes.gdrive import GDOC, GSHEET

    kinds = [("text/markdown", ".md"), (GDOC, ""), ("text/plain", ".txt"), (GSHEET, "")]
    drive = world.add_drive("Operations", members={world.admin: "organizer"})
    root = world.root(world.admin)
    parents = [world.add_folder(f"Team {t}", root) for t in TEAMS[:4]] + [
        world.add_folder("Notes", drive),
        drive,
    ]
    ids = []
    for i in range(n):
        mime, ext = kinds[i % len(kinds)]
        body = doc_text(i) if mime != GSHEET else f"item,owner\nnote {i},{TEAMS[i % len(TEAMS)]}\n"
        ids.append(world.add_file(f"note-{i:05d}{ext}", mime, body, parents[i % len(parents)]))
    return ids


def build_folder(folder: Path, n: int, *, offset: int) -> None:
    for i in range(n):
        sub = folder / TEAMS[i % len(TEAMS)].replace(" ", "-")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"local-{i:05d}.md").write_text(doc_text(offset + i), encoding="utf-8")
    (folder / "acl.toml").write_text(
        '[[rule]]\nglob = "legal/**"\nusers = ["counsel@example.com"]\n', encoding="utf-8"
    )


# -- the child: one ingestion run -----------------------------------------------------------------------
def child_main(config_path: str) -> None:
    from assistant.engine import Engine
    from assistant.settings import load_settings
    from connectors.google_drive import DriveConfig, GoogleDriveConnector
    from connectors.local_files import LocalFilesConnector
    from tests.fakes.hash_embedder import HashEmbedder

    cfg = json.loads(Path(config_path).read_text())
    settings = load_settings(
        environ={},
        overrides={"data_dir": cfg["data_dir"], "index": {"save_every_s": 0}, "sync": {"fetch_workers": 4}},
    )
    drive = GoogleDriveConnector(
        DriveConfig(
            credentials_info=cfg["credentials"],
            subject=cfg["subject"],
            api_endpoint=cfg["url"],
            token_uri=cfg["url"] + "/token",
            all_shared_drives=True,
            page_size=cfg["page_size"],
            backoff_base_s=0.01,
        )
    )
    local = LocalFilesConnector(
        Path(cfg["folder"]),
        name="local",
        acl_file=Path(cfg["folder"]) / "acl.toml",
        page_size=cfg["page_size"],
    )
    from contextlib import nullcontext

    out = sys.stdout

    def progress(n: int, what: str) -> None:
        out.write(f"P {what}\n")
        out.flush()

    engine = Engine.open(settings, embedder=HashEmbedder())
    out.write("REPAIRED " + json.dumps(engine.repaired) + "\n")  # what reconcile fixed after a kill
    ray_kw = {}
    if cfg.get("workers"):
        from functools import partial

        from assistant.ingest_ray import RayOptions, ray_session

        ray_kw["ray"] = RayOptions(
            workers=cfg["workers"], address=cfg.get("ray_address"), embedder_factory=HashEmbedder
        )
    reports = {}
    with ray_session(ray_kw["ray"]) if ray_kw else nullcontext():  # one Ray start for both sources
        for conn in [drive, local] if cfg["drive_first"] else [local, drive]:
            if ray_kw and conn is drive:  # the Drive client holds locks: workers rebuild it from its config
                ray_kw["connector_factory"] = partial(GoogleDriveConnector, drive.config)
            reports[conn.name] = engine.sync(conn, progress=progress, **ray_kw).as_dict()
            ray_kw.pop("connector_factory", None)
    engine.close()
    out.write(
        "DONE "
        + json.dumps(
            {k: {f: v[f] for f in ("added", "unchanged", "failed", "fetched")} for k, v in reports.items()}
        )
        + "\n"
    )
    out.flush()


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )


def run_killed(
    config_path: Path, *, kill_after_docs: int | None, kill_after_s: float | None, extra_delay_s: float
) -> tuple[bool, int, str]:
    """Run a child; SIGKILL it after ``kill_after_docs`` progress events (+ a small delay) or after
    ``kill_after_s`` seconds. Returns (killed, progress events seen, stderr tail)."""
    p = _spawn("--child", str(config_path))
    seen = 0
    killed = threading.Event()
    timer = None

    def kill() -> None:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            killed.set()

    if kill_after_s is not None:
        timer = threading.Timer(kill_after_s, kill)
        timer.start()
    for line in p.stdout:
        if line.startswith("P "):
            seen += 1
            if kill_after_docs is not None and seen >= kill_after_docs and timer is None:
                timer = threading.Timer(extra_delay_s, kill)
                timer.start()
    p.wait()
    if timer is not None:
        timer.cancel()
    err = p.stderr.read()
    if not killed.is_set() and p.returncode != 0:
        raise RuntimeError(f"the ingestion child failed on its own (exit {p.returncode}):\n{err[-3000:]}")
    return killed.is_set() and p.returncode == -signal.SIGKILL, seen, err[-2000:]


def run_to_completion(config_path: Path, *, timeout_s: float = 1800) -> dict:
    p = _spawn("--child", str(config_path))
    out, err = p.communicate(timeout=timeout_s)
    if p.returncode != 0:
        raise RuntimeError(f"the rerun failed (exit {p.returncode}):\n{err[-3000:]}")
    done = [line for line in out.splitlines() if line.startswith("DONE ")]
    repaired = [line for line in out.splitlines() if line.startswith("REPAIRED ")]
    return {"reports": json.loads(done[-1][5:]), "repaired": json.loads(repaired[0][9:])}


# -- checks ----------------------------------------------------------------------------------------------
def _db_facts(db: Path) -> dict:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {
            "documents": con.execute("SELECT count(*) FROM documents").fetchone()[0],
            "by_source": dict(
                con.execute("SELECT source, count(*) FROM documents GROUP BY source").fetchall()
            ),
            "duplicates": con.execute(
                "SELECT count(*) FROM (SELECT source, doc_id FROM documents "
                "GROUP BY source, doc_id HAVING count(*) > 1)"
            ).fetchone()[0],
            "integrity": con.execute("PRAGMA integrity_check").fetchone()[0],
        }
    finally:
        con.close()


@dataclass
class SeedResult:
    seed: int
    killed: bool = False
    committed_at_kill: int = 0
    drive_committed_at_kill: int = 0
    downloads_killed_run: int = 0
    downloads_rerun: int = 0
    repaired_at_restart: dict = field(default_factory=dict)  # reconcile in the rerun, right after the kill
    documents: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def consistent(self) -> bool:
        return not self.problems


def run_seed(
    seed: int,
    *,
    docs: int = 5000,
    page_size: int = 200,
    workdir: Path | None = None,
    workers: int = 0,
    ray_address: str | None = None,
) -> SeedResult:
    import numpy as np

    from assistant.engine import Engine
    from assistant.settings import load_settings
    from tests.fakes.gdrive import FakeDrive
    from tests.fakes.hash_embedder import HashEmbedder

    t0 = time.perf_counter()
    rng = random.Random(seed)
    res = SeedResult(seed)
    n_drive = docs - docs // 5
    with tempfile.TemporaryDirectory(dir=workdir, prefix=f"chaos-{seed}-") as tmp, FakeDrive() as fake:
        tmp = Path(tmp)
        fake.server.handle_error = lambda *a: (
            None
        )  # a killed child resets its connections: expected, not news
        w = fake.world
        build_drive(w, n_drive)
        build_folder(tmp / "folder", docs - n_drive, offset=n_drive)
        data_dir = tmp / "data"
        cfg = {
            "data_dir": str(data_dir),
            "url": fake.url,
            "credentials": w.service_account_info(),
            "subject": w.admin,
            "folder": str(tmp / "folder"),
            "page_size": page_size,
            "drive_first": rng.random() < 0.75,
            "workers": workers,
            "ray_address": ray_address,
        }
        cfg_path = tmp / "child.json"
        cfg_path.write_text(json.dumps(cfg))

        early = rng.random() < 0.15
        res.killed, _, _ = run_killed(
            cfg_path,
            kill_after_docs=None if early else rng.randrange(1, docs),
            kill_after_s=rng.uniform(0.2, 2.5) if early else None,
            extra_delay_s=rng.uniform(0.0, 0.05),
        )
        db = data_dir / "store.sqlite"
        before = _db_facts(db) if db.exists() else {"documents": 0, "by_source": {}}
        res.committed_at_kill = before["documents"]
        res.drive_committed_at_kill = before["by_source"].get("gdrive", 0)
        res.downloads_killed_run = len(w.downloads())

        res.repaired_at_restart = run_to_completion(cfg_path)["repaired"]
        res.downloads_rerun = len(w.downloads()) - res.downloads_killed_run

        facts = _db_facts(db)
        res.documents = facts["documents"]
        if facts["documents"] != docs:
            res.problems.append(f"{facts['documents']} documents, expected {docs}")
        if facts["duplicates"]:
            res.problems.append(f"{facts['duplicates']} duplicate (source, id) pairs")
        if facts["integrity"] != "ok":
            res.problems.append(f"integrity_check: {facts['integrity']}")
        if res.downloads_rerun != n_drive - res.drive_committed_at_kill:
            res.problems.append(
                f"rerun downloaded {res.downloads_rerun} Drive files; "
                f"{n_drive - res.drive_committed_at_kill} were not committed"
            )
        wasted = res.downloads_killed_run - res.drive_committed_at_kill
        if wasted > page_size:
            res.problems.append(
                f"the killed run fetched {wasted} Drive files it never committed (> one page of {page_size})"
            )

        settings = load_settings(environ={}, overrides={"data_dir": str(data_dir)})
        emb = HashEmbedder()
        for attempt in (1, 2):  # a completed run leaves nothing to repair, and opening changes nothing
            eng = Engine.open(settings, embedder=emb)
            try:
                if any(eng.repaired.values()):
                    res.problems.append(
                        f"open #{attempt} after a completed run still repaired the index: {eng.repaired}"
                    )
                if not np.array_equal(np.sort(eng.index.ids()), eng.store.chunk_ids()):
                    res.problems.append("FAISS ids differ from SQLite chunk ids after reconcile")
                if not eng.store.integrity_ok():
                    res.problems.append("integrity_check failed after open")
            finally:
                eng.close()
    res.seconds = time.perf_counter() - t0
    return res


# -- a kill while the index file is written ----------------------------------------------------------------
SIZES = (50, 2000)


def index_writer_main(path: str) -> None:
    """Save two different indexes to ``path`` alternately, forever (until killed)."""
    import numpy as np

    from assistant.index import VectorIndex

    rng = np.random.default_rng(0)
    indexes = []
    for n in SIZES:
        ix = VectorIndex(384)
        ix.add(np.arange(n, dtype=np.int64), rng.standard_normal((n, 384)).astype(np.float32))
        indexes.append(ix)
    print("READY", flush=True)
    i = 0
    while True:
        indexes[i % 2].save(Path(path))
        i += 1


def index_write_kill(seed: int, *, workdir: Path | None = None) -> tuple[bool, str]:
    """Kill an index-saving child at a random moment; (the final path loads intact, detail)."""
    from assistant.index import VectorIndex

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(dir=workdir, prefix=f"chaos-index-{seed}-") as tmp:
        path = Path(tmp) / "index.faiss"
        p = _spawn("--index-writer", str(path))
        if p.stdout.readline().strip() != "READY":
            p.kill()
            return False, "the index writer did not start: " + p.stderr.read()[-500:]
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        leftovers = [x.name for x in Path(tmp).iterdir() if x.name != path.name]
        ix = VectorIndex.load(path, 384)
        ok = not ix.stale and ix.ntotal in SIZES
        return ok, f"loaded {ix.ntotal} vectors, stale={ix.stale}, temp files at kill: {leftovers}"


# -- main ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--page-size", type=int, default=200)
    ap.add_argument("--workers", type=int, default=0, help="ingest on Ray with N worker actors")
    ap.add_argument(
        "--ray-address", default=None, help="with --workers: an existing cluster (else one per child)"
    )
    ap.add_argument(
        "--index-kills", type=int, default=None, help="kills during index writes (default: --seeds)"
    )
    ap.add_argument("--json", type=Path, default=None, help="write every seed's result here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--index-writer", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child_main(a.child)
        return 0
    if a.index_writer:
        index_writer_main(a.index_writer)
        return 0
    results = []
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        r = run_seed(seed, docs=a.docs, page_size=a.page_size, workers=a.workers, ray_address=a.ray_address)
        results.append(r)
        print(
            f"seed {seed}: {'consistent' if r.consistent else 'INCONSISTENT'}; killed={r.killed} after "
            f"{r.committed_at_kill} committed docs; Drive downloads {r.downloads_killed_run} + {r.downloads_rerun}; "
            f"reconcile after the kill {r.repaired_at_restart}; {r.seconds:.1f} s"
            + "".join(f"\n  - {p}" for p in r.problems),
            flush=True,
        )
    ok = sum(r.consistent for r in results)
    index_ok = 0
    n_index = a.seeds if a.index_kills is None else a.index_kills
    for seed in range(n_index):
        good, detail = index_write_kill(seed)
        index_ok += good
        if not good:
            print(f"index kill {seed}: TORN ({detail})")
    print(
        f"{ok}/{len(results)} consistent ({a.docs} documents per seed, "
        f"{sum(r.killed for r in results)} killed mid-run); index killed mid-write {index_ok}/{n_index} loadable"
    )
    if a.json:
        a.json.write_text(json.dumps([asdict(r) | {"consistent": r.consistent} for r in results], indent=1))
    return 0 if ok == len(results) and index_ok == n_index else 1


if __name__ == "__main__":
    sys.exit(main())
