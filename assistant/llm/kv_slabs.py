"""KV-cache slabs for the eager batching engine: per-layer buffers with spare room for in-place appends.

transformers' ``DynamicLayer`` concatenates on every decode step (a copy of the whole KV cache and a
new allocation each time); a slab writes the new key/value into spare room and grows by a chunk
when full. Not here: the engine (``batching``), fixed-slot caches for compiled decoding (``slots``).
"""

from __future__ import annotations

from assistant.errors import ModelError


def cache_layers(cache) -> list:
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise ModelError(
            "This transformers version's KV cache has no per-layer objects; use transformers >= 5.0."
        )
    return layers


def use_slabs(cache) -> None:
    """Give every layer of ``cache`` spare capacity, so each decode step writes in place."""
    from transformers.cache_utils import DynamicLayer

    cls = _slab_class()
    for i, layer in enumerate(cache_layers(cache)):
        if type(layer) is DynamicLayer and getattr(layer, "keys", None) is not None and layer.keys.dim() == 4:
            slab = cls.__new__(cls)
            slab.__dict__.update(layer.__dict__)
            slab.adopt(layer.keys, layer.values)
            cache.layers[i] = slab


def readopt(layer) -> None:
    if hasattr(layer, "adopt"):
        layer.adopt(layer.keys, layer.values)


_SLAB = None


def _slab_class():
    """A DynamicLayer whose keys/values are views into a buffer with spare room (built on first use).

    transformers' DynamicLayer concatenates on every step: a copy of the whole KV cache and a new,
    slightly larger allocation each time. Here the new key/value is written into spare room; the
    buffer grows by ``CHUNK`` positions when full.
    """
    global _SLAB
    if _SLAB is not None:
        return _SLAB
    import torch
    from transformers.cache_utils import DynamicLayer

    class SlabLayer(DynamicLayer):
        CHUNK = 256

        def adopt(self, keys, values) -> None:
            self._n = keys.shape[-2]
            self._kbuf, self._vbuf = self._grow(keys), self._grow(values)
            self.keys, self.values = self._kbuf[:, :, : self._n], self._vbuf[:, :, : self._n]

        def _grow(self, t):
            b, h, n, d = t.shape  # (batch, kv heads, positions, head dim)
            buf = torch.empty((b, h, n + self.CHUNK, d), dtype=t.dtype, device=t.device)
            buf[:, :, :n] = t
            return buf

        def update(self, key_states, value_states, *args, **kwargs):
            k = key_states.shape[-2]
            if self._n + k > self._kbuf.shape[-2]:
                self._kbuf, self._vbuf = self._grow(self.keys), self._grow(self.values)
            self._kbuf[:, :, self._n : self._n + k] = key_states
            self._vbuf[:, :, self._n : self._n + k] = value_states
            self._n += k
            self.keys, self.values = self._kbuf[:, :, : self._n], self._vbuf[:, :, : self._n]
            return self.keys, self.values

    _SLAB = SlabLayer
    return _SLAB
