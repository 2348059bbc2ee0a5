"""Fine-tuning the answering model on the team's own material.

- ``data``: training sets (synthesised from the index or Markdown files, from Slack feedback, from
  user JSONL), split by document, written as JSONL with a manifest and a data fingerprint.
- ``mix``: the answer/refusal mix for the Qwen adapter (near-miss refusals, tables, multi-part).
- ``train``: LoRA / QLoRA training with peft (CPU for tiny runs, CUDA with bf16 or 4-bit NF4,
  DDP under ``torchrun``), resumable checkpoints, registration in the adapter registry.
- ``evaluate``: before/after metrics on the validation split.
- ``plan``: memory, FLOPs and time estimates for full fine-tuning vs LoRA vs QLoRA.
- ``cli``: the ``finetune`` and ``adapters`` command groups.
"""
