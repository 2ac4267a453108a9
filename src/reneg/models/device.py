"""Device and dtype policy in one place (library defaults: CPU, fp32)."""

from __future__ import annotations

import torch

from ..errors import ReNegError

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def dtype_of(precision: str) -> torch.dtype:
    """Map a precision name (fp32, fp16, bf16) to the dtype of the frozen model parts."""
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise ReNegError(f"unknown precision '{precision}': choose one of {', '.join(PRECISIONS)}") from None


def resolve_device(name: str | None) -> torch.device:
    """'auto' or None picks CUDA when present, else CPU; an unavailable device is a usage error."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ReNegError(f"unknown device '{name}': use {SUPPORTED_DEVICES}") from None
    if device.type not in ("cpu", "cuda"):
        raise ReNegError(f"device '{name}' is not supported: use {SUPPORTED_DEVICES}")
    if device.type == "cuda":
        _check_cuda(name, device)
    return device


SUPPORTED_DEVICES = "cpu, cuda, cuda:N (N below the number of GPUs) or auto"


def _check_cuda(name: str, device: torch.device) -> None:
    """A CUDA device must exist: CUDA available and, for cuda:N, N below the device count."""
    if not torch.cuda.is_available():
        raise ReNegError(f"device '{name}' requested but CUDA is not available: use --device cpu")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ReNegError(f"device '{name}' does not exist: this machine has {count} GPU(s), "
                         f"use cuda:0 to cuda:{count - 1}, cpu or auto")
