"""The one ingestion loop: changes → fetch → parse → chunk → embed → store + index → cursor.

Every connector goes through here, so durability and failure handling are written once:
- Items of a page are fetched and parsed in a thread pool (connectors are I/O bound), embedded in
  one batch per page, then written one document per transaction. The page's cursor is saved only
  after all of its documents are committed, so a crash re-lists at most the unfinished page and the
  already-committed documents are skipped by version.
- Unchanged documents are never re-fetched when the listing carries a version, and never
  re-embedded when their parsed text (and title) hash is unchanged — a permission or rename-only
  change updates the rows and keeps the vectors.
- A per-item error is recorded as a ``Failure`` (shown by ``status``) and retried at the start of
  the next run; it never aborts the run. ``NotFound`` means the item is gone: it is deleted.
- ``CursorExpired`` restarts a full enumeration once; the last page of a full enumeration prunes
  documents the source no longer lists.
What it does not do: schedule itself (the CLI or a task runner calls it) or talk to any API.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

import numpy as np

from assistant.chunking import Chunker
from assistant.documents import ChangePage, Chunk, Document, Failure, ItemRef
from assistant.errors import AssistantError, CursorExpired, EmptyDocument, NotFound, UnsupportedFormat
from assistant.parsing import parse

log = logging.getLogger(__name__)
_H1 = re.compile(r"^#\s+(.+?)\s*$", re.M)
EMBED_GROUP = 128  # chunks embedded (and documents written) at a time within a page


@dataclass
class SyncReport:
    source: str
    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    failed: int = 0
    chunks: int = 0  # chunks embedded in this run
    fetched: int = 0
    pages: int = 0
    seconds: float = 0.0
    restarted: bool = False
    failures: list[Failure] = field(default_factory=list)
    skipped: int = (
        0  # files of a type we cannot read: recorded once (as documents without text), not failures
    )

    def line(self) -> str:
        skipped = f", {self.skipped} skipped (unsupported type)" if self.skipped else ""
        return (
            f"{self.source}: {self.added} added, {self.updated} updated, {self.deleted} deleted, "
            f"{self.unchanged} unchanged, {self.failed} failed{skipped}; {self.chunks} chunks embedded in "
            f"{self.seconds:.1f} s"
        )

    def as_dict(self) -> dict:
        d = asdict(self)
        d["failures"] = [asdict(f) for f in self.failures]
        return d


@dataclass
class _Prepared:
    ref: ItemRef
    doc: Document | None = None
    text: str = ""
    content_hash: str = ""
    chunks: list[Chunk] | None = None
    failure: Failure | None = None
    gone: bool = False
    skipped: str = ""  # why the item holds no text although it was read (an unsupported type)


def content_hash(doc: Document, text: str) -> str:
    h = hashlib.sha256()
    for part in (doc.title, "\x00", text):
        h.update(part.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


Todo = list[tuple[ItemRef, object]]  # (item, its stored row or None), in listing order
# (the items of one group, their prepared results, (n chunks of the group, dim) float32 vectors)
PreparedGroup = tuple[Todo, list[_Prepared], np.ndarray]


class PrepareStage(Protocol):
    """Fetch, parse, chunk and embed a page's items; yield them in groups, IN ORDER.

    The in-process default is ``Syncer.prepare_local``; ``assistant.ingest_ray.RayStage`` runs the
    same steps on Ray workers. A stage never writes: the Syncer commits each group it yields."""

    def __call__(self, todo: Todo) -> Iterator[PreparedGroup]: ...


def prepare_item(
    connector, ref: ItemRef, known_hash: str | None, *, source: str, chunker: Chunker, max_parse_bytes: int
) -> _Prepared:
    """Fetch, parse and chunk one item (touches no shared state). ``known_hash`` is the stored content
    hash: when the parsed text and title hash to it, the chunks (and vectors) are kept."""
    p = _Prepared(ref)
    stage = "fetch"
    try:
        doc = connector.fetch(ref)
        if doc.source != source:
            doc = replace(doc, source=source)
        stage = "parse"
        if len(doc.content) > max_parse_bytes:
            raise AssistantError(
                f"{len(doc.content) / 1e6:.1f} MB is over the parse limit of {max_parse_bytes / 1e6:.0f} MB"
            )
        try:
            text = parse(doc.content, doc.mime, name=doc.path, max_bytes=max_parse_bytes)
        except EmptyDocument:
            text = ""  # known and listed, but nothing to search: no chunks, not a failure
        except UnsupportedFormat as e:
            # an image or archive: recorded once with its version, so the next run skips it unread
            # instead of failing it again on every run
            text, p.skipped = "", str(e)
            doc = replace(doc, metadata={**doc.metadata, "skipped": str(e)[:300]})
        if doc.metadata.get("title_from") == "filename" and (m := _H1.search(text[:2000])):
            doc = replace(doc, title=m.group(1).strip()[:200])  # the parsed document's own title wins
        p.doc, p.text = doc, text
        p.content_hash = content_hash(doc, text)
        if known_hash is not None and known_hash == p.content_hash:
            p.chunks = None  # same text and title: keep the vectors, update rows and access only
        else:
            stage = "chunk"
            p.chunks = chunker.chunk(doc.id, doc.title, text)
    except NotFound:
        p.gone = True
    except AssistantError as e:
        p.failure = Failure(source, ref.id, stage, f"{type(e).__name__}: {e}")
    except Exception as e:  # a bug or an unexpected library error: still only this item fails
        log.exception("%s: %s failed at %s", source, ref.id, stage)
        p.failure = Failure(source, ref.id, stage, f"{type(e).__name__}: {e}")
    return p


def embedding_texts(prepared: list[_Prepared]) -> list[str]:
    """The texts to embed for a group, in order: every chunk of every item that has new chunks."""
    return [c.embedding_text(p.doc.title) for p in prepared if p.chunks for c in p.chunks]


class Syncer:
    """Runs one connector into one store and index. Built by ``Engine.sync``.

    ``stage`` (default: ``prepare_local``, threads in this process) prepares the items; whatever the
    stage, this object alone writes, group by group in listing order, and saves each page's cursor
    after its last group is committed. ``embedder`` may be None when the stage embeds elsewhere
    (then ``dim`` is required)."""

    def __init__(
        self,
        connector,
        *,
        store,
        index,
        embedder,
        chunker: Chunker,
        fetch_workers: int = 8,
        save_index: Callable[[bool], None],
        max_parse_bytes: int = 50 * 1024 * 1024,
        progress: Callable[[int, str], None] | None = None,
        stage: PrepareStage | None = None,
        dim: int | None = None,
    ) -> None:
        self.c = connector
        self.source = connector.name
        self.store, self.index, self.embedder, self.chunker = store, index, embedder, chunker
        self.fetch_workers = fetch_workers
        self.save_index = save_index
        self.max_parse_bytes = max_parse_bytes
        self.progress = progress or (lambda n, what: None)
        self._failed_on_retry: set[str] = set()
        self.stage: PrepareStage = stage or self.prepare_local
        self.dim = int(dim if dim is not None else embedder.dim)

    # -- the loop -------------------------------------------------------------------------------
    def run(self, *, full: bool = False) -> SyncReport:
        rep = SyncReport(self.source)
        t0 = time.perf_counter()
        run_id = self.store.start_run(self.source)
        status = "failed"
        try:
            retry = [ItemRef(f.item_id) for f, _ in self.store.failures(self.source)]
            if retry:
                self._process(retry, rep)
                self._failed_on_retry = {f.item_id for f in rep.failures}
            cursor = None if full else self.store.get_cursor(self.source)
            try:
                self._pages(self.c.changes(cursor), rep)
            except CursorExpired as e:
                log.warning("%s: cursor expired (%s); re-enumerating everything", self.source, e)
                rep.restarted = True
                self.store.set_cursor(self.source, None)
                self._pages(self.c.changes(None), rep)
            status = "ok" if rep.failed == 0 else "partial"
        finally:
            self.save_index(True)
            rep.seconds = time.perf_counter() - t0
            self.store.finish_run(run_id, status, {k: v for k, v in rep.as_dict().items() if k != "failures"})
        return rep

    def _pages(self, pages: Iterable[ChangePage], rep: SyncReport) -> None:
        for page in pages:
            for doc_id in dict.fromkeys(page.deletions):
                self._delete(doc_id, rep)
            # the same item can be listed twice in one page (Graph delta): the last one wins
            refs = list({r.id: r for r in page.upserts}.values())
            self._process(refs, rep)
            if page.prune:
                self._prune(rep)
            self.store.set_cursor(self.source, page.next_cursor)
            rep.pages += 1
            self.save_index(False)

    def _prune(self, rep: SyncReport) -> None:
        live = set(self.c.list_ids())
        for doc_id in self.store.document_ids(self.source) - live:
            self._delete(doc_id, rep)
        for f, _ in self.store.failures(self.source):
            if f.item_id not in live:
                self.store.clear_failure(self.source, f.item_id)

    def _delete(self, doc_id: str, rep: SyncReport) -> None:
        existed = self.store.get_document(self.source, doc_id) is not None
        removed = self.store.delete_document(self.source, doc_id)
        self.index.remove(removed)
        if existed:
            rep.deleted += 1
            self.progress(1, "deleted")

    # -- one batch of items ---------------------------------------------------------------------
    def _process(self, refs: list[ItemRef], rep: SyncReport) -> None:
        todo = []
        for ref in refs:
            if ref.id in self._failed_on_retry:
                continue  # it failed again moments ago at the start of this run: once per run is enough
            row = self.store.get_document(self.source, ref.id)
            if row is not None and ref.version is not None and row.version == ref.version:
                rep.unchanged += 1
                self.progress(1, "unchanged")
            else:
                todo.append((ref, row))
        for group, prepared, vectors in self.stage(todo):
            self._write(prepared, group, vectors, rep)

    def prepare_local(self, todo: Todo) -> Iterator[PreparedGroup]:
        """The in-process stage: fetch and parse the page's items in a thread pool, then embed in
        groups of about EMBED_GROUP chunks (as efficient as one call per page) so the Syncer writes
        each group's documents at once and progress advances per file, not per page."""
        if not todo:
            return
        workers = max(1, min(self.fetch_workers, len(todo)))
        if workers == 1:
            prepared = [self._prepare(ref, row) for ref, row in todo]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix=f"fetch-{self.source}") as pool:
                prepared = list(pool.map(lambda t: self._prepare(*t), todo))
        group: list[int] = []
        n_texts = 0
        for i, p in enumerate(prepared):
            group.append(i)
            n_texts += len(p.chunks or ())
            if n_texts >= EMBED_GROUP or i == len(prepared) - 1:
                ps = [prepared[j] for j in group]
                texts = embedding_texts(ps)
                vectors = self.embedder.embed(texts) if texts else np.zeros((0, self.dim), dtype=np.float32)
                yield [todo[j] for j in group], ps, vectors
                group, n_texts = [], 0

    def _write(self, prepared: list[_Prepared], todo: Todo, vectors: np.ndarray, rep: SyncReport) -> None:
        rep.fetched += sum(1 for p in prepared if p.doc is not None or p.gone)
        rep.chunks += sum(len(p.chunks) for p in prepared if p.chunks)
        offset = 0
        for p, (ref, row) in zip(prepared, todo):
            if p.gone:
                self._delete(ref.id, rep)
                continue
            if p.failure is not None:
                self.store.record_failure(p.failure)
                rep.failed += 1
                rep.failures.append(p.failure)
                self.progress(1, "failed")
                continue
            vecs = None
            if p.chunks:
                vecs = vectors[offset : offset + len(p.chunks)]
                offset += len(p.chunks)
            elif p.chunks is not None:
                vecs = np.zeros((0, self.dim), dtype=np.float32)  # an empty document: no chunks
            _, removed, added = self.store.upsert_document(p.doc, p.content_hash, p.chunks, vecs)
            self.index.remove(removed)
            if added:
                self.index.add(np.array(added, dtype=np.int64), vecs)
            if p.skipped:
                rep.skipped += 1
                self.progress(1, "skipped")
            elif row is None:
                rep.added += 1
                self.progress(1, "added")
            elif p.chunks is None and row.version == p.doc.version and row.content_hash == p.content_hash:
                rep.unchanged += 1
                self.progress(1, "unchanged")
            else:
                rep.updated += 1
                self.progress(1, "updated")

    def _prepare(self, ref: ItemRef, row) -> _Prepared:
        """Fetch, parse and chunk one item (runs in a worker thread; touches no shared state)."""
        return prepare_item(
            self.c,
            ref,
            None if row is None else row.content_hash,
            source=self.source,
            chunker=self.chunker,
            max_parse_bytes=self.max_parse_bytes,
        )
