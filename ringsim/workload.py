"""The workload: which model, how long a sequence, what precision.

A :class:`ModelSpec` holds a model's published dimensions and its *attention variant*, which decides
what a token costs in the KV cache and on the ring:

- ``standard`` — multi-head or grouped-query attention. Each attention layer caches K and V for
  every token: ``2 × kv_heads × head_dim`` values per token per layer.
- ``mla`` — multi-head latent attention (DeepSeek-V2/V3). A layer caches one compressed latent of
  ``kv_lora_rank`` values plus the decoupled RoPE key of ``rope_head_dim`` values per token, shared
  by all heads; the ring passes that latent.
- ``sliding`` — sliding-window attention (Mistral 7B v0.1): a rolling cache of the last
  ``sliding_window`` tokens per layer, so the cache stops growing past the window.
- ``hybrid`` — a stack in which only ``attention_layers`` of the ``layers`` are attention and the
  rest are SSM (Mamba-like) layers that keep a fixed-size state instead of a per-token cache.

A :class:`Workload` is a model plus sequence length, batch and dtype. Ring attention runs one ring
per attention layer; everything "per layer" below is per *attention* layer.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .limits import MAX_KV_BYTES, MAX_SEQ_LEN
from .units import InputError

__all__ = ["ModelSpec", "Workload", "MODEL_PRESETS", "DTYPE_BYTES", "get_model", "dtype_bytes", "BWD_FLOPS_FACTOR",
           "GRAD_BYTES_PER_VALUE"]

# Backward attention recomputes QKᵀ and runs dV, dP, dQ, dK: five matmuls against the forward's
# two, so 2.5 × the forward FLOPs of the same pairs (FlashAttention-2 paper §4.1). The one place
# this constant lives.
BWD_FLOPS_FACTOR = 2.5
# dK/dV accumulators travel and accumulate in fp32 whatever the input dtype (what the runtime and
# ring-flash-attention do).
GRAD_BYTES_PER_VALUE = 4

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "fp8": 1}
_DTYPE_ALIASES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32",
                  "float8": "fp8", "e4m3": "fp8", "e5m2": "fp8"}


def dtype_bytes(dtype: str) -> int:
    d = _DTYPE_ALIASES.get(dtype.lower(), dtype.lower())
    if d not in DTYPE_BYTES:
        raise InputError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[d]


def normalize_dtype(dtype: str) -> str:
    dtype_bytes(dtype)
    return _DTYPE_ALIASES.get(dtype.lower(), dtype.lower())


MAX_DIM = 1 << 16  # layers, heads, head dims
MAX_WIDTH = 1 << 24  # hidden, ffn
MAX_BATCH = 1 << 16


@dataclass(frozen=True)
class ModelSpec:
    """A model's dimensions. ``head_dim`` is the query/key head size; ``v_head_dim`` (default
    ``head_dim``) the value head size. ``source`` cites where the numbers come from."""

    name: str
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int = 0
    ffn: int = 0
    attention: str = "standard"  # standard | mla | sliding | hybrid
    v_head_dim: int | None = None
    # MLA
    kv_lora_rank: int = 0
    rope_head_dim: int = 0
    # sliding window
    sliding_window: int = 0
    # hybrid
    attention_layers: int | None = None
    ssm_state_elems_per_layer: int = 0
    source: str = ""

    def __post_init__(self):
        for key in ("layers", "heads", "kv_heads", "head_dim"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise InputError(f"model {self.name}: {key} must be a positive integer, got {v!r}")
            if v > MAX_DIM:  # the model's range; larger values overflow the engines' int64 byte counts
                raise InputError(f"model {self.name}: {key} must be at most {MAX_DIM:,}, got {v:,}; "
                                 f"give a smaller --{key.replace('_', '-')}")
        for key in ("hidden", "ffn"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_WIDTH:
                raise InputError(f"model {self.name}: {key} must be an integer in [0, {MAX_WIDTH:,}], got {v!r}; "
                                 f"give a smaller --{key}")
        if self.heads % self.kv_heads:
            raise InputError(
                f"model {self.name}: heads ({self.heads}) must be a multiple of kv-heads ({self.kv_heads}) for GQA"
            )
        if self.attention not in ("standard", "mla", "sliding", "hybrid"):
            raise InputError(f"model {self.name}: unknown attention variant {self.attention!r}")

    @property
    def v_dim(self) -> int:
        return self.v_head_dim or self.head_dim

    @property
    def n_attention_layers(self) -> int:
        if self.attention == "hybrid" and self.attention_layers is not None:
            return self.attention_layers
        return self.layers

    def kv_values_per_token_layer(self) -> int:
        """Values one attention layer caches (and a ring step moves) per token."""
        if self.attention == "mla":
            return self.kv_lora_rank + self.rope_head_dim
        return self.kv_heads * (self.head_dim + self.v_dim)

    def default_mask(self) -> str:
        """The mask the model is trained with: its sliding window for sliding-window models, else causal."""
        if self.attention == "sliding" and self.sliding_window:
            return f"sliding:{self.sliding_window}"
        return "causal"

    def flops_per_pair_layer(self) -> int:
        """Forward FLOPs per allowed (query, key) pair, per attention layer, for batch 1:
        QKᵀ (2·d_qk per head) plus PV (2·d_v per head) — 4·H·d_head for standard attention."""
        return 2 * self.heads * (self.head_dim + self.v_dim)


def _mla_source() -> str:
    return "DeepSeek-V3 technical report (arXiv:2412.19437) and its config.json"


MODEL_PRESETS: dict[str, ModelSpec] = {
    m.name: m
    for m in [
        ModelSpec("llama2-7b", 32, 32, 32, 128, 4096, 11008,
                  source="Llama 2 paper (arXiv:2307.09288), Table 1 / config.json: MHA"),
        ModelSpec("llama3-8b", 32, 32, 8, 128, 4096, 14336,
                  source="Llama 3 herd paper (arXiv:2407.21783) Table 3 / config.json"),
        ModelSpec("llama3-70b", 80, 64, 8, 128, 8192, 28672,
                  source="Llama 3 herd paper (arXiv:2407.21783) Table 3 / config.json"),
        ModelSpec("llama3-405b", 126, 128, 8, 128, 16384, 53248,
                  source="Llama 3 herd paper (arXiv:2407.21783) Table 3"),
        ModelSpec("mistral-7b", 32, 32, 8, 128, 4096, 14336, attention="sliding", sliding_window=4096,
                  source="Mistral 7B paper (arXiv:2310.06825) Table 1: window 4096, rolling buffer cache"),
        ModelSpec("deepseek-v3", 61, 128, 128, 192, 7168, 18432, attention="mla", v_head_dim=128,
                  kv_lora_rank=512, rope_head_dim=64,
                  source=_mla_source() + ": qk head 128+64 (RoPE), v head 128, latent 512"),
        ModelSpec("jamba-v0.1", 32, 32, 8, 128, 4096, 14336, attention="hybrid", attention_layers=4,
                  # Mamba layers: d_inner = 2 × 4096, d_state 16, conv kernel 4 → state (16 + 3) per channel
                  ssm_state_elems_per_layer=8192 * (16 + 3),
                  source="Jamba paper (arXiv:2403.19887): 1 attention : 7 Mamba layers, d_state 16, expand 2"),
    ]
}


def get_model(name: str) -> ModelSpec:
    key = name.strip().lower()
    if key not in MODEL_PRESETS:
        raise InputError(f"unknown model preset {name!r}; known presets: {', '.join(MODEL_PRESETS)}"
                         " (or give --layers --heads --kv-heads --head-dim)")
    return MODEL_PRESETS[key]


def build_model(name: str | None = None, *, layers=None, heads=None, kv_heads=None, head_dim=None,
                hidden=None, ffn=None) -> ModelSpec:
    """A preset, a preset with some dimensions overridden, or a custom model from dimensions only."""
    overrides = {k: v for k, v in dict(layers=layers, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                                        hidden=hidden, ffn=ffn).items() if v is not None}
    if name:
        base = get_model(name)
        if not overrides:
            return base
        if "heads" in overrides and "kv_heads" not in overrides and base.kv_heads == base.heads:
            overrides["kv_heads"] = overrides["heads"]
        return replace(base, name=f"{base.name}*", **overrides)
    missing = [f"--{k.replace('_', '-')}" for k in ("layers", "heads", "head_dim") if k not in overrides]
    if missing:
        raise InputError(f"no --model preset and missing {', '.join(missing)}; give a preset "
                         f"({', '.join(MODEL_PRESETS)}) or all custom dimensions")
    overrides.setdefault("kv_heads", overrides["heads"])
    return ModelSpec("custom", **overrides)


@dataclass(frozen=True)
class Workload:
    """One attention problem: a model over a sequence of ``seq_len`` tokens, ``batch`` sequences."""

    model: ModelSpec
    seq_len: int
    batch: int = 1
    dtype: str = "bf16"

    def __post_init__(self):
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch <= 0:
            raise InputError(f"batch must be positive, got {self.batch!r}")
        if self.batch > MAX_BATCH:
            raise InputError(f"batch must be at most {MAX_BATCH:,}, got {self.batch:,}; give a smaller --batch")
        if isinstance(self.seq_len, bool) or not isinstance(self.seq_len, int) or not 0 < self.seq_len <= MAX_SEQ_LEN:
            raise InputError(f"sequence length must be an integer in [1, {MAX_SEQ_LEN:,}], got {self.seq_len!r}; "
                             "give a shorter --seq-len")
        object.__setattr__(self, "dtype", normalize_dtype(self.dtype))
        kv = self.batch * self.seq_len * self.kv_bytes_per_token()
        if kv > MAX_KV_BYTES:  # byte counts past this are inexact in float64 and overflow int64 sums
            raise InputError(f"{self.model.name} at batch {self.batch:,} × {self.seq_len:,} tokens holds {kv:.3g} bytes "
                             f"of K/V, beyond the {MAX_KV_BYTES:.3g} bytes ringsim models exactly; lower --batch or "
                             "--seq-len")

    @property
    def bytes_per_value(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def layers(self) -> int:
        """Attention layers: one ring each."""
        return self.model.n_attention_layers

    def kv_bytes_per_token(self) -> int:
        """Cache bytes per token over all attention layers (batch 1)."""
        return self.layers * self.model.kv_values_per_token_layer() * self.bytes_per_value

    def decode_cached_tokens(self) -> int:
        """Tokens a decoder keeps K/V for: the whole sequence, or a sliding-window model's window."""
        if self.model.attention == "sliding" and self.model.sliding_window:
            return min(self.seq_len, self.model.sliding_window)
        return self.seq_len

    def kv_cache_bytes(self) -> int:
        """K/V of the whole sequence: T × L × (values per token per layer) × bytes × batch."""
        return self.batch * self.seq_len * self.kv_bytes_per_token()

    def decode_cache_bytes(self) -> int:
        """The cache a decoder keeps: :meth:`kv_cache_bytes` capped at the window for SWA (a rolling buffer)."""
        return self.batch * self.decode_cached_tokens() * self.kv_bytes_per_token()

    def state_bytes(self) -> int:
        """Fixed-size SSM state of a hybrid stack's non-attention layers (per sequence × batch)."""
        m = self.model
        if m.attention != "hybrid":
            return 0
        return self.batch * (m.layers - m.n_attention_layers) * m.ssm_state_elems_per_layer * self.bytes_per_value

    def shard_bytes(self, tokens: int) -> int:
        """Bytes of one attention layer's K/V (or MLA latent) for ``tokens`` tokens: one ring message."""
        return self.shard_values(tokens) * self.bytes_per_value

    def shard_values(self, tokens: int) -> int:
        """Values of one attention layer's K/V (or MLA latent) for ``tokens`` tokens."""
        return self.batch * tokens * self.model.kv_values_per_token_layer()

    def grad_shard_bytes(self, tokens: int) -> int:
        """Bytes of the dK/dV (or latent gradient) of ``tokens`` tokens, in fp32: one backward message."""
        return self.shard_values(tokens) * GRAD_BYTES_PER_VALUE

    def flops_per_pair(self, phase: str = "fwd") -> float:
        """FLOPs per allowed pair for one attention layer, all heads, whole batch: forward
        2·H·(d_qk + d_v) (4·H·d_head for standard attention), backward × :data:`BWD_FLOPS_FACTOR`."""
        f = self.batch * self.model.flops_per_pair_layer()
        return f * BWD_FLOPS_FACTOR if phase == "bwd" else f

    def default_mask(self) -> str:
        """The model's own mask (:meth:`ModelSpec.default_mask`)."""
        return self.model.default_mask()

    def describe(self) -> dict:
        m = self.model
        return {
            "model": m.name, "layers": m.layers, "attention_layers": self.layers, "heads": m.heads,
            "kv_heads": m.kv_heads, "head_dim": m.head_dim, "v_head_dim": m.v_dim, "attention": m.attention,
            "seq_len": self.seq_len, "batch": self.batch, "dtype": self.dtype,
        }
