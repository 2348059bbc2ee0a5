"""Excerpts: a matching chunk becomes its section, merged with its neighbours, never cut mid-paragraph."""

from __future__ import annotations

import itertools

from assistant.passages import build_excerpts
from assistant.retrieval import Hit
from assistant.store import ChunkRow

DOC = """# Leave policy

## Eligibility

Everyone is eligible from day one.

## How much leave

Primary caregivers get leave after a birth. The amount depends on the role and is described below.

The leave lasts 16 weeks at full pay, and it can be split into two blocks.

## Unrelated

The office plants are watered on Wednesdays.
"""


class ChunkShelf:
    """An in-memory stand-in for the store's ``chunks_of`` (the only store method excerpts use)."""

    def __init__(self, text: str, cuts: list[int]) -> None:
        bounds = [0, *cuts, len(text)]
        self.rows = [
            ChunkRow(i + 1, 7, i, text[a:b], (), a, b) for i, (a, b) in enumerate(itertools.pairwise(bounds))
        ]

    def chunks_of(self, key: int) -> list[ChunkRow]:
        return self.rows if key == 7 else []


def _hit(row: ChunkRow) -> Hit:
    return Hit(1, row.id, 7, "leave.md", "t", "leave.md", "Leave policy", None, 0.1, 0.5, row.text, (), None)


def test_excerpt_is_the_section_around_the_matching_chunk_with_its_headings():
    cut1 = DOC.index("Primary caregivers") + 40  # a chunk boundary in the middle of a sentence
    cut2 = DOC.index("The leave lasts")
    shelf = ChunkShelf(DOC, [cut1, cut2])
    matching = shelf.rows[0]  # the chunk with the start of the section, not the fact
    [ex] = build_excerpts(shelf, [(_hit(matching), 0.9)], max_docs=3, max_chars=2000)
    assert "16 weeks at full pay" in ex.hit.text  # the next chunk of the same section came along
    assert ex.hit.text.startswith("# Leave policy") or ex.hit.text.startswith("## How much leave")
    assert "office plants" not in ex.hit.text  # the next section is not part of it
    pos = ex.hit.text.index("The leave lasts")
    assert ex.heading_at(pos) == ("Leave policy", "How much leave")


def test_a_long_section_is_capped_and_snapped_to_paragraphs():
    body = "\n\n".join(f"Paragraph {i} says something about rule {i} of the policy." for i in range(60))
    text = f"# Rules\n\n{body}\n"
    shelf = ChunkShelf(text, list(range(300, len(text), 300)))
    [ex] = build_excerpts(shelf, [(_hit(shelf.rows[5]), 0.9)], max_docs=1, max_chars=600)
    assert len(ex.hit.text) < 600 + 200
    assert ex.hit.text.startswith("Paragraph ") and ex.hit.text.rstrip().endswith("policy.")


def test_a_then_step_is_quoted_with_the_command_and_lead_in_before_it():
    """A how-to answer picked at "Then post …" must not drop the command it follows (make demo's
    roll-back question answered only the last step before this)."""
    from assistant import grounding as g
    from assistant import quoting

    raw = (
        "## Rolling back\n\nAnyone on the rotation may roll back without asking:\n\n```\n"
        "nwctl rollback <service>\n```\n\nThen post in #deploys what you rolled back and why.\n"
    )
    spans = g.sentences(raw)
    i = next(n for n, sp in enumerate(spans) if sp.text.startswith("Then post"))
    quote = quoting.compose(raw, spans, i)
    assert quote.startswith("Anyone on the rotation may roll back without asking:")
    assert "nwctl rollback <service>" in quote and quote.endswith("rolled back and why.")
    # a "Then" sentence after a new paragraph of unrelated prose is not glued to it
    other = "The office closes at six.\n\n\nThen post in #deploys what you rolled back and why.\n"
    spans = g.sentences(other)
    assert quoting.compose(other, spans, len(spans) - 1).startswith("Then post")


def test_a_lead_in_ending_with_a_colon_is_quoted_with_the_command_block_after_it():
    from assistant import grounding as g
    from assistant import quoting

    raw = (
        "## Rolling back\n\nAnyone on the rotation may roll back without asking:\n\n```\n"
        "nwctl rollback <service>\n```\n\nThen post in #deploys what you rolled back and why.\n"
    )
    spans = g.sentences(raw)
    i = next(n for n, sp in enumerate(spans) if sp.text.startswith("Anyone"))
    assert "nwctl rollback <service>" in quoting.compose(raw, spans, i)
