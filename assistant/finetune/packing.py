"""Batches for training: padding-free packing and length-bucketed padded batches.

Every example is (input_ids, labels) with labels -100 on the prompt. Batches carry *shifted*
targets (``targets[t]`` = the label of token ``t + 1``, -100 on an example's last token), so a
packed row never asks example A's last token to predict example B's first.

- ``pack``: first-fit-decreasing of examples into rows of ``width`` tokens (several examples per row).
- ``collate_packed``: the rows as ``input_ids``, ``targets`` and ``position_ids`` that restart at 0
  for every example, and NO attention mask. transformers (``masking_utils``:
  ``find_packed_sequence_indices``) reads restarting position ids with ``attention_mask=None`` as
  packed sequences and builds a causal mask that cannot cross example boundaries (for sdpa, eager
  and flex attention); the tests prove it (changing example A does not change example B's loss).
  That path computes a dense (t x t) mask per row; ``attention="varlen"`` (``varlen``) uses the
  example boundaries (``cu_seq_lens``) with a per-example flash kernel instead.
  Row padding at the end is its own segment with no targets.
- ``collate_padded``: one example per row, right padding, no mask (causal attention means real
  tokens never see the pads), for length-bucketed batches where packing does not apply.

Not here: which examples form a step (``train.step_indices``), the loss (``fused_loss``).
"""

from __future__ import annotations

import torch

Example = tuple[list[int], list[int]]


def shifted(labels: list[int]) -> list[int]:
    """The next-token targets of one example: labels[1:] + [-100]."""
    return list(labels[1:]) + [-100]


def pack(lengths: list[int], *, width: int) -> list[list[int]]:
    """Indices (into ``lengths``) grouped into rows of at most ``width`` tokens, first-fit decreasing.

    Deterministic: ties break by index. An example longer than ``width`` gets a row of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = lengths[i]
        for r, room in enumerate(free):
            if n <= room:
                rows[r].append(i)
                free[r] -= n
                break
        else:
            rows.append([i])
            free.append(width - n)
    return rows


def collate_packed(
    rows: list[list[Example]], *, pad_id: int, width: int | None = None
) -> dict[str, torch.Tensor]:
    """(b, width) input_ids / targets / position_ids of packed rows; positions restart per example.

    Also ``cu_seq_lens`` (int32 example boundaries over the flattened rows) and ``max_length`` (an
    int) for the varlen attention backend (``varlen``); the sdpa path does not use them.
    """
    from assistant.finetune.varlen import boundaries

    width = width or max(sum(len(x) for x, _ in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (b, t)
    targets = torch.full((len(rows), width), -100, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        t = 0
        for x, y in row:
            n = len(x)
            ids[b, t : t + n] = torch.tensor(x)
            targets[b, t : t + n] = torch.tensor(shifted(y))
            pos[b, t : t + n] = torch.arange(n)
            t += n
        pos[b, t:] = torch.arange(width - t)  # the padding tail: a segment of its own, no targets
    cu, longest = boundaries([[len(x) for x, _ in row] for row in rows], width)
    return {
        "input_ids": ids,
        "targets": targets,
        "position_ids": pos,
        "cu_seq_lens": cu,
        "max_length": longest,
    }


def collate_padded(items: list[Example], *, pad_id: int, width: int | None = None) -> dict[str, torch.Tensor]:
    """One example per row, right-padded to the longest (or ``width``); ``attention_mask`` marks real tokens."""
    width = width or max(len(x) for x, _ in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)  # (b, t)
    targets = torch.full((len(items), width), -100, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, (x, y) in enumerate(items):
        ids[i, : len(x)] = torch.tensor(x)
        targets[i, : len(y)] = torch.tensor(shifted(y))
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "targets": targets, "attention_mask": mask}


def packed_micro_batches(
    mine: list[int], lengths: list[int], *, width: int, rows_per_batch: int
) -> list[list[list[int]]]:
    """This process's examples packed into rows, then grouped ``rows_per_batch`` rows per forward pass."""
    local = pack([lengths[i] for i in mine], width=width)
    rows = [[mine[j] for j in row] for row in local]
    return [rows[i : i + rows_per_batch] for i in range(0, len(rows), rows_per_batch)]
