"""A small learned scorer for answer units: which quote of the excerpts answers the question.

An *answer unit* is what the person would read for one sentence of an excerpt: the quote built around
it (assistant/quoting.py: a table row under its header, a list item under its lead-in, a short sentence
with the next one), read with the document title and the nearest heading. ``featurize`` turns a
question and its units into a feature matrix (embedding cosines, IDF-weighted word overlap with simple
stemming, the question's wh-type against the unit's answer type, the excerpt's retrieval rank and
score, position, shape) — the units' texts are embedded in ONE batch. ``SentenceScorer`` is a logistic
regression over those features whose weights (a JSON file, trained by scripts/train_sentence_scorer.py
on questions generated from the training half of the handbook, never on the dev set) ship in
``assistant/models/sentence_scorer.json``; its output is a probability, and the file carries the
refusal threshold fitted on the same generated data with near-miss negatives.

It does not retrieve, build excerpts or compose quotes (the answerer does) and holds no model of its
own besides the weights: the embedder is passed in.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from assistant import grounding as g
from assistant.errors import ModelError

SHIPPED = Path(__file__).resolve().parent / "models" / "sentence_scorer.json"

_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")
_NUM = re.compile(r"\d")
_MONEY = re.compile(r"[$€£]\s?\d|\b\d[\d,.]*\s?(?:usd|eur|gbp|dollars?)\b", re.I)
_DURATION = re.compile(
    r"\b(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|twelve|a|an)[\s-]+"
    r"(?:business\s+|working\s+|calendar\s+)?(?:minutes?|hours?|days?|weeks?|months?|years?|quarters?)\b",
    re.I,
)
_DATE = re.compile(
    r"\b(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:tember)?|"
    r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?|monday|tuesday|wednesday|thursday|friday|saturday|sunday|"
    r"quarter|q[1-4]|fy\d\d|\d{4}-\d\d-\d\d|(?:19|20)\d\d)\b",
    re.I,
)
_CONTACT = re.compile(r"@[A-Za-z0-9-]|#[a-z0-9][a-z0-9-]+|\b[\w.+-]+@[\w-]+\.\w+", re.I)
_LINK = re.compile(
    r"\]\(|https?://|\b(?:slack|github|notion|google|deel|rippling|gusto|zoom|airbase)\b", re.I
)
_PERCENT = re.compile(r"\d\s?%|\bpercent\b", re.I)
_NEG = re.compile(r"\b(?:don'?t|do not|never|not allowed|avoid|must not|shouldn'?t)\b", re.I)
_ITEM = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_IMPERATIVE = re.compile(
    r"^(?:\W*\d*\W*)(?:go|open|click|visit|send|email|ask|reach|post|use|add|create|fill|submit|file|"
    r"contact|message|request|select|navigate|log|record|book|enter|make|follow|read|check|update|"
    r"reach out|write|sign|set|edit|find|join|schedule|talk|let|please)\b",
    re.I,
)

_Q_HOWMANY = re.compile(
    r"\bhow (?:many|much)\b|\bwhat (?:is|are) the (?:amount|number|budget|limit|cost|price)\b|"
    r"\b(?:minimum|maximum|budget|cost|price|amount|allowance|stipend|limit|percent|rate)\b",
    re.I,
)
_Q_HOWLONG = re.compile(
    r"\bhow (?:long|often|soon|far in advance|far ahead|frequently)\b|\bhow many "
    r"(?:days|weeks|months|years|hours)\b|\bduration\b|\bperiod\b",
    re.I,
)
_Q_WHEN = re.compile(r"\bwhen\b|\bwhat (?:date|day|time|month|year)\b|\bdeadline\b|\bby what\b", re.I)
_Q_WHO = re.compile(r"\bwho\b|\bwhom\b|\bwhose\b|\bwhich (?:team|person|channel|email)\b|\bcontact\b", re.I)
_Q_WHERE = re.compile(
    r"\bwhere\b|\bwhich (?:tool|system|app|platform|page|site)\b|\bwhat (?:tool|system|app)\b", re.I
)
_Q_HOW = re.compile(
    r"\bhow (?:do|can|should|would|to)\b|\bwhat (?:is the process|are the steps|steps)\b|"
    r"\bprocess\b|\bsteps?\b",
    re.I,
)
_Q_YESNO = re.compile(r"^(?:is|are|can|could|do|does|did|should|will|would|may|am)\b", re.I)

FEATURES = (
    "cos_ctx",
    "cos_body",
    "cos_head",
    "cos_ctx_rel",
    "cos_body_rel",
    "cos_ctx_top",
    "lex",
    "lex_idf",
    "lex_head",
    "lex_idf_rel",
    "bigram",
    "q_num_x_num",
    "q_num_x_money",
    "q_dur_x_dur",
    "q_when_x_date",
    "q_when_x_dur",
    "q_who_x_contact",
    "q_where_x_link",
    "q_how_x_item",
    "q_how_x_imperative",
    "q_yesno_x_neg",
    "has_num",
    "is_row",
    "is_item",
    "ends_colon",
    "neg",
    "ex_rank_inv",
    "ex_score",
    "ex_score_rel",
    "pos_in_excerpt",
    "log_len",
    "short",
)


@dataclass(frozen=True)
class Unit:
    """One candidate answer: ``quote`` as it would be shown, ``title`` and ``heading`` it sits under,
    the 0-based ``excerpt`` it comes from, that excerpt's ``rank`` (0 = best) and retrieval ``prior``,
    its sentence's ``position`` (0..1) within the excerpt and the raw ``sentence``."""

    quote: str
    sentence: str
    title: str
    heading: str
    excerpt: int
    rank: int
    prior: float
    position: float


def _stem(w: str) -> str:
    for suf in ("ations", "ation", "ings", "ing", "ies", "edly", "ed", "es", "ly", "s"):
        if len(w) > len(suf) + 3 and w.endswith(suf):
            return w[: -len(suf)] + ("y" if suf == "ies" else "")
    return w


def terms(text: str) -> list[str]:
    """Stemmed content words of ``text`` in order (stop words dropped)."""
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in g.STOP and len(w) > 1]


def _qtype(question: str) -> dict[str, float]:
    return {
        "num": float(bool(_Q_HOWMANY.search(question))),
        "dur": float(bool(_Q_HOWLONG.search(question))),
        "when": float(bool(_Q_WHEN.search(question))),
        "who": float(bool(_Q_WHO.search(question))),
        "where": float(bool(_Q_WHERE.search(question))),
        "how": float(bool(_Q_HOW.search(question))),
        "yesno": float(bool(_Q_YESNO.search(question.strip()))),
    }


def context_text(unit: Unit) -> str:
    head = " > ".join(dict.fromkeys(x for x in (unit.title, unit.heading) if x))
    return f"{head}: {unit.quote[:400]}" if head else unit.quote[:400]


def featurize(question: str, units: Sequence[Unit], embedder) -> np.ndarray:
    """(len(units), len(FEATURES)) float32. Embeds the units' texts and headings in one batch."""
    n = len(units)
    if n == 0:
        return np.zeros((0, len(FEATURES)), dtype=np.float32)
    heads = list(dict.fromkeys(f"{u.title} > {u.heading}" if u.heading else u.title for u in units))
    batch = [context_text(u) for u in units] + [u.quote[:400] for u in units] + heads
    vecs = embedder.embed(batch)  # (2n + len(heads), dim), normalised
    qv = embedder.embed_query(question)  # (dim,)
    sims = vecs @ qv
    cos_ctx, cos_body = sims[:n], sims[n : 2 * n]
    head_sim = dict(zip(heads, sims[2 * n :]))
    cos_head = np.array([head_sim[f"{u.title} > {u.heading}" if u.heading else u.title] for u in units])

    qterms = list(dict.fromkeys(terms(question)))
    qset = set(qterms)
    qbigrams = set(zip(qterms, qterms[1:]))
    unit_terms = [terms(u.quote) for u in units]
    df = Counter(t for ts in unit_terms for t in set(ts))
    idf = {t: math.log((n + 1) / (df.get(t, 0) + 0.5)) + 1.0 for t in qset}
    idf_total = sum(idf.values()) or 1.0
    qt = _qtype(question)
    rows = []
    for u, ts, cc, cb, ch in zip(units, unit_terms, cos_ctx, cos_body, cos_head):
        tset = set(ts)
        head_terms = set(terms(f"{u.title} {u.heading}"))
        shared = qset & tset
        bigrams = set(zip(ts, ts[1:]))
        q = u.quote
        has_num = bool(_NUM.search(q))
        is_row = u.sentence.lstrip().startswith("|")
        is_item = bool(_ITEM.match(u.sentence))
        first = re.sub(r"^[^:]{0,60}:\s*", "", q) if is_item else q
        rows.append(
            [
                cc,
                cb,
                ch,
                0.0,
                0.0,
                0.0,
                len(shared) / (len(qset) or 1),
                sum(idf[t] for t in shared) / idf_total,
                len(qset & (head_terms | tset)) / (len(qset) or 1),
                0.0,
                len(qbigrams & bigrams) / (len(qbigrams) or 1),
                qt["num"] * has_num,
                qt["num"] * bool(_MONEY.search(q) or _PERCENT.search(q)),
                qt["dur"] * bool(_DURATION.search(q)),
                qt["when"] * bool(_DATE.search(q)),
                qt["when"] * bool(_DURATION.search(q)),
                qt["who"] * bool(_CONTACT.search(q)),
                qt["where"] * bool(_LINK.search(q) or _CONTACT.search(q)),
                qt["how"] * is_item,
                qt["how"] * bool(_IMPERATIVE.match(first)),
                qt["yesno"] * bool(_NEG.search(q)),
                float(has_num),
                float(is_row),
                float(is_item),
                float(u.sentence.rstrip().endswith(":")),
                float(bool(_NEG.search(q))),
                1.0 / (1 + u.rank),
                u.prior,
                0.0,
                u.position,
                math.log1p(len(q)) / 6.0,
                float(len(q) < 40),
            ]
        )
    x = np.asarray(rows, dtype=np.float32)
    c = FEATURES.index
    x[:, c("cos_ctx_rel")] = x[:, c("cos_ctx")] - x[:, c("cos_ctx")].max()
    x[:, c("cos_body_rel")] = x[:, c("cos_body")] - x[:, c("cos_body")].max()
    x[:, c("cos_ctx_top")] = (x[:, c("cos_ctx")] >= x[:, c("cos_ctx")].max() - 1e-6).astype(np.float32)
    x[:, c("lex_idf_rel")] = x[:, c("lex_idf")] - x[:, c("lex_idf")].max()
    x[:, c("ex_score_rel")] = x[:, c("ex_score")] - x[:, c("ex_score")].max()
    return x


@dataclass(frozen=True)
class SentenceScorer:
    """Logistic regression over ``FEATURES``: ``probability(x)`` is the chance that a unit answers.
    ``threshold`` is the refusal threshold on the best unit's probability."""

    mean: np.ndarray  # (d,)
    scale: np.ndarray  # (d,)
    coef: np.ndarray  # (d,)
    intercept: float
    threshold: float
    features: tuple[str, ...] = FEATURES

    def probability(self, x: np.ndarray) -> np.ndarray:
        """(n,) float32 in 0..1 for an (n, d) feature matrix from ``featurize``."""
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        z = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        return (1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))).astype(np.float32)

    def to_json(self, **extra) -> dict:
        return {
            "features": list(self.features),
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "coef": [float(v) for v in self.coef],
            "intercept": float(self.intercept),
            "threshold": float(self.threshold),
            **extra,
        }

    @classmethod
    def from_json(cls, data: dict, *, source: str = "weights") -> SentenceScorer:
        names = tuple(data.get("features", ()))
        if names != FEATURES:
            raise ModelError(
                f"The sentence scorer in {source} was trained on other features ({len(names)} vs "
                f"{len(FEATURES)} expected). Retrain it with scripts/train_sentence_scorer.py, or set "
                "answering.sentence_model = 'none'."
            )
        arr = {k: np.asarray(data[k], dtype=np.float32) for k in ("mean", "scale", "coef")}
        if any(v.shape != (len(FEATURES),) for v in arr.values()):
            raise ModelError(f"The sentence scorer in {source} has weights of the wrong length; retrain it.")
        return cls(arr["mean"], arr["scale"], arr["coef"], float(data["intercept"]), float(data["threshold"]))


@lru_cache(maxsize=4)
def _load(path: str) -> SentenceScorer:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ModelError(
            f"No sentence scorer weights at {p}. Point answering.sentence_model at a file written by "
            "scripts/train_sentence_scorer.py, use 'default' for the shipped one, or 'none'."
        ) from None
    except (OSError, ValueError) as e:
        raise ModelError(f"Cannot read the sentence scorer weights {p}: {e}. Retrain or reinstall.") from e
    return SentenceScorer.from_json(data, source=str(p))


def load_sentence_scorer(spec: str) -> SentenceScorer | None:
    """``spec`` is 'default' (the shipped weights), 'none' (no learned scorer) or a path to a weights file."""
    if not spec or spec.lower() == "none":
        return None
    if spec.lower() == "default":
        if not SHIPPED.is_file():
            return None
        return _load(str(SHIPPED))
    return _load(str(Path(spec).expanduser()))
