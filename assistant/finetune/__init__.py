"""Fine-tuning the answering model on the team's own material.

- ``data``: training sets (synthesised from the index or Markdown files, from Slack feedback, from
  user JSONL), split by document, written as JSONL with a manifest and a data fingerprint.
- ``mix``: the answer/refusal mix for the Qwen adapter (near-miss refusals, tables, multi-part).
- ``train``: LoRA / QLoRA training with peft (CPU for tiny runs, CUDA with bf16 or 4-bit NF4,
  DDP or FSDP2 under ``torchrun``), resumable checkpoints, registration in the adapter registry;
  built from ``runtime`` (kernels, LoRA, wrapping, optimizer), ``packing`` (packed or
  length-bucketed batches), ``varlen`` (per-example attention for packed rows), ``fused_loss``
  (loss without full logits), ``distributed`` (process group, DDP/FSDP2, world-size-free state),
  ``checkpoints`` and ``torchrun_entry`` (what ``--gpus N`` relaunches).
- ``evaluate``: before/after metrics on the validation split.
- ``plan``: memory, FLOPs and time estimates for full fine-tuning vs LoRA vs QLoRA; ``rates``: the
  measured rates it uses and which method fits which hardware.
- ``cli``: the ``finetune`` and ``adapters`` command groups.
"""
