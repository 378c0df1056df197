"""Whether bfloat16 arithmetic is native on a device (shared by the fast training profile and the Inception pass)."""

from __future__ import annotations

import torch


def has_bf16(device: torch.device) -> bool:
    """Whether bfloat16 arithmetic is native here (not emulated): a CUDA GPU that supports it, or a CPU with
    AVX512-BF16 or AMX-BF16 (read from /proc/cpuinfo)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
