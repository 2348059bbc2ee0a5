"""Access control at scale, on a small synthetic tenant: nobody ever sees a chunk they may not read.

Covers every vector index kind (flat, hnsw, ivf, ivfpq, auto), keyword / dense / hybrid retrieval,
both ACL paths of the dense side (exact scoring of a small allowed set, and ANN with an ID selector),
the FTS5 ``acl`` column (filter inside FTS5, access changes, the migration of older stores), and the
channel rule (a chunk is used only when every member may read it).
"""

from __future__ import annotations

import hashlib
import random
import sqlite3

import numpy as np
import pytest

from assistant.documents import Access, Chunk, Document, Principals
from assistant.engine import Engine
from assistant.retrieval import Audience
from assistant.store import Store
from tests.conftest import make_settings

DIM = 32
WORDS = [
    "budget",
    "travel",
    "laptop",
    "holiday",
    "onboarding",
    "security",
    "payroll",
    "deploy",
    "incident",
    "review",
    "hiring",
    "benefits",
    "expense",
    "vendor",
    "contract",
    "roadmap",
]
USERS = [f"u{i}@corp.example" for i in range(24)]
GROUPS = [f"g{i}@corp.example" for i in range(8)]


class TinyEmbedder:
    """Deterministic text -> unit vector (a hash seeds the generator): meaning does not matter here."""

    name, dim, tokenizer = "tiny", DIM, None

    def embed_query(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
        return v / np.linalg.norm(v)


def _access(rng: random.Random) -> Access:
    r = rng.random()
    if r < 0.1:
        return Access()  # unknown permissions: nobody
    if r < 0.2:
        return Access.everyone()
    if r < 0.3:
        return Access(domains=frozenset(["corp.example"]))
    return Access(
        users=frozenset(rng.sample(USERS, rng.randint(0, 2))),
        groups=frozenset(rng.sample(GROUPS, rng.randint(0, 2))),
    )


def _tenant(store: Store, n_docs: int = 160, seed: int = 7) -> dict[int, Access]:
    """~1,300 chunks (enough to train IVF); half written one by one, half in one bulk transaction.
    Returns chunk id -> the Access its document was given (the test's own ground truth)."""
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    store.set_meta("embedding_model", f"tiny:{DIM}")
    store.set_meta("embedding_dim", str(DIM))
    truth: dict[int, Access] = {}
    bulk = []
    for d in range(n_docs):
        access = _access(rng)
        n = rng.randint(4, 12)
        chunks = [Chunk(f"d{d}", o, " ".join(rng.choices(WORDS, k=12)), ("Title",)) for o in range(n)]
        vecs = nrng.standard_normal((n, DIM)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        doc = Document(
            id=f"d{d}",
            source="t",
            path=f"t/d{d}",
            title=f"doc {d}",
            mime="text/plain",
            content=b"",
            access=access,
            version="1",
        )
        if d % 2:
            bulk.append((doc, "h", chunks, vecs))
        else:
            _, _, added = store.upsert_document(doc, "h", chunks, vecs)
            truth.update(dict.fromkeys(added, access))
    ids = store.add_documents_bulk(bulk)
    truth.update(zip(ids, [a for doc, _, chunks, _ in bulk for a in [doc.access] * len(chunks)]))
    return truth


def _askers(seed: int = 3) -> list[Audience]:
    rng = random.Random(seed)
    people = [Principals(u, frozenset(rng.sample(GROUPS, rng.randint(0, 3)))) for u in USERS[:12]]
    people += [Principals(None), Principals("x@partner.example", frozenset([GROUPS[0]]))]
    out = [Audience.of(p) for p in people]
    out += [Audience(tuple(rng.sample(people, rng.randint(2, 5)))) for _ in range(6)]  # channels
    out.append(Audience(()))  # nobody in the audience: nothing
    return out


def _may_read(access: Access, audience: Audience) -> bool:
    return bool(audience.members) and all(access.allows(m) for m in audience.members)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfpq", "auto"])
def test_nobody_sees_a_chunk_they_may_not_read(tmp_path, kind):
    settings = make_settings(
        tmp_path / "data",
        index={"kind": kind, "auto_threshold": 1000, "exact_max": 200},
        retrieval={"candidates": 40},
    )
    (tmp_path / "data").mkdir()
    truth = _tenant(Store(tmp_path / "data" / "store.sqlite"))
    engine = Engine.open(settings, embedder=TinyEmbedder())
    # common terms get pruned (900) or, when every term is over budget, AND-ed (300): the filter must hold anyway
    engine.store.keyword_postings_budget = 300 if kind in ("hnsw", "ivf") else 900
    try:
        assert engine.index.ntotal == len(truth)
        want = {
            "flat": "IndexFlatIP",
            "hnsw": "IndexHNSWFlat",
            "ivf": "IndexIVFFlat",
            "ivfpq": "IndexIVFPQ",
            "auto": "IndexIVFPQ",
        }[kind]
        assert type(engine.index._inner()).__name__ == want
        paths = set()
        for audience in _askers():
            readable = {c for c, a in truth.items() if _may_read(a, audience)}
            paths.add("exact" if 0 < len(readable) <= 200 else "ann" if readable else "none")
            for mode in ("keyword", "dense", "hybrid"):
                for q in ("budget travel", "security incident review", "payroll"):
                    hits = engine.search(q, who=audience, k=20, mode=mode, per_doc=None)
                    leaked = [h.chunk_id for h in hits if h.chunk_id not in readable]
                    assert not leaked, (kind, mode, audience, leaked)
                    # the filter runs before the limit: whoever can read >= 20 chunks gets 20
                    if mode != "keyword":
                        assert len(hits) == min(20, len(readable)), (kind, mode, len(readable))
        assert {
            "exact",
            "ann",
            "none",
        } <= paths  # both dense ACL paths (exact read, ID-selector ANN) for approximate kinds
    finally:
        engine.close()


def test_keyword_filter_runs_inside_fts_and_follows_access_changes(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    vec = np.ones((1, DIM), dtype=np.float32) / np.sqrt(DIM)

    def put(doc_id: str, access: Access, chunks: bool = True):
        doc = Document(
            id=doc_id,
            source="t",
            path=doc_id,
            title=doc_id,
            mime="text/plain",
            content=b"",
            access=access,
            version="1",
        )
        return store.upsert_document(
            doc,
            "h",
            [Chunk(doc_id, 0, "quarterly budget for travel")] if chunks else None,
            vec if chunks else None,
        )

    _, _, (secret,) = put("secret", Access(users=frozenset(["alice@corp.example"])))
    _, _, (open_,) = put("open", Access(groups=frozenset(["eng@corp.example"])))
    alice, bob = (
        Principals("alice@corp.example"),
        Principals("bob@corp.example", frozenset(["eng@corp.example"])),
    )

    def ids(*who: Principals) -> set[int]:
        return {
            c for c, _ in store.keyword_search("budget travel", limit=10, audience=[w.tokens() for w in who])
        }

    assert ids(alice) == {secret}
    assert ids(bob) == {open_}
    assert ids(alice, bob) == set()  # the channel rule: every member must be able to read it
    _, _, (both,) = put("both", Access(users=frozenset(["alice@corp.example", "bob@corp.example"])))
    assert ids(alice, bob) == {both}  # each member through their own grant
    assert store.audience_chunk_ids([alice.tokens(), bob.tokens()]).tolist() == [both]
    assert ids(alice, bob, Principals("carol@corp.example")) == set()
    _, _, (company,) = put("company", Access(domains=frozenset(["corp.example"])))
    assert ids(alice, bob, Principals("carol@corp.example")) == {company}  # a grant they all share
    assert store.audience_chunk_ids([alice.tokens(), bob.tokens()]).tolist() == sorted([both, company])
    assert ids(alice, Principals("x@partner.example")) == set()
    assert ids(Principals(None)) == set()
    assert {c for c, _ in store.keyword_search("budget travel", limit=10)} == {secret, open_, both, company}
    # a principal's name in the text grants nothing: the acl column holds opaque ids, matched only there
    assert ids(Principals("budget@partner.example")) == set()

    assert set(store.allowed_chunk_ids(alice.tokens()).tolist()) == {secret, both, company}  # (now cached)
    put("secret", Access(users=frozenset(["bob@corp.example"])), chunks=False)  # access change only
    assert set(store.allowed_chunk_ids(alice.tokens()).tolist()) == {both, company}
    assert ids(alice) == {both, company}
    assert ids(bob) == {secret, open_, both, company}
    put("secret", Access(), chunks=False)  # permissions lost: nobody (fail closed)
    assert ids(bob) == {open_, both, company}


def test_older_store_gets_the_acl_column(tmp_path):
    path = tmp_path / "s.sqlite"
    store = Store(path)
    doc = Document(
        id="a",
        source="t",
        path="a",
        title="a",
        mime="text/plain",
        content=b"",
        access=Access(users=frozenset(["alice@corp.example"])),
        version="1",
    )
    _, _, (cid,) = store.upsert_document(
        doc, "h", [Chunk("a", 0, "parental leave policy")], np.ones((1, DIM), dtype=np.float32)
    )
    store.close()
    db = sqlite3.connect(path)  # rewind the FTS table to the layout before the acl column
    db.executescript(
        "DROP TABLE chunks_fts; DROP TABLE acl_tokens;"
        "CREATE VIRTUAL TABLE chunks_fts USING fts5(text, title, tokenize = 'porter unicode61');"
        "UPDATE meta SET value = '4' WHERE key = 'schema';"  # schema 5 added acl_tokens
    )
    db.execute("INSERT INTO chunks_fts (rowid, text, title) VALUES (?, 'parental leave policy', 'a')", (cid,))
    db.commit()
    db.close()

    store = Store(path)
    hit = store.keyword_search(
        "parental leave", limit=5, audience=[Principals("alice@corp.example").tokens()]
    )
    assert [c for c, _ in hit] == [cid]
    assert (
        store.keyword_search("parental leave", limit=5, audience=[Principals("bob@corp.example").tokens()])
        == []
    )


def test_audience_chunk_ids_is_the_intersection_of_members(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    truth = _tenant(store, n_docs=60)
    for audience in _askers(seed=11):
        want = sorted(c for c, a in truth.items() if _may_read(a, audience))
        got = store.audience_chunk_ids([m.tokens() for m in audience.members]).tolist()
        assert got == want, audience
