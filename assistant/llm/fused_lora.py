"""Mixed-adapter LoRA for the batching engine: all adapters' factors fused per layer.

Not here: loading adapters (``adapters``), scheduling (``batching``).
"""

from __future__ import annotations

from assistant.errors import ModelError


class FusedLoRA:
    """Every adapter's LoRA factors concatenated per layer, so any mix of adapters costs two matmuls.

    For each LoRA linear layer: ``A = [A_1; ...; A_n]`` (n*r, in) and ``B = [s_1 B_1, ..., s_n B_n]``
    (out, n*r). A row using adapter i multiplies by a 0/1 mask keeping rank slots i*r..i*r+r, so
    ``y = base(x) + ((x @ A.T) * mask_row) @ B.T`` — the same result as peft's per-adapter loop, with
    a cost that does not grow with the number of distinct adapters in the batch. peft's own LoRA
    branch is switched off while the engine owns the model; plain LoRA on linear layers only (DoRA or
    embedding LoRA raise ``ModelError`` and the engine falls back to peft's ``adapter_names``).
    """

    def __init__(self, model, names: list[str]) -> None:
        import torch
        from peft.tuners.lora import LoraLayer

        self.index = {n: i for i, n in enumerate(names)}
        self._masks: dict[int, object] | None = None  # rank -> (B, 1, n*rank) mask for this step
        self._hooks = []
        layers = []
        for mod in model.modules():
            if not isinstance(mod, LoraLayer):
                continue
            present = [n for n in names if n in mod.lora_A]
            if (
                any(n in getattr(mod, "lora_embedding_A", {}) for n in names)
                or any(n in getattr(mod, "lora_variant", {}) for n in present)
                or getattr(mod, "fan_in_fan_out", False)
            ):
                raise ModelError(
                    "An adapter uses DoRA, embedding LoRA or Conv1D layers; using peft's mixed batches."
                )
            if not present:
                continue
            r = max(mod.r[n] for n in present)
            w = mod.lora_A[present[0]].weight
            base = mod.get_base_layer()
            dtype = getattr(base, "compute_dtype", None) or base.weight.dtype  # the layer's compute dtype
            dtype = dtype if dtype.is_floating_point else torch.bfloat16  # 4-bit weights compute in bf16
            A = torch.zeros((len(names) * r, w.shape[1]), dtype=dtype, device=w.device)
            B = torch.zeros(
                (mod.lora_B[present[0]].weight.shape[0], len(names) * r), dtype=dtype, device=w.device
            )
            for n in present:
                i, rn = self.index[n], mod.r[n]
                A[i * r : i * r + rn] = mod.lora_A[n].weight
                B[:, i * r : i * r + rn] = mod.lora_B[n].weight * mod.scaling[n]
            layers.append((mod, A, B, r))
        if not layers:
            raise ModelError("No LoRA linear layers found in the adapters.")
        self.ranks = sorted({r for *_, r in layers})
        self.dtype = layers[0][1].dtype
        for mod, A, B, r in layers:
            self._hooks.append(mod.register_forward_hook(self._hook(A, B, r)))
        model.base_model.disable_adapter_layers()  # peft's branch off: our hook adds the LoRA term
        self.model = model

    def _hook(self, A, B, r):
        def add_lora(module, inputs, output):
            if self._masks is None:
                return output
            x = inputs[0]
            delta = ((x.to(A.dtype) @ A.T) * self._masks[r]) @ B.T  # (B, T, n*r) -> (B, T, out)
            return output + delta.to(output.dtype)

        return add_lora

    def set_rows(self, adapters: list[str | None], device, *, always: bool = False) -> None:
        """Choose each row's adapter for the next forward (None = base model).

        ``always``: build masks even for an all-base batch (zero masks), so a compiled graph sees the
        same structure for the base model and every adapter (one graph, no recompilation).
        """
        import torch

        if all(a is None for a in adapters) and not always:
            self._masks = None
            return
        idx = torch.tensor([self.index[a] if a is not None else -1 for a in adapters], device=device)
        n = len(self.index)
        self._masks = {}
        for r in self.ranks:
            slot = torch.arange(n * r, device=device) // r  # which adapter each rank slot belongs to
            self._masks[r] = (slot[None, :] == idx[:, None]).to(self.dtype)[:, None, :]

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._masks = None
        self.model.base_model.enable_adapter_layers()
