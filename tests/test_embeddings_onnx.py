"""The ONNX Runtime int8 embedder: same vectors (within quantization error) and same interface as the
torch Embedder, stable under batching, and a build cache that is reused and repairs itself.

One export + quantization per test module (about 10-20 s on a loaded 2-core machine); the damaged-
cache test re-quantizes once more from the cached fp32 export.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from assistant.embeddings import OnnxEmbedder, bundled_model_path
from assistant.errors import ModelError

SENTENCES = [
    "How many weeks of paid parental leave do we get?",
    "Sourcegraph's fiscal year runs from February 1 to January 31.",
    "Your laptop screen is set to lock after 10 minutes of inactivity.",
    "Teammates should submit expenses at the end of every month in Airbase.",
    "We use OpsGenie for our 24x7 Support rotation.",
    "baby leave",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_embedder(cache):
    return OnnxEmbedder(bundled_model_path(), cache_dir=cache, batch_size=4)


def test_vectors_match_sentence_transformers(onnx_embedder, embedder):
    ours, ref = onnx_embedder.embed(SENTENCES), embedder.embed(SENTENCES)
    assert ours.shape == ref.shape == (len(SENTENCES), 384)
    cosine = (ours * ref).sum(axis=1)
    assert cosine.min() >= 0.98, cosine


def test_retrieval_ranking_agrees_with_torch(onnx_embedder, embedder):
    queries = [
        "when does the financial year start",
        "how do I get reimbursed for things I bought",
        "who gets paged when support is needed at night",
        "baby leave",
    ]
    docs_ours, docs_ref = onnx_embedder.embed(SENTENCES), embedder.embed(SENTENCES)
    for q in queries:
        assert np.argmax(docs_ours @ onnx_embedder.embed_query(q)) == np.argmax(
            docs_ref @ embedder.embed_query(q)
        ), q


def test_interface_matches_embedder(onnx_embedder):
    before_calls, before_texts = onnx_embedder.calls, onnx_embedder.texts_embedded
    vecs = onnx_embedder.embed(SENTENCES)
    assert vecs.dtype == np.float32 and vecs.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert onnx_embedder.dim == 384 and onnx_embedder.max_seq_length == 256
    assert onnx_embedder.tokenizer.is_fast
    assert onnx_embedder.embed_query("hello").shape == (384,)
    assert onnx_embedder.embed([]).shape == (0, 384)
    assert (onnx_embedder.calls, onnx_embedder.texts_embedded) == (
        before_calls + 2,
        before_texts + len(SENTENCES) + 1,
    )


def test_a_vector_does_not_depend_on_its_batch(onnx_embedder):
    """Same vector alone or among others (no padding, no shared quantization scale), in input order."""
    long_text = "Kubernetes rollback procedure for a failed deployment. " * 100  # truncated at 256 tokens
    alone = np.stack([onnx_embedder.embed_query(t) for t in SENTENCES])
    mixed = onnx_embedder.embed([long_text, *SENTENCES, long_text])  # batch_size 4: several padded batches
    np.testing.assert_allclose(mixed[1:-1], alone, atol=1e-6)
    np.testing.assert_allclose(mixed[0], mixed[-1], atol=1e-6)


def test_cache_is_reused_and_left_clean(onnx_embedder, cache):
    files = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert sorted(files) == sorted([onnx_embedder.fp32_path.name, onnx_embedder.int8_path.name])
    again = OnnxEmbedder(bundled_model_path(), cache_dir=cache)
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == files  # nothing rebuilt, no temp files
    np.testing.assert_allclose(again.embed(SENTENCES[:2]), onnx_embedder.embed(SENTENCES[:2]), atol=1e-6)


def test_damaged_cache_is_rebuilt(onnx_embedder, cache, tmp_path):
    damaged = tmp_path / "cache"
    shutil.copytree(cache, damaged)
    (damaged / onnx_embedder.int8_path.name).write_bytes(b"not an onnx model")
    repaired = OnnxEmbedder(bundled_model_path(), cache_dir=damaged)
    np.testing.assert_allclose(repaired.embed(SENTENCES), onnx_embedder.embed(SENTENCES), atol=1e-5)
    assert sorted(p.name for p in damaged.iterdir()) == sorted(p.name for p in cache.iterdir())


def test_missing_model_folder_says_what_to_do(tmp_path):
    with pytest.raises(ModelError, match="sentence-transformers folder"):
        OnnxEmbedder(tmp_path / "nope", cache_dir=tmp_path / "cache")
