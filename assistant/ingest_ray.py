"""Ingestion fanned out on Ray: fetch, parse, chunk and embed run in worker actors; the driver writes.

``RayStage`` is an ``assistant.sync.PrepareStage``. The Syncer (the one ingestion loop, unchanged)
hands it a page's items; it cuts them into slices, runs each slice on a ``_Worker`` actor — which
fetches, parses and chunks the items with its own copy of the connector and embeds their chunks
with its own embedder, on a GPU when its node has one — and yields the slices back IN LISTING
ORDER. The Syncer in the driver process stays the only writer: it commits each slice and saves a
page's cursor after the page's last slice, so the in-process guarantees hold — a kill at any moment
loses at most the uncommitted page, which the next run lists again (nothing lost, nothing twice).

``ray_session`` starts a small local instance (``assistant ingest … --workers N``: ``N`` CPUs, a
200 MB object store, no dashboard, no usage statistics, logs in a temporary folder) or connects to
a running cluster (``--ray-address auto | HOST:PORT | ray://HOST:PORT``), and shuts it down after.

What it does not do: write to the store or the index; overlap pages (the slices of one page run in
parallel, the next page starts once this one is committed); install Ray
(``pip install 'workplace-assistant[ray]'``). A connector goes to the workers through
``connector_factory`` when it cannot be pickled as it is (it holds locks or open sessions).
"""

from __future__ import annotations

import logging
import math
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from assistant.chunking import Chunker
from assistant.documents import ItemRef
from assistant.errors import AssistantError, ConfigError
from assistant.sync import PreparedGroup, Syncer, SyncReport, Todo, _Prepared, embedding_texts, prepare_item

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'workplace-assistant[ray]'  (or: pip install 'ray[client]==2.60.0')"


@dataclass(frozen=True)
class RayOptions:
    """How to run ingestion on Ray (``assistant ingest --workers N [--ray-address ADDR]``)."""

    workers: int = 2  # worker actors; each fetches, parses, chunks and embeds its slices
    address: str | None = None  # None: start a local instance; "auto", "HOST:PORT" or "ray://HOST:PORT"
    # builds each worker's embedder (picklable, no arguments); None: the configured embedder
    embedder_factory: Callable[[], Any] | None = None
    object_store_mb: int = (
        200  # the local instance's object store (pages of chunks, not files, pass through it)
    )
    items_per_task: int = 32  # at most this many items in one slice (one actor call)
    start_timeout_s: float = 300.0  # workers (placed, model loaded) must answer within this

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1 (got {self.workers}).")


def import_ray():
    """The ``ray`` module, or a ConfigError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            f"--workers and --ray-address need Ray, which is not installed: {INSTALL_HINT}. "
            "Leave both out to ingest in this process."
        ) from None
    return ray


def check_address(address: str, *, timeout_s: float = 3.0) -> None:
    """Fail fast, with the fix, when ``HOST:PORT`` or ``ray://HOST:PORT`` does not answer (``ray.init``
    itself would retry for a minute). ``auto`` is checked by Ray (it looks for a local cluster)."""
    if address == "auto":
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("ray", "tcp") or not parts.hostname or not parts.port:
        raise ConfigError(
            f"--ray-address {address!r} is not a Ray address: use auto (a cluster this node belongs to), "
            "HOST:PORT (the head's GCS port, 6379 by default) or ray://HOST:PORT (Ray client, 10001 by default)."
        )
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(
            f"No Ray cluster answers at {address} ({e.strerror or e}). Start one there "
            "(`ray start --head`), check the host and port, or leave out --ray-address to start a local "
            "instance with --workers N."
        ) from None


def _no_usage_stats() -> None:
    """Ray reports usage statistics by default; an ingest never phones home (Ray's own switch: it sets
    RAY_USAGE_STATS_ENABLED=0 for this process and the processes ray.init starts)."""
    from ray._common.usage import usage_lib

    usage_lib.set_usage_stats_enabled_via_env_var(False)


@contextmanager
def ray_session(options: RayOptions) -> Iterator[Any]:
    """Ray, initialised for one ingestion: a local instance, or a connection to ``options.address``.

    An instance the caller already initialised (a test fixture, a notebook) is used and left running."""
    ray = import_ray()
    if options.address:
        check_address(options.address)  # a wrong flag is reported even when Ray is already running
    if ray.is_initialized():
        yield ray
        return
    _no_usage_stats()
    temp_dir = None
    try:
        if options.address:
            ray.init(address=options.address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            temp_dir = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must fit 107 bytes
            ray.init(
                num_cpus=max(2, options.workers),
                object_store_memory=options.object_store_mb * 1024 * 1024,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                _temp_dir=temp_dir,
                # Ray's own OOM killer acts on the whole machine's memory: on a shared host another
                # program's peak would kill our workers; the kernel's OOM killer still applies
                _system_config={"memory_monitor_refresh_ms": 0},
            )
    except ConnectionError as e:
        raise ConfigError(
            f"Could not connect to the Ray cluster at {options.address!r}: {str(e).rstrip('.')}. With auto, run on a node "
            "of a running cluster (`ray start --head` starts one); or leave out --ray-address to start a "
            "local instance with --workers N."
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


class _Worker:
    """One Ray actor: its own connector, embedder and chunker; prepares slices of items."""

    def __init__(
        self,
        connector_factory: Callable[[], Any],
        embedder_factory: Callable[[], Any],
        chunking: dict,
        *,
        source: str,
        max_parse_bytes: int,
        fetch_threads: int,
    ) -> None:
        logging.basicConfig(level=logging.WARNING)
        self.connector = connector_factory()
        self.embedder = embedder_factory()
        self.chunker = Chunker(self.embedder.tokenizer, **chunking)
        self.source, self.max_parse_bytes, self.fetch_threads = source, max_parse_bytes, fetch_threads

    def info(self) -> dict:
        model = getattr(self.embedder, "model", None)
        device = str(getattr(model, "device", "cpu"))
        return {
            "name": getattr(self.embedder, "name", "embedder"),
            "dim": int(self.embedder.dim),
            "device": device,
        }

    def prepare(self, items: list[tuple[ItemRef, str | None]]) -> tuple[list[_Prepared], np.ndarray]:
        """Fetch, parse and chunk ``items`` (a thread pool: connectors are I/O bound), then embed every
        new chunk in one call. Returns the prepared items in order and their (n chunks, dim) vectors."""
        work = partial(
            self._one, source=self.source, chunker=self.chunker, max_parse_bytes=self.max_parse_bytes
        )
        threads = max(1, min(self.fetch_threads, len(items)))
        if threads == 1:
            prepared = [work(item) for item in items]
        else:
            with ThreadPoolExecutor(threads, thread_name_prefix="ray-fetch") as pool:
                prepared = list(pool.map(work, items))
        texts = embedding_texts(prepared)
        vectors = self.embedder.embed(texts) if texts else np.zeros((0, self.embedder.dim), dtype=np.float32)
        return prepared, np.ascontiguousarray(vectors, dtype=np.float32)

    def _one(self, item: tuple[ItemRef, str | None], **kw) -> _Prepared:
        ref, known_hash = item
        return prepare_item(self.connector, ref, known_hash, **kw)


class RayStage:
    """A ``PrepareStage`` whose slices run on ``options.workers`` actors (Ray must be initialised)."""

    def __init__(
        self,
        ray,
        options: RayOptions,
        *,
        source: str,
        connector_factory: Callable[[], Any],
        embedder_factory: Callable[[], Any],
        chunking: dict,
        max_parse_bytes: int,
        fetch_threads: int,
    ) -> None:
        from ray.util import ActorPool

        self.ray, self.options = ray, options
        gpus = float(ray.cluster_resources().get("GPU", 0))
        # each actor takes one CPU and, where the cluster has GPUs, an equal share of them (at most one)
        share = min(1.0, gpus / options.workers) if gpus else 0
        actor = ray.remote(num_cpus=1, num_gpus=share)(_Worker)
        self.actors = [
            actor.remote(
                connector_factory,
                embedder_factory,
                chunking,
                source=source,
                max_parse_bytes=max_parse_bytes,
                fetch_threads=max(1, fetch_threads // options.workers),
            )
            for _ in range(options.workers)
        ]
        try:
            infos = ray.get([a.info.remote() for a in self.actors], timeout=options.start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise ConfigError(
                f"{options.workers} Ray workers (1 CPU each) did not start within {options.start_timeout_s:.0f} s; "
                f"the cluster has {ray.cluster_resources().get('CPU', 0):.0f} CPUs in all, other jobs may hold "
                "them. Use fewer --workers or a larger cluster."
            ) from None
        except Exception as e:
            self.close()
            raise AssistantError(f"A Ray ingestion worker could not start: {_cause(e)}") from None
        dims = {i["dim"] for i in infos}
        if len(dims) != 1:
            self.close()
            raise ConfigError(f"Ray workers loaded embedders of different sizes: {infos}.")
        self.embedder_info = SimpleNamespace(name=infos[0]["name"], dim=dims.pop())
        self.devices = [i["device"] for i in infos]
        self.pool = ActorPool(self.actors)
        log.info("Ray ingestion: %d workers on %s", len(self.actors), ", ".join(self.devices))

    def __call__(self, todo: Todo) -> Iterator[PreparedGroup]:
        if not todo:
            return
        # about three slices per worker: the driver commits the first slices while later ones still run
        size = max(1, min(self.options.items_per_task, math.ceil(len(todo) / (3 * len(self.actors)))))
        slices = [todo[i : i + size] for i in range(0, len(todo), size)]
        payloads = [[(ref, None if row is None else row.content_hash) for ref, row in s] for s in slices]
        results = self.pool.map(lambda a, items: a.prepare.remote(items), payloads)  # in submission order
        for group in slices:
            try:
                prepared, vectors = next(results)
            except Exception as e:  # a worker died (killed, out of memory): the page is not committed
                raise AssistantError(
                    f"A Ray ingestion worker failed: {_cause(e)}. The page in progress was not committed; "
                    "run the ingest again to resume from the last committed page."
                ) from None
            yield group, prepared, vectors

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # already gone
                pass


def _cause(e: BaseException) -> str:
    """The first line of a Ray error (its headline; the rest is a traceback or advice), at most 500 chars."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:500]


def _picklable(ray, connector) -> Callable[[], Any]:
    """A factory that returns ``connector`` on a worker, or a ConfigError when it cannot travel."""
    try:
        blob = ray.cloudpickle.dumps(connector)
    except Exception as e:
        raise ConfigError(
            f"The connector {connector.name!r} cannot be sent to Ray workers ({type(e).__name__}: {e}); "
            "pass connector_factory (a picklable function that builds it) to Engine.sync."
        ) from None
    return partial(ray.cloudpickle.loads, blob)


def sync_on_ray(
    engine,
    connector,
    options: RayOptions,
    *,
    full: bool = False,
    progress: Callable[[int, str], None] | None = None,
    connector_factory: Callable[[], Any] | None = None,
) -> SyncReport:
    """``Engine.sync`` on Ray: the workers prepare, this process writes (the Syncer, as in-process)."""
    s = engine.settings
    with ray_session(options) as ray:
        stage = RayStage(
            ray,
            options,
            source=connector.name,
            connector_factory=connector_factory or _picklable(ray, connector),
            embedder_factory=options.embedder_factory or engine.embedder_factory(),
            chunking={
                "max_tokens": s.chunking.max_tokens,
                "overlap_tokens": s.chunking.overlap_tokens,
                "min_tokens": s.chunking.min_section_tokens,
            },
            max_parse_bytes=int(s.sync.max_file_mb * 1e6),
            fetch_threads=s.sync.fetch_workers,
        )
        try:
            engine.check_embedder(stage.embedder_info)
            syncer = Syncer(
                connector,
                store=engine.store,
                index=engine.index,
                embedder=None,
                chunker=None,
                fetch_workers=s.sync.fetch_workers,
                save_index=engine.save_index,
                max_parse_bytes=int(s.sync.max_file_mb * 1e6),
                progress=progress,
                stage=stage,
                dim=engine.dim,
            )
            return syncer.run(full=full)
        finally:
            stage.close()
