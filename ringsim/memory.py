"""KV memory: bytes per token, per sequence and per GPU — one function for every command.

Two different quantities, each with its own key (a decode-time rolling cache is not a prefill shard):

- ``kv_shard_per_gpu_bytes``: the K/V (or MLA latent) of a rank's own ⌈T/G⌉ tokens over all
  attention layers — what context-parallel prefill or training holds on each GPU and what the
  ring moves, whatever the mask (a sliding-window model still computes and keeps the K/V of
  every token of its shard). ``ringsim memory`` and ``ringsim simulate`` print this same figure.
- ``decode_cache_bytes`` / ``decode_cache_per_gpu_bytes``: the cache needed to decode the next
  token — the whole sequence, or for a sliding-window model the rolling buffer of its last W
  tokens (Mistral's "rolling buffer cache") — and that split over G GPUs.

A hybrid stack's SSM state is fixed size and kept whole on every rank (each rank carries the
recurrent state across its chunk). Only attention K/V and SSM state are counted, not weights or
activations.
"""
from __future__ import annotations

from .units import InputError, parse_bytes
from .workload import Workload

__all__ = ["DEVICE_MEMORY", "parse_device_memory", "memory_row", "kv_memory"]

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


def kv_memory(workload: Workload, world_size: int = 1, tokens_per_rank: int | None = None) -> dict:
    """The KV figures of a workload over ``world_size`` GPUs (see the module docstring);
    ``tokens_per_rank`` overrides ⌈T/G⌉ (a padded pack of documents holds padding tokens too)."""
    if world_size <= 0:
        raise InputError(f"world size must be positive, got {world_size}")
    per_token = workload.kv_bytes_per_token() * workload.batch
    shard_tokens = tokens_per_rank if tokens_per_rank is not None else -(-workload.seq_len // world_size)
    decode = workload.decode_cache_bytes()
    return {
        "kv_bytes_per_token": workload.kv_bytes_per_token(),
        "kv_shard_per_gpu_bytes": shard_tokens * per_token,
        "decode_cache_bytes": decode,
        "decode_cache_per_gpu_bytes": -(-decode // world_size),
        "state_bytes": workload.state_bytes(),
    }


def memory_row(workload: Workload, world_size: int = 1, device_memory_bytes: float | None = None) -> dict:
    """One row of ``ringsim memory``: whether the K/V shard of every GPU (plus SSM state) fits."""
    kv = kv_memory(workload, world_size)
    per_gpu = kv["kv_shard_per_gpu_bytes"] + kv["state_bytes"]
    return {
        "model": workload.model.name,
        "attention": workload.model.attention,
        "seq_len": workload.seq_len,
        "batch": workload.batch,
        "dtype": workload.dtype,
        "world_size": world_size,
        "kv_bytes_per_token": kv["kv_bytes_per_token"],
        "kv_cache_bytes": workload.kv_cache_bytes(),
        "kv_shard_per_gpu_bytes": kv["kv_shard_per_gpu_bytes"],
        "decode_cache_bytes": kv["decode_cache_bytes"],
        "decode_cache_per_gpu_bytes": kv["decode_cache_per_gpu_bytes"],
        "state_bytes": kv["state_bytes"],
        "total_per_gpu_bytes": per_gpu,
        "device_memory_bytes": device_memory_bytes,
        "fits": None if device_memory_bytes is None else bool(per_gpu <= device_memory_bytes),
    }
