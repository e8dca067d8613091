"""KV-cache memory: bytes per token, per sequence and per GPU, and whether it fits a device.

With ring attention (context parallelism) each of G ranks caches the K/V of its own T/G tokens,
so the per-GPU cache is the sequence's cache divided by G. A hybrid stack's SSM state is fixed
size and kept whole on every rank (each rank carries the recurrent state across its chunk).
Only the attention cache and SSM state are counted here, not weights or activations.
"""
from __future__ import annotations

from .units import InputError, parse_bytes
from .workload import Workload

__all__ = ["DEVICE_MEMORY", "parse_device_memory", "memory_row"]

# Device memory in bytes (vendor datasheets, decimal GB).
DEVICE_MEMORY = {
    "a100": 80e9, "a100-80gb": 80e9, "a100-40gb": 40e9,
    "h100": 80e9, "h100-80gb": 80e9, "gh200": 96e9, "h100-nvl": 94e9,
    "h200": 141e9, "b200": 192e9,
}


def parse_device_memory(text: str | None) -> float | None:
    if text is None:
        return None
    key = str(text).strip().lower()
    if key in DEVICE_MEMORY:
        return DEVICE_MEMORY[key]
    try:
        return parse_bytes(text, "device memory")
    except InputError:
        raise InputError(f"device memory {text!r} is neither a size (e.g. 80GB, 141GB) nor a device "
                         f"({', '.join(DEVICE_MEMORY)})") from None


def memory_row(workload: Workload, world_size: int = 1, device_memory_bytes: float | None = None) -> dict:
    if world_size <= 0:
        raise InputError(f"world size must be positive, got {world_size}")
    kv = workload.kv_cache_bytes()
    state = workload.state_bytes()
    per_gpu = -(-kv // world_size) + state
    row = {
        "model": workload.model.name,
        "attention": workload.model.attention,
        "seq_len": workload.seq_len,
        "batch": workload.batch,
        "dtype": workload.dtype,
        "world_size": world_size,
        "kv_bytes_per_token": workload.kv_bytes_per_token(),
        "kv_cache_bytes": kv,
        "state_bytes": state,
        "kv_cache_per_gpu_bytes": -(-kv // world_size),
        "total_per_gpu_bytes": per_gpu,
        "device_memory_bytes": device_memory_bytes,
        "fits": None if device_memory_bytes is None else bool(per_gpu <= device_memory_bytes),
    }
    return row
