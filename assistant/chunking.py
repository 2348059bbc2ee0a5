"""Structure-aware chunking: Markdown-ish text → token-budgeted chunks with heading paths and offsets.

The parsers turn every format into Markdown-ish text, so one chunker serves all of them. Text is cut
into blocks (headings, paragraphs, list runs, tables, fenced code); blocks are packed into chunks up
to a token budget measured with the embedding model's own tokenizer; a new section starts a new
chunk unless the current one is still small; a block larger than the budget is cut into overlapping
token windows. Every chunk satisfies ``text[chunk.start:chunk.end] == chunk.text`` — citations and
highlighting rely on it. What it does not do: semantic splitting with a model (too slow on a CPU for
what it buys on structured documents).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from assistant.documents import Chunk

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")

CountTokens = Callable[[Sequence[str]], list[int]]


@dataclass(frozen=True)
class _Block:
    start: int
    end: int
    heading_path: tuple[str, ...]
    is_heading: bool


def _blocks(text: str) -> list[_Block]:
    """Split into blocks separated by blank lines; headings are blocks of their own."""
    blocks: list[_Block] = []
    path: list[tuple[int, str]] = []  # (level, title)
    pos = 0
    cur_start: int | None = None
    in_fence = False

    def flush(end: int) -> None:
        nonlocal cur_start
        if cur_start is not None and text[cur_start:end].strip():
            blocks.append(_Block(cur_start, end, tuple(t for _, t in path), False))
        cur_start = None

    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        line_end = pos + len(line)
        content_end = pos + len(line.rstrip("\r\n"))
        if _FENCE.match(line):
            if cur_start is None:
                cur_start = pos
            in_fence = not in_fence
        elif in_fence:
            pass
        elif (m := _HEADING.match(stripped)) is not None:
            flush(pos)
            level, title = len(m.group(1)), m.group(2).strip()
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, title))
            blocks.append(_Block(pos, content_end, tuple(t for _, t in path), True))
        elif not stripped:
            flush(pos)
        elif cur_start is None:
            cur_start = pos
        pos = line_end
    flush(len(text.rstrip()) if cur_start is not None else pos)
    # trim trailing whitespace/newlines off each block so offsets are tight
    out = []
    for b in blocks:
        end = b.end
        while end > b.start and text[end - 1] in "\r\n \t":
            end -= 1
        out.append(_Block(b.start, end, b.heading_path, b.is_heading))
    return out


class Chunker:
    """Packs blocks into chunks of at most ``max_tokens`` tokens (prefix of title + headings included)."""

    def __init__(
        self, tokenizer, *, max_tokens: int = 256, overlap_tokens: int = 32, min_tokens: int = 48
    ) -> None:
        self.tokenizer = tokenizer  # a Hugging Face fast tokenizer
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self.min_tokens = min_tokens

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        enc = self.tokenizer(
            list(texts), add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False
        )
        return [len(ids) for ids in enc["input_ids"]]

    def chunk(self, doc_id: str, title: str, text: str) -> list[Chunk]:
        blocks = _blocks(text)
        if not blocks:
            return []
        sizes = self.count([text[b.start : b.end] for b in blocks])
        # prefix budget: title + heading path are embedded with the chunk (see Chunk.embedding_text)
        prefixes = sorted({b.heading_path for b in blocks})
        prefix_cost = dict(zip(prefixes, self.count([" > ".join((title, *p)) for p in prefixes])))
        spans: list[tuple[int, int, tuple[str, ...]]] = []
        cur: list[int] = []  # indexes of blocks in the current chunk
        cur_tokens = 0

        def budget(path: tuple[str, ...]) -> int:
            return max(16, self.max_tokens - prefix_cost.get(path, 0) - 2)

        def emit() -> None:
            nonlocal cur, cur_tokens
            if cur:
                first = blocks[cur[0]]
                spans.append((first.start, blocks[cur[-1]].end, _chunk_path(blocks, cur)))
            cur, cur_tokens = [], 0

        for i, (b, n) in enumerate(zip(blocks, sizes)):
            limit = budget(b.heading_path)
            if n > limit:
                if cur and all(blocks[j].is_heading for j in cur):
                    # keep a section's heading with the first window of its oversized body
                    lead, used = blocks[cur[0]].start, cur_tokens
                    cur, cur_tokens = [], 0
                    wins = self._windows(text, b, max(16, limit - used))
                    spans.append((lead, wins[0][1], wins[0][2]))
                    spans.extend(wins[1:])
                else:
                    emit()
                    spans.extend(self._windows(text, b, limit))
                continue
            new_section = b.is_heading and cur and not blocks[cur[-1]].is_heading
            if cur and (cur_tokens + n + 1 > limit or (new_section and cur_tokens >= self.min_tokens)):
                emit()
            cur.append(i)
            cur_tokens += n + 1
        emit()
        chunks = []
        for ordinal, (s, e, path) in enumerate(spans):
            chunks.append(
                Chunk(doc_id=doc_id, ordinal=ordinal, text=text[s:e], heading_path=path, start=s, end=e)
            )
        return chunks

    def _windows(self, text: str, b: _Block, limit: int) -> list[tuple[int, int, tuple[str, ...]]]:
        """Cut one oversized block into overlapping token windows, mapped back to char offsets."""
        piece = text[b.start : b.end]
        enc = self.tokenizer(piece, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        step = max(1, limit - self.overlap_tokens)
        out = []
        for i in range(0, len(offsets), step):
            window = offsets[i : i + limit]
            s, e = window[0][0], window[-1][1]
            # shrink to word boundaries so a window never starts or ends mid-word (budget still holds)
            s0, e0 = s, e
            while i > 0 and s < e and s > 0 and piece[s - 1].isalnum():
                s += 1
            while e < len(piece) and e > s and piece[e].isalnum() and piece[e - 1].isalnum():
                e -= 1
            if e <= s:
                s, e = s0, e0
            out.append((b.start + s, b.start + e, b.heading_path))
            if i + limit >= len(offsets):
                break
        return out


def _chunk_path(blocks: list[_Block], idx: list[int]) -> tuple[str, ...]:
    """Heading path of a chunk: that of its first non-heading block (the section its text is in)."""
    for i in idx:
        if not blocks[i].is_heading:
            return blocks[i].heading_path
    return blocks[idx[0]].heading_path
