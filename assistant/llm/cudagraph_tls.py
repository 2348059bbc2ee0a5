"""Make torch.compile's CUDA-graph trees usable from an engine's worker thread.

Inductor keeps its CUDA-graph tree managers in a ``threading.local`` filled on the importing thread
only; a compiled ("reduce-overhead") function first called from another Python thread fails an
assertion in ``cudagraph_trees.get_obj`` on torch 2.11 (the H200 host's; seen in the first benchmark run
there). Newer torch (2.13, this repository's CPU pin) initialises the thread-local lazily, so there this
is a no-op and no CPU test can exercise it. Each engine thread calls :func:`init_thread` first.
"""

from __future__ import annotations

import threading
from collections import defaultdict


def init_thread() -> None:
    try:
        from torch._inductor import cudagraph_trees as ct
    except Exception:  # no inductor (CPU-only builds without it): nothing to prepare
        return
    if hasattr(ct.local, "tree_manager_containers"):
        return
    init = getattr(ct, "_initialize_tls", None)
    if init is not None:
        init(ct.local)
    else:
        ct.local.tree_manager_containers = {}
        ct.local.tree_manager_locks = defaultdict(threading.Lock)
