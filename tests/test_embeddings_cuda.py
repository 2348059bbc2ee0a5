"""The pipelined encoder (the Embedder's CUDA path) gives sentence-transformers' vectors, in the caller's order.

Runs on the CPU with the real MiniLM: the function is device-agnostic, only the speed-up needs a GPU
(measured by ``scripts/bench_embeddings_gpu.py``)."""

from __future__ import annotations

import numpy as np

from assistant.embeddings.cuda import encode_pipelined


def test_pipelined_encoding_matches_sentence_transformers_in_the_callers_order(embedder):
    texts = [
        "How do I request a new laptop?",
        "Expense reports are filed in the finance tool before the 5th of each month. " * 6,
        "VPN",
        "The on-call rota changes every Monday at 10:00; swaps go through the #oncall channel.",
        "VPN",  # a duplicate: both rows get the same vector
        "",
        "Security training is due once a year for everyone with access to production systems. " * 3,
    ]
    want = embedder.model.encode(texts, batch_size=3, normalize_embeddings=True, convert_to_numpy=True)
    got = encode_pipelined(embedder.model, texts, batch_size=3, threads=2)  # 3 batches, 2 tokenizer threads
    assert got.shape == want.shape and got.dtype == np.float32
    cos = np.sum(got * want, axis=1)
    assert cos.min() > 0.9999, cos  # row i is text i's vector, whatever the length order was
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.allclose(got[2], got[4]) and not np.allclose(got[0], got[1])


def test_pipelined_encoding_of_nothing_is_empty(embedder):
    assert encode_pipelined(embedder.model, [], batch_size=8).shape[0] == 0
