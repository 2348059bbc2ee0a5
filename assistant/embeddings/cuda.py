"""Encoding on a GPU without waiting for the tokenizer: the CUDA path of ``assistant.embeddings.Embedder``.

``SentenceTransformer.encode`` tokenizes a batch on the CPU, then runs it on the GPU, then tokenizes
the next one: on a fast GPU with a small model (MiniLM) the GPU idles while the CPU tokenizes.
``encode_pipelined`` gives the same vectors (the model's own ``tokenize`` and forward; texts sorted
by length, longest first, as sentence-transformers does, so batches pad little) but tokenizes the
next batches in background threads (the Rust tokenizer releases the GIL) while the GPU runs the
current one, keeps every result on the GPU and copies once at the end.

What it does not do: choose the device or the precision (the Embedder casts the model to fp16 on
CUDA), or split work across GPUs (one process per GPU: the Ray ingestion workers do that).
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def encode_pipelined(model, texts: list[str], *, batch_size: int, threads: int | None = None) -> np.ndarray:
    """(n, dim) float32, L2-normalized, in the order of ``texts``. ``model`` is a SentenceTransformer."""
    import torch

    dev = model.device
    order = np.argsort([-len(t) for t in texts], kind="stable")
    batches = [[texts[i] for i in order[s : s + batch_size]] for s in range(0, len(texts), batch_size)]
    threads = threads or max(1, min(4, (os.cpu_count() or 2) // 2))
    pin = dev.type == "cuda"

    prepare = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers >= 6 | 5

    def tokenize(batch: list[str]) -> dict:
        features = prepare(batch)
        return {k: v.pin_memory() if pin and hasattr(v, "pin_memory") else v for k, v in features.items()}

    out = None  # (n, dim) float32 on the device, in length order
    pos = 0
    with ThreadPoolExecutor(threads, thread_name_prefix="tokenize") as pool, torch.inference_mode():
        pending = deque(pool.submit(tokenize, b) for b in batches[: 2 * threads])
        queued = len(pending)
        for batch in batches:
            features = pending.popleft().result()
            if queued < len(batches):
                pending.append(pool.submit(tokenize, batches[queued]))
                queued += 1
            features = {
                k: v.to(dev, non_blocking=True) if hasattr(v, "to") else v for k, v in features.items()
            }
            emb = model(features)["sentence_embedding"].float()
            if out is None:
                out = torch.empty((len(texts), emb.shape[1]), dtype=torch.float32, device=dev)
            out[pos : pos + len(batch)] = torch.nn.functional.normalize(emb, dim=1)
            pos += len(batch)
    if out is None:
        return np.zeros((0, 0), dtype=np.float32)
    restored = torch.empty_like(out)
    restored[torch.as_tensor(order, device=dev)] = out  # back to the caller's order
    return restored.cpu().numpy()
