"""Ingestion throughput in-process vs on Ray (issue #20 §2): chunks/s against the Drive fake, real embedder.

On a quiet machine (the figures in the README come from this command; about 10 minutes on 2 cores):

    PYTHONPATH=. python scripts/bench_ingest_ray.py --out results/bench_ingest_ray --docs 300 --runs 3

Smoke check (seconds of work, figures meaningless): ``... --docs 6 --runs 1 --modes inprocess,ray1``.

A local HTTP fake of Google Drive (``tests/fakes/gdrive.py``, served by this process) holds ``--docs``
handbook pages (Markdown files and Google Docs, in My Drive folders and a shared drive); every run
ingests all of them with the real Google Drive connector into a fresh data_dir with the configured
embedder (``embedding.backend = auto``: ONNX int8 on a CPU, built once into a shared model cache
during the warm-up). Modes:

- ``inprocess``: ``Engine.sync`` as ``assistant ingest`` runs it (fetch + parse threads, one embedder);
- ``ray1`` / ``ray2``: ``Engine.sync(ray=RayOptions(workers=N))`` on a local Ray instance started once
  per mode (its start-up is reported apart); each run creates its worker actors, which load the model
  themselves — that start-up is inside the run's wall time, as it is for ``assistant ingest --workers``.

Per mode: one warm-up run, then ``--runs`` timed runs; reported: wall seconds of the sync call,
chunks/s over that wall time, and chunks/s over the sync loop alone (``SyncReport.seconds``: without
model or actor start-up), each as median and min–max. Writes ``bench_ingest_ray.json`` and
``bench_ingest_ray.md`` to ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from assistant.engine import Engine
from assistant.ingest_ray import RayOptions, ray_session
from assistant.settings import load_settings
from connectors.google_drive import DriveConfig, GoogleDriveConnector
from tests.fakes.gdrive import GDOC, FakeDrive


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build_world(world, corpus: Path, n: int) -> int:
    """``n`` handbook pages as Drive files: Markdown and Google Docs, four folders and a shared drive."""
    pages = sorted(corpus.rglob("*.md"))[:n]
    drive = world.add_drive("Handbook", members={world.admin: "organizer"})
    root = world.root(world.admin)
    parents = [world.add_folder(f"Team {i}", root) for i in range(4)] + [drive]
    for i, p in enumerate(pages):
        mime, name = ("text/markdown", p.name) if i % 3 else (GDOC, p.stem)
        world.add_file(name, mime, p.read_text(encoding="utf-8", errors="replace"), parents[i % len(parents)])
    return len(pages)


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def one_run(fake, cfg: DriveConfig, settings_kw: dict, ray_opts: RayOptions | None, workdir: Path) -> dict:
    data = Path(tempfile.mkdtemp(prefix="data-", dir=workdir))
    settings = load_settings(environ={}, overrides={"data_dir": str(data), **settings_kw})
    with Engine.open(settings) as eng:
        if ray_opts is None:
            _ = (
                eng.embedder
            )  # the model load is not part of the in-process sync (it is loaded once per process)
        t = time.perf_counter()
        rep = eng.sync(
            GoogleDriveConnector(cfg), ray=ray_opts, connector_factory=partial(GoogleDriveConnector, cfg)
        )
        wall = time.perf_counter() - t
    shutil.rmtree(data, ignore_errors=True)
    if rep.failed:
        raise RuntimeError(f"{rep.failed} documents failed: {rep.failures[:3]}")
    return {
        "wall_s": wall,
        "loop_s": rep.seconds,
        "docs": rep.added,
        "chunks": rep.chunks,
        "chunks_per_s": rep.chunks / wall,
        "loop_chunks_per_s": rep.chunks / rep.seconds,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared/corpora/sourcegraph-handbook")
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--page-size", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--modes", default="inprocess,ray1,ray2")
    ap.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx-int8"])
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    settings_kw = {
        "model_cache_dir": str(work / "cache"),  # the ONNX export is built once, in the first warm-up
        "embedding": {"backend": a.backend},
        "index": {"save_every_s": 0},
    }
    res: dict = {
        "command": " ".join(sys.argv),
        "cpu_count": os.cpu_count(),
        "backend": a.backend,
        "modes": {},
    }
    with FakeDrive() as fake:
        n = build_world(fake.world, a.corpus, a.docs)
        cfg = DriveConfig(
            credentials_info=fake.world.service_account_info(),
            subject=fake.world.admin,
            api_endpoint=fake.url,
            token_uri=fake.url + "/token",
            all_shared_drives=True,
            page_size=a.page_size,
        )
        log(f"fake Drive with {n} handbook pages at {fake.url}")
        for mode in a.modes.split(","):
            workers = 0 if mode == "inprocess" else int(mode.removeprefix("ray"))
            opts = RayOptions(workers=workers) if workers else None
            entry: dict = {"workers": workers}
            t = time.perf_counter()
            with ray_session(opts) if opts else nullcontext():
                entry["ray_start_s"] = time.perf_counter() - t if opts else 0.0
                log(f"{mode}: warm-up" + (f" (Ray started in {entry['ray_start_s']:.1f} s)" if opts else ""))
                entry["warmup"] = one_run(fake, cfg, settings_kw, opts, work)
                runs = []
                for i in range(a.runs):
                    r = one_run(fake, cfg, settings_kw, opts, work)
                    runs.append(r)
                    log(
                        f"{mode} run {i + 1}/{a.runs}: {r['docs']} docs, {r['chunks']} chunks, {r['wall_s']:.1f} s "
                        f"= {r['chunks_per_s']:.1f} chunks/s (loop alone {r['loop_chunks_per_s']:.1f})"
                    )
            entry["runs"] = runs
            for k in ("wall_s", "chunks_per_s", "loop_chunks_per_s"):
                entry[k] = summary([r[k] for r in runs])
            res["modes"][mode] = entry
    shutil.rmtree(work, ignore_errors=True)
    (a.out / "bench_ingest_ray.json").write_text(json.dumps(res, indent=1))
    md = markdown(res)
    (a.out / "bench_ingest_ray.md").write_text(md)
    print(md)


def _mmm(s: dict, fmt: str) -> str:
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}–{s['max']:{fmt}})"


def markdown(res: dict) -> str:
    lines = [
        f"{res['cpu_count']} CPUs, embedding backend {res['backend']}",
        "",
        "| mode | chunks | wall s | chunks/s | chunks/s, loop alone | Ray start s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    base = res["modes"].get("inprocess")
    for mode, e in res["modes"].items():
        lines.append(
            f"| {mode} | {e['runs'][0]['chunks']} | {_mmm(e['wall_s'], '.1f')} | {_mmm(e['chunks_per_s'], '.1f')} | "
            f"{_mmm(e['loop_chunks_per_s'], '.1f')} | {e['ray_start_s']:.1f} |"
        )
    if base:
        for mode, e in res["modes"].items():
            if mode != "inprocess":
                ratio = e["chunks_per_s"]["median"] / base["chunks_per_s"]["median"]
                lines.append(f"\n{mode} / inprocess (median chunks/s): {ratio:.2f}×")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
