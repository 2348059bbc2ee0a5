"""The Qwen adapter's training mix (finetune/mix.py) and scripts/train_qwen_adapter.py end to end on a
tiny handbook and a tiny random Qwen2 model on the CPU."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from assistant.finetune import data as D
from assistant.finetune import mix as M
from assistant.prompting import REFUSAL

REPO = Path(__file__).resolve().parent.parent

PAGES = {
    "a-benefits/leave.md": """# Parental leave
## How much leave you get
Primary caregivers get 16 weeks of fully paid parental leave after the birth or adoption of a child. Secondary caregivers get 6 weeks of paid leave in the first year.
## How to request leave
Tell your manager at least 30 days before the leave starts and file the request in the HR portal so payroll can plan.
## Coming back to work
The first two weeks back can be part time. Your manager plans a gradual ramp-up with you before you return to the team.
""",
    "a-benefits/pto.md": """# Paid time off
## Vacation days
Every teammate gets 25 days of paid vacation per year, and unused days do not roll over into the next calendar year.
## Sick days
Sick days are unlimited and do not need a doctor's note for absences shorter than five working days in a row.
## Public holidays
Teammates take the public holidays of the country they live in, plus two floating holidays chosen each year.
""",
    "a-benefits/equipment.md": """# Equipment
## Laptops
Every engineer receives a laptop with 32 GB of memory, replaced every three years or sooner when it breaks down.
## Home office budget
The home office budget is 1,500 dollars for a desk, a chair and a monitor, reimbursed through the expense tool.
## Salary bands
Bands are reviewed every year by the compensation team against market data from two survey providers.

| Level | Title | Band |
|---|---|---|
| L3 | Software Engineer | $118,000-$140,000 |
| L4 | Software Engineer II | $150,000-$175,000 |
| L5 | Senior Software Engineer | $182,000-$214,000 |
""",
    "b-company/values.md": """# Values
## Open by default
We write things down in public channels so anyone can find the context later, even teammates who join years after.
## Customer first
We talk to customers every week and bring what we learn back to the planning meeting of each product team.
""",
    "b-company/remote.md": """# Remote work
## Time zones
The company is fully remote, and every team keeps at least four hours of overlap with the rest of the team each day.
## Offsites
Each team meets in person twice a year at an offsite, and the company pays for travel and lodging for everyone.
## Co-working
A co-working budget of 300 dollars per month is available to anyone who prefers to work outside of home.
""",
    "c-engineering/oncall.md": """# On-call
## Rotation
The on-call rotation lasts one week and hands over every Monday at 10:00 in the team's time zone.
## Paging
A page must be acknowledged within 15 minutes, and the incident channel must be opened within 30 minutes.
## Compensation
Each week on call is paid with a flat stipend of 500 dollars on top of the regular salary of the engineer.
""",
    "c-engineering/reviews.md": """# Code review
## Review time
Reviews should be done within one business day so authors are not blocked waiting for feedback on small changes.
## Approvals
Changes to production infrastructure need two approvals from the owning team before they can be merged.
""",
}


@pytest.fixture(scope="module")
def content(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("handbook") / "content"
    for rel, text in PAGES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture(scope="module")
def docs(content) -> list[D.DocText]:
    return D.documents_from_markdown(content, folders=["a-benefits", "c-engineering"])


QUESTIONS = [
    {
        "question": "How long is paid leave for the main caregiver?",
        "answer": "16 weeks",
        "doc_path": "a-benefits/leave.md",
        "title": "Parental leave",
        "heading": "How much leave you get",
        "kind": "llm",
        "passage": PAGES["a-benefits/leave.md"].split("## How much leave you get\n")[1].split("##")[0],
    },
    {
        "question": "How fast do I have to acknowledge a page?",
        "answer": "within 15 minutes",
        "doc_path": "c-engineering/oncall.md",
        "title": "On-call",
        "heading": "Paging",
        "kind": "llm",
        "passage": PAGES["c-engineering/oncall.md"].split("## Paging\n")[1].split("##")[0],
    },
    {
        "question": "How many vacation days do I get?",
        "answer": "25 days",
        "doc_path": "a-benefits/pto.md",
        "title": "Paid time off",
        "heading": "Vacation days",
        "kind": "llm",
        "passage": PAGES["a-benefits/pto.md"].split("## Vacation days\n")[1].split("##")[0],
    },
    {
        "question": "Which values do we hold?",
        "answer": "Open by default",
        "doc_path": "b-company/values.md",
        "title": "Values",
        "heading": "Open by default",
        "kind": "llm",
        "passage": PAGES["b-company/values.md"],
    },
]


def test_question_rows_become_answers_that_state_the_fact_first_and_cite(docs):
    items = M.question_items(QUESTIONS, {d.doc_id: d for d in docs}, max_chars=700)
    assert {it.question for it in items} == {q["question"] for q in QUESTIONS[:3]}  # held-out page dropped
    leave = next(it for it in items if "caregiver" in it.question)
    assert leave.target.startswith("16 weeks [{n}]. Primary caregivers get 16 weeks")
    mix = M.build_mix(items, M.Pool(docs), seed=1, refusal_rate=1.0, multi_rate=0.0)
    answers = [e for e in mix if e["kind"] == "answer"]
    for ex in answers:
        assert 4 <= len(ex["passages"]) <= 8
        (n,) = ex["cite"]
        gold = ex["passages"][n - 1]["text"]
        assert M.norm(ex["key_fact"]) in M.norm(gold) and f"[{n}]" in ex["answer"]
        others = [p["text"] for p in ex["passages"] if p["n"] != n]
        assert not any(M.norm(ex["key_fact"]) in M.norm(t) for t in others)


def test_refusals_are_near_misses_without_the_answer(docs):
    items = M.question_items(QUESTIONS, {d.doc_id: d for d in docs}, max_chars=700)
    mix = M.build_mix(items, M.Pool(docs), seed=2, refusal_rate=1.0, multi_rate=0.0)
    refusals = [e for e in mix if e["kind"] == "refusal"]
    assert refusals and all(e["answer"] == REFUSAL and e["cite"] == [] for e in refusals)
    leave = next(e for e in refusals if "caregiver" in e["question"])
    titles = [p["title"] for p in leave["passages"]]
    assert "Parental leave" in titles  # other sections of the same page: a near miss, not a random page
    assert not any("16 weeks" in p["text"] for p in leave["passages"])


def test_gold_position_varies_and_multi_part_cites_two_passages(docs):
    rng = random.Random(0)
    items = M.synthesised_items(docs, rng=rng, per_doc=3, max_chars=400)
    items += M.question_items(QUESTIONS, {d.doc_id: d for d in docs}, max_chars=700)
    mix = M.build_mix(items * 6, M.Pool(docs), seed=3, multi_rate=0.3)
    positions = {e["cite"][0] for e in mix if e["kind"] == "answer"}
    assert len(positions) >= 3
    multi = [e for e in mix if e["kind"] == "multi"]
    assert multi
    for ex in multi:
        assert " Also, " in ex["question"] and len(ex["cite"]) == 2
        assert all(f"[{n}]" in ex["answer"] for n in ex["cite"])


def test_table_questions_show_header_and_row(content):
    tables = M.tables_from_markdown(content, folders=["a-benefits"])
    assert len(tables) == 1 and tables[0].header == ("Level", "Title", "Band")
    items = M.table_items(tables, rng=random.Random(1), per_table=3)
    assert items
    for it in items:
        assert it.kind == "table" and it.passage.count("| Level | Title | Band |") == 1
        assert it.needles[0] in it.passage and it.needles[0] in it.target
    l5 = [it for it in items if "L5" in it.question]
    for it in l5:
        assert "$182,000-$214,000" in it.target or "Senior Software Engineer" in it.target


def test_a_table_row_answer_names_the_row_with_its_header(docs):
    table = PAGES["a-benefits/equipment.md"].split("## Salary bands\n")[1]
    row = {
        "question": "What's the pay range for a senior engineer?",
        "answer": "$182,000-$214,000",
        "doc_path": "a-benefits/equipment.md",
        "title": "Equipment",
        "heading": "Salary bands",
        "passage": table,
        "kind": "table",
    }
    (item,) = M.question_items([row], {d.doc_id: d for d in docs}, max_chars=700)
    assert item.kind == "table"
    assert item.target == (
        "$182,000-$214,000 [{n}]. Level: L5, Title: Senior Software Engineer, Band: $182,000-$214,000 [{n}]."
    )


def tiny_qwen_folder(folder: Path) -> Path:
    """A random 2-layer Qwen2 with a byte-level BPE tokenizer and a ChatML template, saved as a HF folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(
        list(PAGES.values()) * 2 + [REFUSAL],
        trainers.BpeTrainer(
            vocab_size=600,
            special_tokens=["<|im_start|>", "<|im_end|>", "<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            tie_word_embeddings=True,
        )
    )
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_qwen_script_builds_and_trains_an_adapter_for_a_local_folder(content, tmp_path, monkeypatch):
    """`train_qwen_adapter.py build` then `train --model <HF folder>`: an adapter with its base fingerprint."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from assistant.llm.loading import model_fingerprint

    sys.path.insert(0, str(REPO / "scripts"))
    import train_qwen_adapter as S

    qfile = tmp_path / "questions.jsonl"
    qfile.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    data = tmp_path / "ds"
    S.main(
        [
            "build",
            "--handbook",
            str(content),
            "--questions",
            str(qfile),
            "--out",
            str(data),
            "--heldout",
            "20",
        ]
    )
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["train_folders"] == ["a-benefits", "c-engineering"] and manifest["questions_used"] == 3
    train = D.read_split(data, "train") + D.read_split(data, "validation")
    assert not any(e["doc_id"].startswith("b-company") for e in train)  # the held-out half stays out
    held = [json.loads(x) for x in (data / "heldout.jsonl").read_text().splitlines()]
    assert held and all(e["doc_id"].startswith("b-company") for e in held)

    torch.set_num_threads(1)
    base = tiny_qwen_folder(tmp_path / "tiny-qwen")
    out = tmp_path / "run"
    S.main(
        [
            "train",
            "--data",
            str(data),
            "--model",
            str(base),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--max-steps",
            "2",
            "--global-batch",
            "2",
            "--micro-batch",
            "2",
            "--r",
            "2",
            "--eval-limit",
            "2",
            "--seq-len",
            "4096",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    ship = out / "adapter"
    meta = json.loads((ship / "assistant-adapter.json").read_text())
    assert meta["base_fingerprint"] == model_fingerprint(base)
    cfg = json.loads((ship / "adapter_config.json").read_text())
    assert cfg["r"] == 2 and set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["loss_first"] > 0
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(ship))
    assert any("lora_A" in n for n, _ in model.named_parameters())
