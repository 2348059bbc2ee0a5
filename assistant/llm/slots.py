"""Continuous batching with a compiled decode step: fixed KV slots, CUDA graphs per batch-size bucket.

Why: eager PyTorch launches every kernel of a decode step from Python; for an 8B model that costs
more than the GPU's work at any batch size up to ~64. CUDA graphs remove the launch cost but need
fixed shapes and fixed addresses, which a growing ``DynamicCache`` never has. Here the KV cache is
one buffer per layer, allocated once: ``(slots, kv_heads, capacity, head_dim)``. Each running
sequence owns a slot (rows ``0..n-1``, kept compact) and its own position; a decode step runs the
first ``b`` slots, ``b`` the smallest bucket (1, 2, 4, …, ``max_batch``) holding every running
sequence, writes each row's new key/value at that row's position (a scatter) and attends over the
whole capacity with a per-row mask. The step is ``torch.compile``'d (mode "reduce-overhead",
fullgraph) on CUDA, so each bucket is one CUDA-graph replay; on CPU it runs eagerly.

Prefill stays eager (prompts of any length): new prompts are prefilled together (left-padded, the
last position's logits only) and their keys/values copied into free slots. A finished row's slot is
refilled by moving the last row into it. Sampling, stop strings, EOS, cancellation and per-request
adapters (``FusedLoRA`` row masks; base rows get zero masks, so one graph serves every mix) work as
in ``batching.BatchEngine``, whose request objects and interface this engine shares.

Not here: HTTP (``server``), request objects and sampling (``batching``), LoRA fusion (``fused_lora``).
"""

from __future__ import annotations

import logging
import time

from assistant.errors import ModelError
from assistant.llm.batching import BatchEngine, _Seq

log = logging.getLogger(__name__)


class _SlotCache:
    """The model's KV cache for one forward: per layer, slots ``[:b]`` of the fixed buffers."""

    is_compileable = True
    is_sliding = [False]

    def __init__(self, keys: list, values: list) -> None:
        self.keys, self.values = keys, values
        self.positions = None  # (b,) long: where each row's new token goes (decode)

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        import torch

        b = key_states.shape[0]  # (b, kv_heads, 1, head_dim)
        K, V = self.keys[layer_idx], self.values[layer_idx]  # (slots, kv_heads, capacity, head_dim)
        rows = torch.arange(b, device=K.device)
        # written in place into the whole buffer (like StaticCache's index_copy_), so the compiled
        # graph updates the static buffer instead of copying a slice of it back
        K[rows, :, self.positions] = key_states[:, :, 0]
        V[rows, :, self.positions] = value_states[:, :, 0]
        return K[:b], V[:b]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0

    def get_mask_sizes(self, *args, **kwargs):
        return self.keys[0].shape[2], 0


class SlotEngine(BatchEngine):
    """``BatchEngine``'s interface and request handling, with fixed KV slots and a compiled decode step."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        adapters: list[str] | None = None,
        max_batch: int = 64,
        max_queue: int = 256,
        capacity: int = 4096,
        prefill_tokens: int = 16384,
        eos_token_ids: set[int] | None = None,
        compiled: bool | None = None,
    ) -> None:
        import torch

        capacity = -(-capacity // 64) * 64  # aligned rows for the attention kernels' masks
        self.capacity = capacity
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        param = next(model.parameters())
        device = param.device
        dtype = param.dtype if param.dtype.is_floating_point else torch.bfloat16
        shape = (max_batch, heads, capacity, head_dim)
        self._K = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_hidden_layers)]
        self._V = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_hidden_layers)]
        for t in self._K + self._V:
            torch._dynamo.mark_static_address(t)
        self._pos = torch.zeros(max_batch, dtype=torch.long, device=device)  # tokens in each slot
        self._cols = torch.arange(capacity, device=device)
        self._slot_cache = _SlotCache(self._K, self._V)
        # batch 1 runs as bucket 2 (one padding row; decode is memory-bound, so it costs ~nothing): then
        # one compile with a dynamic batch size serves every bucket, instead of a second for batch 1
        self._buckets = [b for b in (2, 4, 8, 16, 32, 64, 128, 256) if b < max_batch] + [max_batch]
        self.compiled = device.type == "cuda" if compiled is None else compiled
        self._step_fn = None
        super().__init__(
            model,
            tokenizer,
            adapters=adapters,
            max_batch=max_batch,
            max_queue=max_queue,
            prefill_tokens=prefill_tokens,
            eos_token_ids=eos_token_ids,
            slabs=False,
        )
        if self._peft and self.adapters and self._fused is None:
            self.close()
            raise ModelError(
                "The slots engine needs plain LoRA adapters on linear layers (no DoRA or embedding LoRA); "
                "serve these adapters with --engine auto or batch."
            )

    def new_seq(self, prompt_ids: list[int], *, max_new_tokens: int, **kw) -> _Seq:
        if len(prompt_ids) + max_new_tokens > self.capacity:
            raise ModelError(
                f"The prompt ({len(prompt_ids)} tokens) plus max_tokens ({max_new_tokens}) exceeds this "
                f"server's KV capacity of {self.capacity} tokens; send less text or ask for fewer tokens."
            )
        return super().new_seq(prompt_ids, max_new_tokens=max_new_tokens, **kw)

    def warm_up(
        self,
        *,
        prompt_lengths: tuple[int, ...] = (16,),
        new_tokens: int = 4,
        batch_sizes: tuple[int, ...] | None = None,
    ) -> float:
        """Run every batch-size bucket (compile, CUDA-graph capture) at the given prompt lengths: seconds."""
        t = time.perf_counter()
        tok = 5
        for n in prompt_lengths:
            for b in batch_sizes or self._buckets:
                if n + new_tokens > self.capacity:
                    continue
                handles = [self.submit([tok] * n, max_new_tokens=new_tokens) for _ in range(b)]
                for h in handles:
                    h.result()
        return time.perf_counter() - t

    # -- engine thread (overrides) ------------------------------------------------------------
    def _prefill(self, new: list[_Seq]) -> None:
        """Prefill ``new`` eagerly (left-padded batch), copy their keys/values into the next free slots."""
        import torch

        toks = [s.prompt + s.extra for s in new]
        L = max(len(t) for t in toks)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(new), L), pad, dtype=torch.long)
        mask = torch.zeros((len(new), L), dtype=torch.long)
        for i, t in enumerate(toks):
            ids[i, L - len(t) :] = torch.tensor(t)
            mask[i, L - len(t) :] = 1
        ids, mask = ids.to(self._device), mask.to(self._device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits, cache = self._forward(ids, mask, positions, None, [s.adapter for s in new])
        first = len(self._running)
        for layer, (K, V) in enumerate(zip(self._K, self._V)):
            keys, values = _layer_kv(cache, layer)  # (k, kv_heads, L, head_dim)
            for i, t in enumerate(toks):
                K[first + i, :, : len(t)] = keys[i, :, L - len(t) :]
                V[first + i, :, : len(t)] = values[i, :, L - len(t) :]
        for i, (s, t) in enumerate(zip(new, toks)):
            s.pos = len(t)
            self._pos[first + i] = len(t)
        self._running.extend(new)
        self._emit(new, logits)

    def _decode(self) -> None:
        import torch

        n = len(self._running)
        b = next(x for x in self._buckets if x >= n)
        ids = torch.zeros((b, 1), dtype=torch.long)
        ids[:n, 0] = torch.tensor([s.pending for s in self._running])
        rows = [s.adapter for s in self._running] + [None] * (b - n)
        if self._fused is not None:
            self._fused.set_rows(rows, self._device, always=True)
        self._pos[n:b] = 0  # padding rows write harmlessly at column 0 of free slots
        ids, positions = ids.to(self._device), self._pos[:b]
        if self.compiled:
            import torch._dynamo

            # one graph for every bucket (CUDA graphs are still recorded per size)
            for t in (
                [ids, positions, *(self._fused._masks or {}).values()] if self._fused else [ids, positions]
            ):
                torch._dynamo.maybe_mark_dynamic(t, 0)
        try:
            logits = self._step()(ids, positions)
        except Exception:
            if not self.compiled:
                raise
            # compilation failed on this setup: decode eagerly from now on rather than fail every request
            log.exception("compiled decode step failed; continuing without torch.compile")
            self.compiled, self._step_fn = False, None
            logits = self._step()(ids, positions)
        self._pos[:n] += 1
        for s in self._running:
            s.pos += 1
        self._emit(list(self._running), logits[:n])

    def _step(self):
        """The decode forward: (b, 1) token ids and (b,) positions → (b, vocab) logits; compiled once."""
        if self._step_fn is not None:
            return self._step_fn
        import torch

        model, cache, cols, kw = self.model, self._slot_cache, self._cols, self._cache_kw
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        additive = getattr(base.config, "_attn_implementation", "sdpa") == "eager"  # eager adds the mask
        dtype = self._K[0].dtype

        def step(ids, positions):
            cache.positions = positions
            mask = (cols[None, :] <= positions[:, None])[:, None, None, :]  # (b, 1, 1, capacity)
            if additive:
                mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
                    ~mask, torch.finfo(dtype).min
                )
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions[:, None],
                use_cache=True,
                logits_to_keep=1,
                **{kw: cache},
            )
            return out.logits[:, -1, :].float()

        if self.compiled:
            step = torch.compile(step, mode="reduce-overhead", fullgraph=True)
        self._step_fn = step
        return step

    def _merge(self, new, cache, mask) -> None:  # not used: _prefill writes into the slots
        raise NotImplementedError

    def _select(self, keep: list[int]) -> None:
        """Keep rows ``keep``: move each kept row down into the lowest free slot (keys, values, position)."""
        for dst, src in enumerate(keep):
            if dst != src:
                p = self._running[src].pos
                for K, V in zip(self._K, self._V):
                    K[dst, :, :p] = K[src, :, :p]
                    V[dst, :, :p] = V[src, :, :p]
                self._pos[dst] = self._pos[src]
        self._running = [self._running[i] for i in keep]
        self._pos[len(keep) :] = 0
        if not keep:
            self._cache, self._mask = None, None


def _layer_kv(cache, layer: int):
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise ModelError(
            "This transformers version's KV cache has no per-layer objects; use transformers >= 5.0."
        )
    return layers[layer].keys, layers[layer].values
