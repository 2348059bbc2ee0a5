"""The registry of LoRA adapters in the data dir, and how an adapter spec becomes a folder.

Layout: ``<data_dir>/adapters/<name>/v<N>/`` holds a copy of a peft adapter folder
(``adapter_config.json`` + weights); ``<data_dir>/adapters/registry.json`` lists every version with
its base-model fingerprint, data fingerprint, hyper-parameters and metrics, and which adapter is
active. The JSON is written to a temporary file and renamed, so a crash never corrupts it.

Not here: training (``assistant.finetune``) or attaching adapters to a model (``local``/``server``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from assistant.errors import ConfigError, ModelError

SHIPPED_DEFAULT = Path(__file__).resolve().parent.parent / "adapters" / "default"
# every adapter shipped in the package; 'default' picks the one trained on the loaded base
SHIPPED = (SHIPPED_DEFAULT, SHIPPED_DEFAULT.parent / "qwen15")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_RESERVED = {"none", "default", "base", "bundled"}


@dataclass(frozen=True)
class AdapterRecord:
    name: str
    version: int
    path: Path
    base_fingerprint: str
    data_fingerprint: str
    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    created: str = ""

    def to_json(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d

    @classmethod
    def from_json(cls, d: dict) -> AdapterRecord:
        return cls(**{**d, "path": Path(d["path"])})


def is_adapter_dir(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "adapter_config.json").is_file()


def adapter_base_fingerprint(path: Path) -> str | None:
    """The base fingerprint stored beside an adapter (``assistant-adapter.json``), if any."""
    meta = Path(path) / "assistant-adapter.json"
    try:
        return json.loads(meta.read_text()).get("base_fingerprint")
    except (OSError, ValueError):
        return None


class AdapterRegistry:
    """Registered adapters under ``<data_dir>/adapters``; safe to share between threads."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "adapters"
        self._file = self.root / "registry.json"
        self._lock = threading.Lock()

    # -- persistence ------------------------------------------------------------------------
    def _read(self) -> dict:
        try:
            data = json.loads(self._file.read_text())
        except FileNotFoundError:
            return {"active": None, "adapters": []}
        except ValueError as e:
            raise ConfigError(
                f"{self._file} is not valid JSON ({e}). Restore it from a backup or delete it "
                "and register the adapters again."
            ) from e
        data.setdefault("active", None)
        data.setdefault("adapters", [])
        return data

    def _write(self, data: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".registry.", suffix=".json", dir=self.root)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._file)

    # -- queries ----------------------------------------------------------------------------
    def list(self) -> list[AdapterRecord]:
        """Every registered version, oldest first."""
        return [AdapterRecord.from_json(d) for d in self._read()["adapters"]]

    def latest(self, name: str) -> AdapterRecord | None:
        versions = [r for r in self.list() if r.name == name]
        return max(versions, key=lambda r: r.version) if versions else None

    def active(self) -> str | None:
        return self._read()["active"]

    # -- changes ----------------------------------------------------------------------------
    def register(
        self,
        name: str,
        adapter_dir: Path,
        *,
        base_fingerprint: str,
        data_fingerprint: str,
        params: dict | None = None,
        metrics: dict | None = None,
    ) -> AdapterRecord:
        """Copy a peft adapter folder in as the next version of ``name``."""
        if not _NAME.match(name) or name.lower() in _RESERVED:
            raise ConfigError(
                f"Adapter name {name!r} is not allowed: use letters, digits, '.', '_' or '-' "
                f"(at most 64), and none of {sorted(_RESERVED)}."
            )
        adapter_dir = Path(adapter_dir)
        if not is_adapter_dir(adapter_dir):
            raise ModelError(
                f"{adapter_dir} is not a peft adapter folder (no adapter_config.json). "
                "Pass the folder written by save_pretrained of a PeftModel."
            )
        with self._lock:
            data = self._read()
            version = 1 + max((d["version"] for d in data["adapters"] if d["name"] == name), default=0)
            dest = self.root / name / f"v{version}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".v{version}.", dir=dest.parent))
            try:
                shutil.copytree(adapter_dir, tmp, dirs_exist_ok=True)
                (tmp / "assistant-adapter.json").write_text(
                    json.dumps(
                        {
                            "name": name,
                            "version": version,
                            "base_fingerprint": base_fingerprint,
                            "data_fingerprint": data_fingerprint,
                        },
                        indent=2,
                    )
                )
                os.replace(tmp, dest)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
            rec = AdapterRecord(
                name=name,
                version=version,
                path=dest,
                base_fingerprint=base_fingerprint,
                data_fingerprint=data_fingerprint,
                params=dict(params or {}),
                metrics=dict(metrics or {}),
                created=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            data["adapters"].append(rec.to_json())
            self._write(data)
            return rec

    def use(self, name: str | None) -> None:
        """Make ``name`` the adapter that 'default' resolves to (None or 'none': the base model)."""
        with self._lock:
            data = self._read()
            if name is not None and name.lower() != "none":
                if not any(d["name"] == name for d in data["adapters"]):
                    known = sorted({d["name"] for d in data["adapters"]}) or ["(none registered)"]
                    raise ConfigError(
                        f"No adapter named {name!r}. Registered: {', '.join(known)}. "
                        "Train one with `assistant finetune train --name NAME`."
                    )
            else:
                name = "none"
            data["active"] = name
            self._write(data)

    # -- resolution -------------------------------------------------------------------------
    def resolve(self, spec: str | None, *, base_fingerprint: str | None = None) -> Path | None:
        """A folder for an adapter spec: a registered name, a folder, 'default', or None/'none'.

        'default' without an active registered adapter is the shipped adapter trained on the base
        with ``base_fingerprint`` (none when no shipped adapter fits it), or, when no fingerprint is
        given, the shipped SmolLM2 adapter.
        """
        if spec is None or spec.lower() == "none":
            return None
        if spec.lower() == "default":
            active = self.active()
            if active == "none":  # `adapters use none` switches the default off explicitly
                return None
            if active:
                rec = self.latest(active)
                if rec is not None and is_adapter_dir(rec.path):
                    return rec.path
            return shipped_adapter(base_fingerprint)
        rec = self.latest(spec)
        if rec is not None:
            if not is_adapter_dir(rec.path):
                raise ModelError(f"Adapter {spec!r} is registered but {rec.path} is gone. Register it again.")
            return rec.path
        p = Path(spec).expanduser()
        if is_adapter_dir(p):
            return p
        known = sorted({r.name for r in self.list()})
        raise ConfigError(
            f"Unknown adapter {spec!r}: not a registered name ({', '.join(known) or 'none registered'}) "
            "and not a folder with adapter_config.json. Use 'default', 'none', a name or a folder."
        )

    def fingerprint_of(self, path: Path) -> str | None:
        """The base fingerprint an adapter folder was trained on, from the registry or beside it."""
        path = Path(path).resolve()
        for r in self.list():
            if Path(r.path).resolve() == path:
                return r.base_fingerprint
        return adapter_base_fingerprint(path)


def shipped_adapter(base_fingerprint: str | None = None) -> Path | None:
    """The shipped adapter for a base model (by fingerprint); without one, the SmolLM2 default."""
    for path in SHIPPED:
        if not is_adapter_dir(path):
            continue
        if base_fingerprint is None or adapter_base_fingerprint(path) in (None, base_fingerprint):
            return path
    return None


def check_base(adapter_path: Path, *, expected: str | None, loaded: str, name: str) -> None:
    """Refuse an adapter trained on another base model."""
    if expected and loaded and expected != loaded:
        raise ModelError(
            f"Adapter {name!r} ({adapter_path}) was trained on a base model with fingerprint {expected}, "
            f"but the loaded base is {loaded}. Load the base it was trained on, or pick another adapter "
            "(llm.adapter = 'none' for the base model)."
        )


def attach_adapter(model, path: Path, name: str):
    """Attach a peft LoRA adapter under ``name``; returns the (possibly new) PeftModel."""
    from peft import PeftModel

    try:
        if isinstance(model, PeftModel):
            model.load_adapter(str(path), adapter_name=name, is_trainable=False)
            return model
        model = PeftModel.from_pretrained(model, str(path), adapter_name=name, is_trainable=False)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ModelError(
            f"Could not attach adapter {name!r} from {path}: {e}. Was it trained for this base "
            "model (same architecture and size)?"
        ) from e
    model.eval()
    return model
