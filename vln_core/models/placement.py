"""Where and how the pretrained parts run: the LLM's attention kernel and load dtype.

flash-attn is optional (``pip install -e '.[flash]'``; it builds from source against CUDA), so
it is used only when importable, CUDA is present, the LLM's device is a GPU and ``model.dtype``
is bf16/fp16; otherwise PyTorch SDPA.
"""
from __future__ import annotations

import importlib.util
from typing import Any

import torch

__all__ = ["flash_attn_available", "llm_attn_implementation", "llm_load_kwargs"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def flash_attn_available() -> bool:
    """Whether the ``flash_attn`` package can be imported (without importing it twice)."""
    if importlib.util.find_spec("flash_attn") is None:
        return False
    try:
        import flash_attn  # noqa: F401
    except Exception:  # built against another torch / CUDA
        return False
    return True


def llm_attn_implementation(dtype: str, device: torch.device) -> str:
    """``"flash_attention_2"`` when flash-attn can run here (GPU device, bf16/fp16), else ``"sdpa"``."""
    if device.type == "cuda" and dtype in ("bfloat16", "float16") and torch.cuda.is_available() \
            and flash_attn_available():
        return "flash_attention_2"
    return "sdpa"


def llm_load_kwargs(dtype: str, device: torch.device) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for the LLM: the attention kernel, and on a GPU the
    load dtype (so a 7B model is never materialised in float32 first)."""
    kwargs: dict[str, Any] = {"attn_implementation": llm_attn_implementation(dtype, device)}
    if device.type == "cuda" and dtype != "float32":
        kwargs["dtype"] = _DTYPES[dtype]
    return kwargs
