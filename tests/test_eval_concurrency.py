"""`assistant eval --concurrency N` answers exactly what the sequential run answers, in the same order,
with a tiny random Qwen2 model (converted from a GGUF written by tests/gguf_tiny.py) generating in-process."""

from __future__ import annotations

import json
from pathlib import Path

from connectors.local_files import LocalFilesConnector
from tests.conftest import SAMPLE_DOCS, make_settings
from tests.gguf_tiny import write_tiny_qwen2_gguf

QUESTIONS = [
    ("q1", "How long is parental leave for the primary caregiver?", "fact"),
    ("q2", "How many days of PTO do I get per year?", "fact"),
    ("q3", "Who approves my expenses, and how quickly do I get reimbursed?", "multi"),
    ("q4", "What is the deploy freeze window?", "fact"),
    ("q5", "Is there a company car allowance?", "unanswerable"),
    ("q6", "How do I request a new laptop?", "howto"),
]


def _eval(
    tmp_path: Path, data_dir: Path, gguf: Path, questions: Path, out: Path, concurrency: int
) -> list[dict]:
    from typer.testing import CliRunner

    from assistant.cli import app

    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f'data_dir = "{data_dir}"\nmodel_cache_dir = "{tmp_path / "cache"}"\n'
        f'[llm]\nmodel = "{gguf}"\nadapter = "none"\ndevice = "cpu"\nmax_new_tokens = 6\n'
        "[answering]\nsources = 2\npassage_chars = 300\nwindows_per_doc = 1\n"
        '[relevance]\nmodel = "none"\n'
    )
    r = CliRunner().invoke(
        app,
        ["--config", str(cfg), "eval", str(questions), "--out", str(out), "--concurrency", str(concurrency)],
    )
    assert r.exit_code == 0, r.output
    assert "questions answered at once" in (out / "report.md").read_text()
    return [json.loads(x) for x in (out / "answers.jsonl").read_text().splitlines()]


def test_concurrent_eval_gives_the_sequential_answers_in_order(tmp_path, embedder):
    from assistant.engine import Engine

    data_dir = tmp_path / "data"
    eng = Engine.open(make_settings(data_dir), embedder=embedder)
    eng.sync(LocalFilesConnector(SAMPLE_DOCS, name="sample", acl_file=SAMPLE_DOCS / "acl.toml"))
    eng.close()
    gguf = write_tiny_qwen2_gguf(tmp_path / "tiny.gguf", context=32768)
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        "".join(json.dumps({"id": i, "question": q, "kind": k}) + "\n" for i, q, k in QUESTIONS)
    )
    seq = _eval(tmp_path, data_dir, gguf, questions, tmp_path / "seq", 1)
    par = _eval(tmp_path, data_dir, gguf, questions, tmp_path / "par", 4)
    assert [r["id"] for r in par] == [q[0] for q in QUESTIONS] == [r["id"] for r in seq]
    assert any(r["model_answer"] for r in seq)  # the tiny model did generate
    for a, b in zip(seq, par):
        assert (a["answer"], a["refused"], a["model_answer"]) == (
            b["answer"],
            b["refused"],
            b["model_answer"],
        )
        assert [c["path"] for c in a["citations"]] == [c["path"] for c in b["citations"]]
        assert b["timings_ms"]["total"] > 0  # every question keeps its own latency
