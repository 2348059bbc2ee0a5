"""The server's decoding engine: a compiled single-sequence path when alone, continuous batching otherwise.

``ServingEngine`` has ``BatchEngine``'s interface (``submit``, ``stats``, ``close``, ``adapters``,
``model``) and routes each request:

* the engine is idle (nothing running or waiting) → ``solo.SoloDecoder``: transformers ``generate``
  with a static cache and ``torch.compile`` (CUDA graphs) — the fastest batch-1 decoding available
  in the libraries we ship (plain ``generate`` on CPU);
* anything else → ``batching.BatchEngine`` (continuous batching, per-request sampling, stop strings
  and mixed LoRA adapters in one forward pass). A sequence decoding solo when another request arrives
  *yields*: it leaves ``generate`` after its current token and joins the batch (its prompt and the
  tokens generated so far are prefilled again — one prefill, then it decodes with the others).

Only one of the two uses the model at a time (a shared lock held per batch step and per solo
sequence), so FusedLoRA's per-row masks and the CUDA graphs are never raced. ``warm_up`` compiles the
solo path and runs the batch engine at bucketed prompt lengths and batch sizes, so the first real
requests are not the slow ones; it returns the seconds spent (the start-up cost).

Not here: HTTP (``server``), the batching algorithm (``batching``), the compiled decode (``solo``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from assistant.llm.batching import BatchEngine, Event, RequestHandle, _Seq, finish_seq
from assistant.llm.solo import SoloDecoder

log = logging.getLogger(__name__)


class ServingEngine:
    """Routes requests between a compiled solo decoder and the continuous-batching engine."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        adapters: list[str] | None = None,
        max_batch: int = 64,
        max_queue: int = 256,
        context_tokens: int = 4096,
        eos_token_ids: set[int] | None = None,
        solo: bool = True,
        compiled: bool | None = None,
    ) -> None:
        self.model_lock = threading.Lock()
        self.batch = BatchEngine(
            model,
            tokenizer,
            adapters=adapters,
            max_batch=max_batch,
            max_queue=max_queue,
            eos_token_ids=eos_token_ids,
            model_lock=self.model_lock,
        )
        self.model, self.tokenizer, self.adapters = model, tokenizer, self.batch.adapters
        self.max_batch, self.max_queue = max_batch, max_queue
        self.solo: SoloDecoder | None = None
        if solo:
            self.solo = SoloDecoder(
                model,
                tokenizer,
                eos=self.batch._eos,
                max_cache_len=context_tokens,
                compiled=compiled,
                fused=self.batch._fused,
            )
        self._route = threading.Lock()
        self._current: _Seq | None = None  # the sequence decoding solo
        self._yield = False  # ask the solo sequence to join the batch
        self._served_solo = 0
        self._yielded = 0  # solo sequences that moved into the batch
        self._solo_q: queue.Queue[tuple[_Seq, bool] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._solo_loop, name="llm-solo", daemon=True)
        self._thread.start()

    # -- public -------------------------------------------------------------------------------
    def submit(
        self,
        prompt_ids: list[int],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        adapter: str | None = None,
        sink: Callable[[Event], None] | None = None,
    ) -> RequestHandle:
        seq = self.batch.new_seq(
            prompt_ids,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=stop,
            adapter=adapter,
            sink=sink,
        )
        with self._route:
            if self.solo is not None and self._current is None and self.solo.fits(seq) and self.batch.idle():
                self._current, self._yield = seq, False
                self._solo_q.put((seq, False))
                return seq.handle
            if self._current is not None:
                self._yield = True  # the solo sequence joins the batch after its current token
            self.batch.enqueue(seq)  # QueueFull propagates: the server answers 429
        return seq.handle

    def stats(self) -> dict:
        out = self.batch.stats()
        with self._route:
            solo = self._current is not None
        out["running"] += int(solo)
        out["solo"] = int(solo)
        out["served"] += self._served_solo
        out["yielded"] = self._yielded
        return out

    def warm_up(
        self,
        *,
        prompt_lengths: tuple[int, ...] = (16, 256, 1024),
        batch_sizes: tuple[int, ...] = (2, 8, 32),
        new_tokens: int = 8,
    ) -> float:
        """Compile the solo path and run the batch engine at bucketed shapes; the seconds it took."""
        t = time.perf_counter()
        tok = 5
        if self.solo is not None:
            longest = max(8, self.solo.max_cache_len - new_tokens - 1)  # sizes the static cache once
            adapters: list[str | None] = [None]
            if self.solo.fused is None and self.solo.peft:  # peft's own path: one graph per adapter
                adapters += sorted(self.adapters)
            for a in adapters:
                for n in (longest, 16):
                    self._run_solo([tok] * n, new_tokens, a)
        batch_sizes = tuple(b for b in batch_sizes if b <= self.max_batch)
        for n in prompt_lengths:
            for b in batch_sizes:
                handles = [
                    self.batch.submit([tok] * n, max_new_tokens=new_tokens)
                    for _ in range(min(b, self.max_queue))
                ]
                for h in handles:
                    h.result()
        took = time.perf_counter() - t
        log.info("warm-up took %.1f s", took)
        return took

    def close(self) -> None:
        self._solo_q.put(None)
        self._thread.join(timeout=30)
        self.batch.close()

    # -- solo thread ----------------------------------------------------------------------------
    def _run_solo(self, prompt: list[int], new: int, adapter: str | None) -> None:
        seq = self.batch.new_seq(prompt, max_new_tokens=new, adapter=adapter)
        with self._route:
            self._current, self._yield = seq, False
        self._solo_q.put((seq, True))
        seq.handle.result()

    def _solo_loop(self) -> None:
        from assistant.llm.cudagraph_tls import init_thread

        init_thread()
        while True:
            item = self._solo_q.get()
            if item is None:
                return
            seq, warm = item
            reason: str | None
            try:
                with self.model_lock:
                    reason = self.solo.run(seq, should_yield=lambda: self._yield, force_length=warm)
            except Exception as e:  # a failed request fails alone, never the engine
                log.exception("solo generation failed")
                seq.handle.sink(Event("error", text=f"Generation failed: {e}"))
                reason = "error"
            with self._route:
                if reason is None:  # yielded: continue in the batch (before the router sees it idle)
                    self._yielded += 1
                    self.batch.enqueue(seq, resumed=True)
                self._current = None
            if reason not in (None, "error"):
                self._served_solo += 1
                finish_seq(seq, reason)
