"""Dynamic int8 quantization of an :class:`~tts.backends.hf.HFBackend`'s loaded model (CPU).

``torch.ao.quantization.quantize_dynamic`` replaces ``nn.Linear`` layers by int8 ones whose
activations are quantized on the fly; it needs a float32 model and runs on CPU. Modes:

- ``int8``: every linear layer;
- ``int8_mixed``: mixed precision, keeping the layers quantization hurts most in full precision:
  ``lm_head`` and the first and last transformer blocks (``keep`` adds more name prefixes).

The backend's model is changed in place (its forward hooks stay), and ``backend.quantization``
records what was done, so study manifests show it. Use it through a pipeline's backend block,
``backend: {name: hf, quantize: int8}``, and compare against the full-precision pipeline with a
study ``comparisons`` entry (the quantization check).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from typing import Any, Literal

from tts.errors import ConfigError

__all__ = ["QuantizeMode", "quantize_backend", "sensitive_layers"]

log = logging.getLogger(__name__)

QuantizeMode = Literal["int8", "int8_mixed"]


def sensitive_layers(model: Any) -> list[str]:
    """Name prefixes kept in full precision by ``int8_mixed``: ``lm_head`` and the first and last
    numbered transformer blocks (``model.layers.0.``, ``model.layers.{L-1}.``)."""
    blocks: dict[str, set[int]] = {}
    for name, _ in model.named_modules():
        m = re.match(r"^(.*\.(?:layers|h|blocks))\.(\d+)$", name)
        if m:
            blocks.setdefault(m.group(1), set()).add(int(m.group(2)))
    keep = ["lm_head"]
    for prefix, ids in blocks.items():
        keep += [f"{prefix}.{min(ids)}.", f"{prefix}.{max(ids)}."]
    return keep


def quantize_backend(backend: Any, mode: QuantizeMode = "int8", *, keep: Sequence[str] = ()) -> dict[str, Any]:
    """Quantize ``backend.model`` in place; returns (and stores as ``backend.quantization``) what
    was quantized: ``{"mode", "quantized", "kept"}``."""
    if mode not in ("int8", "int8_mixed"):
        raise ConfigError(f"quantize must be 'int8' or 'int8_mixed', got {mode!r}.")
    model = getattr(backend, "model", None)
    if model is None or not hasattr(model, "named_modules"):
        raise ConfigError(
            f"quantize needs a backend with a loaded torch model (the hf backend); got {type(backend).__name__}."
        )
    import torch
    from torch import nn

    device = getattr(backend, "device", None)
    if device is not None and getattr(device, "type", "cpu") != "cpu":
        raise ConfigError(f"dynamic int8 quantization runs on CPU only, got device {device}; set device: cpu.")
    if any(p.dtype != torch.float32 for p in model.parameters()):
        model.float()  # quantize_dynamic needs float32 weights
        backend.dtype = torch.float32
    linear = [name for name, mod in model.named_modules() if isinstance(mod, nn.Linear)]
    kept_prefixes = list(keep) + (sensitive_layers(model) if mode == "int8_mixed" else [])
    targets = [n for n in linear if not any(n == k.rstrip(".") or n.startswith(k) for k in kept_prefixes)]
    if not targets:
        raise ConfigError("quantize found no linear layers to quantize; check the model or the keep list.")
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates the ao API in favour of torchao; it still works
        quantize_dynamic(model, {name: default_dynamic_qconfig for name in targets}, dtype=torch.qint8, inplace=True)
    kept = sorted(set(linear) - set(targets))
    info: dict[str, Any] = {"mode": mode, "quantized": len(targets), "kept": kept}
    backend.quantization = info
    log.info("quantized %d linear layers to int8 (%d kept)", len(targets), len(kept))
    return info
