"""Kernel profiles: a device's attention-kernel throughput as a function of the call's shape.

A *kernel profile* answers "how long does one fused attention call of q_rows × k_rows take on this
device with this kernel family?" for forward and backward, causal and full masks, any head dim,
heads and batch. It is built from tabulated throughputs (published kernel benchmarks, or points
measured by ``ringsim profile-kernels``) and interpolates between them with a small physical
model. DESIGN.md §3.5 describes where profiles sit; the shipped ones live in ``ringsim.profiles``.

The model
---------
Fused attention kernels (FlashAttention-2/3, cuDNN, torch's CPU flash kernel) share one
structure. The call is cut into *work units* that run in parallel — forward: one unit per tile of
``tile_rows`` query rows per (batch, head); backward (FA2, FA3, cuDNN): one unit per tile of key
rows, each looping over the queries — and each unit runs a *loop* over the other dimension
(forward: key rows; backward: query rows). Two effects set the achieved throughput:

1. **Loop length** ``L`` (forward ``k_rows``, backward ``q_rows``). A unit pays a fixed prologue
   and epilogue (load its Q tile, rescale and write O, or the dK/dV equivalents) and then a cost
   per key tile, so efficiency rises with ``L`` and saturates. The square tables (q = k = S) at the
   benchmark configuration measure exactly this curve, separately for each mask kind, phase and
   head dim: a causal square wastes half of each diagonal tile and has a short average loop, which
   is why causal runs up to ~40 % below full at 512 rows and a few % at 16K. Between measured
   sizes the throughput is interpolated **linearly in log L** (piecewise linear between knots, so
   monotone wherever the data is). Above the largest measured ``L`` it is held at the last
   measured value (never more than measured). Below the smallest it follows the
   prologue-amortisation form
   ``T(L) = T(L0) · g(L)/g(L0)`` with ``g(L) = L/(L + L_half)``, ``L_half`` chosen so the slope
   at ``L0`` matches the slope between the two smallest knots (clamped to 0.2–0.95, so shorter
   loops always lose throughput, and faster towards the fixed-cost limit).

2. **Occupancy / wave quantisation.** ``P = ceil(parallel_rows / tile_rows) · heads · batch``
   units run on ``slots`` = SMs (GPU) or threads (CPU). With ``w = P / slots`` waves the
   fraction of the machine kept busy is modelled as ``occ(P) = w / (w + wave_tail)``: the last,
   partly filled wave and the ramp-up cost about ``wave_tail`` waves however many waves run. This
   is what makes short query blocks slow in the forward pass: cuDNN's rectangular prefill sweep on
   an A100 (2048 … 256 query rows × 8192 keys, 64 heads) loses 44 % from 2048 to 256 rows while
   every unit still runs an 8192-key loop; ``wave_tail ≈ 1.2`` reproduces it within 1.5 %. Each
   knot was measured at its own ``P_i`` (the benchmark's heads × batch), so a call's throughput at
   a knot is ``T_i · min(1, occ(P)/occ(P_i))`` — scaled down when the call has less parallelism
   than the benchmark, never up (conservative: more units than were measured gain nothing).
   ``model.parallel`` names the dimension cut into units per phase: ``queries`` (forward),
   ``keys`` (FA2/FA3/cuDNN backward) or ``heads`` (torch's CPU backward: one unit per (batch, head)).

A **full** call (``q × k`` allowed pairs) then runs at ``T_full(L, P)``. A **causal** call is a
triangle of side ``m = min(q, k)`` plus (for rectangles) a full part; the triangle costs what the
square causal curve says relative to the full one at the same size, the full part runs at the full
rate:

    t = F(rect_pairs) / T_full(L, P) + F(tri_pairs) / (T_full(L, P) · κ(m, P)),
    κ(m, P) = T_causal(m, P) / T_full(m, P)

which is exact on squares (the tabulated case) and tends to the full rate as the triangle becomes
a sliver (a short query block at the end of a long prefix). Blocks with other masks (sliding
windows) are best costed as ``causal=False`` with their exact ``pairs``: the full rate per pair.
``heads`` are query heads (GQA's fewer KV heads change memory traffic, not FLOPs; the tables'
GQA and MHA figures are used as they are). Head dims between tabulated ones are interpolated
linearly in log d; above the largest they take the largest's value, below the smallest
``T ∝ (d / d_min)^head_dim_exponent`` (default 0.5, steeper than any pair of tabulated head dims
shows, 0.2–0.4).

FLOPs follow the FlashAttention papers: forward ``4 · batch · heads · head_dim · pairs``,
backward 2.5× that, forward+backward 3.5×. ``pairs`` is the exact number of (query, key) pairs the
call computes; by default ``q·k`` (full) or, causal, the count for the profile's
``causal_alignment`` (``bottom-right``: FA2 ≥ 2.1, FA3, cuDNN; ``top-left``: torch SDPA's
``is_causal``), so a causal square of side S computes S(S+1)/2 pairs. Internally every knot is
converted to *exact-pair* FLOP/s: sources that count causal FLOPs as half of full (the FA papers,
``flop_convention: causal-half``) are rescaled by S²/2 → S(S+1)/2, which is what makes the model
reproduce each table in its own convention.

The file format (YAML, ``format: ringsim-kernel-profile/1``)::

    format: ringsim-kernel-profile/1
    name: h100-sxm-fa3
    description: FlashAttention-3 on H100 SXM5
    device: {name: H100 SXM5 80GB, peak_flops: 989 TFLOP/s, sm_count: 132}
    kernel: {family: fa3, dtype: bf16, causal_alignment: bottom-right}
    model: {tile_rows: 128, parallel: {fwd: queries, bwd: keys}, wave_tail: 1.23,
            wave_tail_source: "...", head_dim_exponent: 0.5}
    sources:
      fa3-fig5: {cite: "FlashAttention-3 paper, Fig. 5", flop_convention: causal-half, config: "..."}
    points:
      - {phase: fwd, causal: false, head_dim: 128, q_rows: 512, k_rows: 512, heads: 16, batch: 32,
         tflops: 467, source: fa3-fig5}
      - {..., role: reference}                  # reproduced and checked, not a knot (fwd+bwd rows)
      - {..., derived: "how it was derived"}     # not measured directly
    notes: free text
    measured: {host: ..., torch_version: ...}  # hardware metadata of a measured profile

``tflops`` is TFLOP/s in the point's source convention. Points with ``role: knot`` (the default,
phases fwd or bwd) build the model; ``role: reference`` points (any phase, e.g. a published
fwd+bwd table, or rectangular measurements) are what the profile must reproduce but do not shape
it. Every mistake in a file is an :class:`~ringsim.units.InputError` of one line naming the file,
the key and the fix.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from importlib import resources

import numpy as np
import yaml

from .units import InputError, parse_flops, write_atomic

__all__ = [
    "FORMAT", "FAMILIES", "PHASES", "PHASE_FLOP_FACTOR", "CONVENTIONS", "ALIGNMENTS",
    "KernelPoint", "KernelProfile", "load_profile", "profile_names", "profile_from_doc",
    "causal_pairs", "occupancy", "dump_profile",
]

FORMAT = "ringsim-kernel-profile/1"
FAMILIES = ("fa2", "fa3", "cudnn", "cpu-sdpa", "sdpa-efficient", "other")
PHASES = ("fwd", "bwd", "fwd+bwd")
PHASE_FLOP_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}
CONVENTIONS = ("causal-half", "exact-pairs")
ALIGNMENTS = ("bottom-right", "top-left")
PARALLEL = ("queries", "keys", "heads")
ROLES = ("knot", "reference")

# slope (d log T / d log L) used below the smallest measured loop length, clamped to this range
SLOPE_BELOW_MIN = (0.2, 0.95)
DEFAULT_HEAD_DIM_EXPONENT = 0.5

_TOP_KEYS = ("format", "name", "description", "device", "kernel", "model", "sources", "points", "notes",
             "measured")
_DEVICE_KEYS = ("name", "peak_flops", "sm_count", "threads")
_KERNEL_KEYS = ("family", "dtype", "causal_alignment", "op")
_MODEL_KEYS = ("tile_rows", "parallel", "wave_tail", "wave_tail_source", "head_dim_exponent")
_SOURCE_KEYS = ("cite", "flop_convention", "config")
_POINT_KEYS = ("phase", "causal", "head_dim", "q_rows", "k_rows", "heads", "batch", "tflops", "source", "role",
               "derived", "pairs")
_MEASURED_KEYS = ("host", "date", "platform", "python", "cpu_model", "cpu_count", "threads", "torch_version",
                  "cuda_version", "cudnn_version", "gpu", "device", "dtype", "op", "repeats", "warmup", "timing",
                  "command", "grid", "fit")


# ---- formulas ---------------------------------------------------------------------------------------

def causal_pairs(q_rows, k_rows, alignment: str = "bottom-right"):
    """Exact (query, key) pairs of a causal ``q_rows × k_rows`` call, diagonal included.

    ``bottom-right``: query i sees keys j ≤ i + (k − q) (FA2 ≥ 2.1, FA3, cuDNN); ``top-left``:
    j ≤ i (torch SDPA ``is_causal``). Both give S(S+1)/2 for a square of side S."""
    q = np.asarray(q_rows, dtype=float)
    k = np.asarray(k_rows, dtype=float)
    m = np.minimum(q, k)
    tri = m * (m + 1) / 2
    if alignment == "bottom-right":
        return tri + np.where(q <= k, q * (k - q), 0.0)
    if alignment == "top-left":
        return tri + np.where(q > k, (q - k) * k, 0.0)
    raise ValueError(f"unknown causal alignment {alignment!r}; use one of {', '.join(ALIGNMENTS)}")


def occupancy(units, slots, wave_tail: float):
    """Fraction of the machine a call of ``units`` parallel work units keeps busy:
    ``w / (w + wave_tail)`` with ``w = units / slots`` waves (1 when ``slots`` is unknown or the
    tail is 0)."""
    u = np.asarray(units, dtype=float)
    if not slots or wave_tail <= 0:
        return np.ones_like(u)
    w = u / float(slots)
    return w / (w + wave_tail)


# ---- data classes -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class KernelPoint:
    """One tabulated throughput: ``tflops`` TFLOP/s in its source's FLOP convention."""

    phase: str
    causal: bool
    head_dim: int
    q_rows: int
    k_rows: int
    heads: int
    batch: int
    tflops: float
    source: str
    role: str = "knot"
    derived: str | None = None
    pairs: int | None = None

    def to_doc(self) -> dict:
        d = {"phase": self.phase, "causal": self.causal, "head_dim": self.head_dim, "q_rows": self.q_rows,
             "k_rows": self.k_rows, "heads": self.heads, "batch": self.batch, "tflops": self.tflops,
             "source": self.source}
        if self.role != "knot":
            d["role"] = self.role
        if self.pairs is not None:
            d["pairs"] = self.pairs
        if self.derived:
            d["derived"] = self.derived
        return d


@dataclass
class _Curve:
    """Throughput knots of one (phase, mask, head dim) along the loop length, in exact-pair FLOP/s."""

    log_L: np.ndarray  # (n,) sorted
    T_flops: np.ndarray  # (n,)
    units: np.ndarray  # (n,) parallel units P_i of each knot's benchmark call
    L_half: float  # prologue scale for the extrapolation below the smallest knot

    def evaluate(self, L, units, slots, wave_tail):
        """Throughput (FLOP/s) at loop lengths ``L`` for calls of ``units`` parallel units (arrays, same shape)."""
        L = np.maximum(np.asarray(L, dtype=float), 1.0)
        occ_call = occupancy(units, slots, wave_tail)[..., None]
        occ_knot = occupancy(self.units, slots, wave_tail)
        T = self.T_flops * np.minimum(1.0, occ_call / occ_knot)  # (..., n)
        x = np.log(L)
        n = len(self.log_L)
        if n == 1:
            inside = T[..., 0]
        else:
            j = np.clip(np.searchsorted(self.log_L, x, side="right") - 1, 0, n - 2)
            x0, x1 = self.log_L[j], self.log_L[j + 1]
            f = np.clip((x - x0) / (x1 - x0), 0.0, 1.0)
            t0 = np.take_along_axis(T, j[..., None], axis=-1)[..., 0]
            t1 = np.take_along_axis(T, (j + 1)[..., None], axis=-1)[..., 0]
            inside = t0 + f * (t1 - t0)
        L0 = math.exp(self.log_L[0])
        below = T[..., 0] * (L / (L + self.L_half)) / (L0 / (L0 + self.L_half))
        return np.where(x < self.log_L[0], below, inside)


def _make_curve(L, T, units) -> _Curve:
    order = np.argsort(L)
    L = np.asarray(L, dtype=float)[order]
    T = np.asarray(T, dtype=float)[order]
    units = np.asarray(units, dtype=float)[order]
    if len(L) >= 2:
        slope = math.log(T[1] / T[0]) / math.log(L[1] / L[0])
    else:
        slope = 0.5
    slope = min(max(slope, SLOPE_BELOW_MIN[0]), SLOPE_BELOW_MIN[1])
    # g(L) = L/(L+h) has d log g / d log L = h/(L+h); equal to `slope` at L[0]:
    L_half = slope * L[0] / (1.0 - slope)
    return _Curve(np.log(L), T, units, L_half)


# ---- the profile ------------------------------------------------------------------------------------

@dataclass
class KernelProfile:
    """A validated kernel profile with a vectorised cost model (see the module docstring).

    Build one with :func:`load_profile` (a shipped name or a YAML path) or :func:`profile_from_doc`.
    """

    name: str
    device: dict
    kernel: dict
    model: dict
    sources: dict
    points: list[KernelPoint]
    description: str = ""
    notes: str = ""
    measured: dict = field(default_factory=dict)
    label: str = ""

    def __post_init__(self):
        self._curves = self._build_curves()

    # -- metadata ------------------------------------------------------------------------------------
    @property
    def family(self) -> str:
        return self.kernel["family"]

    @property
    def alignment(self) -> str:
        return self.kernel.get("causal_alignment", "bottom-right")

    @property
    def peak_flops(self) -> float | None:
        p = self.device.get("peak_flops")
        return None if p is None else parse_flops(p)

    @property
    def slots(self) -> int | None:
        """Parallel execution slots: SMs on a GPU, threads on a CPU (None: no occupancy model)."""
        return self.device.get("sm_count") or self.device.get("threads")

    @property
    def tile_rows(self) -> int:
        return int(self.model.get("tile_rows", 128))

    @property
    def wave_tail(self) -> float:
        return float(self.model.get("wave_tail", 0.0))

    @property
    def head_dim_exponent(self) -> float:
        return float(self.model.get("head_dim_exponent", DEFAULT_HEAD_DIM_EXPONENT))

    def parallel(self, phase: str) -> str:
        return self.model.get("parallel", {}).get(phase, "queries" if phase == "fwd" else "keys")

    def head_dims(self, phase: str, causal: bool) -> list[int]:
        """Head dims with knots for this phase and mask."""
        return sorted(self._curves[(phase, bool(causal))])

    # -- shape of a call -----------------------------------------------------------------------------
    def _loop_and_units(self, phase, q, k, heads, batch):
        return _loop_and_units(self.model, phase, q, k, heads, batch)

    def _build_curves(self):
        groups: dict = {}
        for p in self.points:
            if p.role != "knot":
                continue
            L, units = self._loop_and_units(p.phase, float(p.q_rows), float(p.k_rows), p.heads, p.batch)
            T = _exact_flops(self, p) / _point_seconds(self, p)
            groups.setdefault((p.phase, p.causal), {}).setdefault(p.head_dim, []).append((float(L), T, float(units)))
        curves = {}
        for key, by_dim in groups.items():
            curves[key] = {d: _make_curve(*zip(*rows)) for d, rows in by_dim.items()}
        return curves

    def _rate(self, phase, causal, L, units, head_dim):
        """Throughput (exact-pair FLOP/s) of the (phase, mask) curves at loop length L, head dim d."""
        by_dim = self._curves[(phase, causal)]
        dims = sorted(by_dim)
        vals = {d: by_dim[d].evaluate(L, units, self.slots, self.wave_tail) for d in dims}
        d = np.asarray(head_dim, dtype=float)
        lo, hi = dims[0], dims[-1]
        out = np.where(d <= lo, vals[lo] * (np.minimum(d, lo) / lo) ** self.head_dim_exponent, vals[hi])
        for a, b in zip(dims[:-1], dims[1:]):
            f = (np.log(np.clip(d, a, b)) - math.log(a)) / (math.log(b) - math.log(a))
            out = np.where((d > a) & (d <= b), vals[a] + f * (vals[b] - vals[a]), out)
        return out

    # -- the cost model ------------------------------------------------------------------------------
    def pairs(self, q_rows, k_rows, *, causal: bool):
        """Default exact pairs of a call: q·k (full) or the causal count for this profile's alignment."""
        q = np.asarray(q_rows, dtype=float)
        k = np.asarray(k_rows, dtype=float)
        return causal_pairs(q, k, self.alignment) if causal else q * k

    def flops(self, q_rows, k_rows, *, heads, head_dim, causal: bool, phase: str, batch=1, pairs=None):
        """FLOPs of one call: 4·batch·heads·head_dim·pairs, ×2.5 backward, ×3.5 forward+backward."""
        _check_phase(phase)
        pr = self.pairs(q_rows, k_rows, causal=causal) if pairs is None else np.asarray(pairs, dtype=float)
        return PHASE_FLOP_FACTOR[phase] * 4.0 * np.asarray(batch, float) * np.asarray(heads, float) \
            * np.asarray(head_dim, float) * pr

    def seconds(self, q_rows, k_rows, *, heads, head_dim, causal, phase: str, batch=1, pairs=None):
        """Seconds of one kernel call (``phase`` fwd, bwd or fwd+bwd = their sum); arrays broadcast.

        ``pairs`` is the exact number of (query, key) pairs the call computes (default: see
        :meth:`pairs`); ``causal`` may be a bool or a bool array."""
        _check_phase(phase)
        if phase == "fwd+bwd":
            kw = dict(heads=heads, head_dim=head_dim, causal=causal, batch=batch, pairs=pairs)
            return self.seconds(q_rows, k_rows, phase="fwd", **kw) + self.seconds(q_rows, k_rows, phase="bwd", **kw)
        q, k, h, d, b, c = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in
                                                 (q_rows, k_rows, heads, head_dim, batch, causal)))
        c = c.astype(bool)
        pr = np.where(c, causal_pairs(q, k, self.alignment), q * k) if pairs is None \
            else np.broadcast_to(np.asarray(pairs, dtype=float), q.shape)
        unit_flops = PHASE_FLOP_FACTOR[phase] * 4.0 * b * h * d  # FLOPs per pair
        busy = (unit_flops * pr > 0) & (q > 0) & (k > 0)
        # an empty call costs nothing; evaluate the rates at a harmless shape there
        q, k, h, b, d = (np.where(busy, x, 1.0) for x in (q, k, h, b, d))
        L, units = self._loop_and_units(phase, q, k, h, b)
        rate_full = self._rate(phase, False, L, units, d)
        t = unit_flops * pr / rate_full
        if c.any():
            m = np.minimum(q, k)
            tri = np.minimum(pr, m * (m + 1) / 2)
            rect = np.maximum(pr - tri, 0.0)
            kappa = self._rate(phase, True, m, units, d) / self._rate(phase, False, m, units, d)
            t_causal = unit_flops * (rect + tri / kappa) / rate_full
            t = np.where(c, t_causal, t)
        return np.where(busy, t, 0.0)

    def throughput_flops(self, q_rows, k_rows, *, heads, head_dim, causal, phase: str, batch=1, pairs=None):
        """Achieved FLOP/s of one call (FLOPs of its exact pairs / :meth:`seconds`); 0 for an empty call."""
        c = np.asarray(causal, dtype=bool)
        pr = np.where(c, causal_pairs(q_rows, k_rows, self.alignment), np.multiply(q_rows, k_rows, dtype=float)) \
            if pairs is None else np.asarray(pairs, dtype=float)
        F = self.flops(q_rows, k_rows, heads=heads, head_dim=head_dim, causal=False, phase=phase, batch=batch,
                       pairs=pr)
        t = self.seconds(q_rows, k_rows, heads=heads, head_dim=head_dim, causal=causal, phase=phase, batch=batch,
                         pairs=pr)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(t > 0, F / np.where(t > 0, t, 1.0), 0.0)

    # -- the tables ----------------------------------------------------------------------------------
    def predict_tflops(self, point: KernelPoint, convention: str | None = None) -> float:
        """What the model predicts for a tabulated point, in TFLOP/s of the point's convention
        (``convention`` overrides it: a point measured elsewhere, e.g. with ``exact-pairs``)."""
        t = float(self.seconds(point.q_rows, point.k_rows, heads=point.heads, head_dim=point.head_dim,
                               causal=point.causal, phase=point.phase, batch=point.batch,
                               pairs=_exact_pairs(self, point)))
        return _convention_flops(self, point, convention) / t / 1e12

    def predict_tflops_many(self, points, convention: str | None = None) -> np.ndarray:
        """:meth:`predict_tflops` of many points at once (vectorised per phase)."""
        points = list(points)
        out = np.empty(len(points))
        for phase in PHASES:
            idx = [i for i, p in enumerate(points) if p.phase == phase]
            if not idx:
                continue
            sel = [points[i] for i in idx]
            col = lambda attr: np.array([getattr(p, attr) for p in sel], dtype=float)  # noqa: E731
            t = self.seconds(col("q_rows"), col("k_rows"), heads=col("heads"), head_dim=col("head_dim"),
                             causal=col("causal").astype(bool), phase=phase, batch=col("batch"),
                             pairs=np.array([_exact_pairs(self, p) for p in sel]))
            F = np.array([_convention_flops(self, p, convention) for p in sel])
            out[idx] = F / t / 1e12
        return out

    def check(self) -> list[dict]:
        """Every point with the model's prediction and the relative error (predicted / tabulated − 1)."""
        pred = self.predict_tflops_many(self.points)
        return [{**p.to_doc(), "predicted_tflops": float(v), "error": float(v / p.tflops - 1.0)}
                for p, v in zip(self.points, pred)]

    # -- files ---------------------------------------------------------------------------------------
    def to_doc(self) -> dict:
        doc = {"format": FORMAT, "name": self.name}
        if self.description:
            doc["description"] = self.description
        doc["device"] = dict(self.device)
        doc["kernel"] = dict(self.kernel)
        doc["model"] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.model.items()}
        doc["sources"] = {k: dict(v) for k, v in self.sources.items()}
        if self.notes:
            doc["notes"] = self.notes
        if self.measured:
            doc["measured"] = dict(self.measured)
        doc["points"] = [p.to_doc() for p in self.points]
        return doc

    def to_yaml(self) -> str:
        return dump_profile(self.to_doc())

    def save(self, path) -> None:
        """Write the profile as YAML, atomically."""
        write_atomic(path, self.to_yaml())

    def with_model(self, **changes) -> "KernelProfile":
        """A copy with some ``model`` parameters changed (e.g. a fitted ``wave_tail``)."""
        return replace(self, model={**self.model, **changes})


def _loop_and_units(model: dict, phase: str, q, k, heads, batch):
    """Loop length L and parallel work units P of a call (see the module docstring)."""
    par = model.get("parallel", {}).get(phase, "queries" if phase == "fwd" else "keys")
    if par == "queries":
        L, rows = k, q
    elif par == "keys":
        L, rows = q, k
    else:  # heads: one unit per (batch, head), looping over everything
        L, rows = (k if phase == "fwd" else q), None
    tiles = 1.0 if rows is None else np.ceil(np.maximum(rows, 1.0) / int(model.get("tile_rows", 128)))
    return L, tiles * heads * batch


def _check_phase(phase):
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")


def _exact_pairs(profile: KernelProfile, p: KernelPoint) -> float:
    if p.pairs is not None:
        return float(p.pairs)
    return float(profile.pairs(p.q_rows, p.k_rows, causal=p.causal))


def _convention_pairs(profile: KernelProfile, p: KernelPoint, convention: str | None = None) -> float:
    convention = convention or profile.sources[p.source]["flop_convention"]
    if p.causal and convention == "causal-half":
        return p.q_rows * p.k_rows / 2.0
    return _exact_pairs(profile, p)


def _convention_flops(profile: KernelProfile, p: KernelPoint, convention: str | None = None) -> float:
    return PHASE_FLOP_FACTOR[p.phase] * 4.0 * p.batch * p.heads * p.head_dim * _convention_pairs(profile, p, convention)


def _exact_flops(profile: KernelProfile, p: KernelPoint) -> float:
    return PHASE_FLOP_FACTOR[p.phase] * 4.0 * p.batch * p.heads * p.head_dim * _exact_pairs(profile, p)


def _point_seconds(profile: KernelProfile, p: KernelPoint) -> float:
    """The duration the point stands for: its convention's FLOPs at its tabulated rate."""
    return _convention_flops(profile, p) / (p.tflops * 1e12)


# ---- writing ----------------------------------------------------------------------------------------

def _flow(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**9, sort_keys=False,
                          allow_unicode=True).strip().removesuffix("...").strip()


def dump_profile(doc: dict) -> str:
    """YAML text of a profile document: sections in block style, one point per line."""
    out = []
    for key, value in doc.items():
        if key == "points":
            out.append("points:")
            out += [f"  - {_flow(p)}" for p in value]
        elif key == "sources":
            out.append("sources:")
            for sid, src in value.items():
                out.append(f"  {_flow(sid)}:")
                out += [f"    {k}: {_flow(v)}" for k, v in src.items()]
        elif key == "notes" and isinstance(value, str) and "\n" in value.strip():
            out.append("notes: |")
            out += [("  " + line).rstrip() for line in value.strip().splitlines()]
        elif isinstance(value, dict):
            out.append(f"{key}:")
            out += [f"  {k}: {_flow(v)}" for k, v in value.items()]
        else:
            out.append(f"{key}: {_flow(value)}")
    return "\n".join(out) + "\n"


# ---- loading and validation -------------------------------------------------------------------------

def _err(label: str, key: str, msg: str) -> InputError:
    return InputError(f"{label}: {key}: {msg}")


def _mapping(label, key, value, allowed, required=()):
    if not isinstance(value, dict):
        raise _err(label, key, f"expected a mapping with keys {', '.join(allowed)}, got {type(value).__name__}")
    for k in value:
        if k not in allowed:
            raise _err(label, f"{key}.{k}" if key else str(k), f"unknown key; allowed keys here: {', '.join(allowed)}")
    for k in required:
        if value.get(k) is None:
            raise _err(label, f"{key}.{k}" if key else k, "missing; add it")
    return value


def _string(label, key, value) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool) or str(value).strip() == "":
        raise _err(label, key, f"expected a non-empty string, got {value!r}")
    return str(value)


def _choice(label, key, value, choices) -> str:
    if value not in choices:
        raise _err(label, key, f"{value!r} is not one of {', '.join(choices)}; use one of them")
    return value


def _pos_int(label, key, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value) or value <= 0:
        raise _err(label, key, f"must be a positive integer, got {value!r}")
    return int(value)


def _number(label, key, value, *, allow_zero=False) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _err(label, key, f"{value!r} is not a number; write a plain number such as 1.5") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        what = "a finite number ≥ 0" if allow_zero else "a finite positive number"
        raise _err(label, key, f"must be {what}, got {value!r}")
    return float(value)


def _scalar_meta(label, key, value):
    if isinstance(value, float) and not math.isfinite(value):
        raise _err(label, key, f"must be finite, got {value!r}")
    if not isinstance(value, (str, int, float, bool)):
        raise _err(label, key, f"expected a string or number, got {type(value).__name__}")
    for t in (bool, int, float, str):  # plain types (torch.__version__ is a str subclass)
        if isinstance(value, t):
            return t(value)


def profile_from_doc(doc, label: str = "profile", default_name: str = "profile") -> KernelProfile:
    """Validate a parsed profile document and build the :class:`KernelProfile`."""
    if not isinstance(doc, dict):
        raise InputError(f"{label}: expected a mapping at the top level (format, name, device, kernel, sources, "
                         f"points); see `ringsim profile-kernels` or a shipped profile for an example")
    _mapping(label, "", doc, _TOP_KEYS)
    fmt = doc.get("format")
    if fmt is None:
        raise _err(label, "format", f"missing; add 'format: {FORMAT}' as the first line")
    if fmt != FORMAT:
        raise _err(label, "format", f"unknown version {fmt!r}; this ringsim reads {FORMAT!r} "
                   f"(rewrite the file in that format or upgrade ringsim)")
    name = _string(label, "name", doc.get("name", default_name))
    description = "" if doc.get("description") is None else _string(label, "description", doc["description"])
    notes = "" if doc.get("notes") is None else _string(label, "notes", doc["notes"])

    dev = dict(_mapping(label, "device", doc.get("device"), _DEVICE_KEYS, required=("name",)))
    dev["name"] = _string(label, "device.name", dev["name"])
    if dev.get("peak_flops") is not None:
        try:
            parse_flops(dev["peak_flops"])
        except InputError as e:
            raise _err(label, "device.peak_flops", str(e)) from None
    for k in ("sm_count", "threads"):
        if dev.get(k) is not None:
            dev[k] = _pos_int(label, f"device.{k}", dev[k])
    peak = parse_flops(dev["peak_flops"]) if dev.get("peak_flops") is not None else None

    ker = dict(_mapping(label, "kernel", doc.get("kernel"), _KERNEL_KEYS, required=("family",)))
    _choice(label, "kernel.family", ker["family"], FAMILIES)
    if "causal_alignment" in ker:
        _choice(label, "kernel.causal_alignment", ker["causal_alignment"], ALIGNMENTS)
    for k in ("dtype", "op"):
        if k in ker:
            ker[k] = _string(label, f"kernel.{k}", ker[k])

    model = dict(_mapping(label, "model", doc.get("model", {}) or {}, _MODEL_KEYS))
    if "tile_rows" in model:
        model["tile_rows"] = _pos_int(label, "model.tile_rows", model["tile_rows"])
    if "wave_tail" in model:
        model["wave_tail"] = _number(label, "model.wave_tail", model["wave_tail"], allow_zero=True)
    if "head_dim_exponent" in model:
        model["head_dim_exponent"] = _number(label, "model.head_dim_exponent", model["head_dim_exponent"])
    if "wave_tail_source" in model:
        model["wave_tail_source"] = _string(label, "model.wave_tail_source", model["wave_tail_source"])
    if "parallel" in model:
        par = dict(_mapping(label, "model.parallel", model["parallel"], ("fwd", "bwd")))
        for ph, v in par.items():
            _choice(label, f"model.parallel.{ph}", v, PARALLEL)
        model["parallel"] = par

    srcs = doc.get("sources")
    if not isinstance(srcs, dict) or not srcs:
        raise _err(label, "sources", "missing or empty; add sources: {ID: {cite: ..., flop_convention: "
                   "causal-half|exact-pairs}} and name ID in every point's source")
    sources = {}
    for sid, s in srcs.items():
        key = f"sources.{sid}"
        s = dict(_mapping(label, key, s, _SOURCE_KEYS, required=("cite", "flop_convention")))
        s["cite"] = _string(label, f"{key}.cite", s["cite"])
        _choice(label, f"{key}.flop_convention", s["flop_convention"], CONVENTIONS)
        if s.get("config") is not None:
            s["config"] = _string(label, f"{key}.config", s["config"])
        sources[str(sid)] = s

    measured = {}
    if doc.get("measured") is not None:
        m = _mapping(label, "measured", doc["measured"], _MEASURED_KEYS)
        measured = {k: _scalar_meta(label, f"measured.{k}", v) for k, v in m.items()}

    raw_points = doc.get("points")
    if not isinstance(raw_points, list) or not raw_points:
        raise _err(label, "points", "missing or empty; add a list of points {phase, causal, head_dim, q_rows, "
                   "k_rows, heads, batch, tflops, source}")
    points = [_point(label, f"points[{i}]", p, sources, peak) for i, p in enumerate(raw_points)]

    seen = {}
    for i, p in enumerate(points):
        if p.role != "knot":
            continue
        L, _ = _loop_and_units(model, p.phase, p.q_rows, p.k_rows, p.heads, p.batch)
        key = (p.phase, p.causal, p.head_dim, int(L))
        if key in seen:
            raise _err(label, f"points[{i}]", f"a second knot at {p.phase} {'causal' if p.causal else 'full'} "
                       f"head_dim {p.head_dim} loop length {int(L)} (first: points[{seen[key]}]); "
                       f"mark one 'role: reference'")
        seen[key] = i
    for phase in ("fwd", "bwd"):
        for causal in (False, True):
            if not any(p.role == "knot" and p.phase == phase and p.causal == causal for p in points):
                mask = "causal" if causal else "full"
                raise _err(label, "points", f"no {mask} {phase} knots; the model needs forward and backward, full "
                           f"and causal points (measure them with `ringsim profile-kernels`, or add derived points "
                           f"with a 'derived:' note)")
    return KernelProfile(name=name, device=dev, kernel=ker, model=model, sources=sources, points=points,
                         description=description, notes=notes, measured=measured, label=label)


def _point(label, key, p, sources, peak) -> KernelPoint:
    _mapping(label, key, p, _POINT_KEYS, required=("phase", "causal", "head_dim", "q_rows", "k_rows", "heads",
                                                   "batch", "tflops", "source"))
    phase = _choice(label, f"{key}.phase", p["phase"], PHASES)
    if not isinstance(p["causal"], bool):
        raise _err(label, f"{key}.causal", f"must be true or false, got {p['causal']!r}")
    ints = {k: _pos_int(label, f"{key}.{k}", p[k]) for k in ("head_dim", "q_rows", "k_rows", "heads", "batch")}
    tflops = _number(label, f"{key}.tflops", p["tflops"])
    source = str(p["source"])
    if source not in sources:
        raise _err(label, f"{key}.source", f"{source!r} is not in sources ({', '.join(sources)}); "
                   f"add it under sources: or fix the name")
    role = _choice(label, f"{key}.role", p.get("role", "knot"), ROLES)
    derived = None if p.get("derived") is None else _string(label, f"{key}.derived", p["derived"])
    pairs = None
    if p.get("pairs") is not None:
        pairs = _pos_int(label, f"{key}.pairs", p["pairs"])
        if pairs > ints["q_rows"] * ints["k_rows"]:
            raise _err(label, f"{key}.pairs", f"{pairs} exceeds q_rows × k_rows = {ints['q_rows'] * ints['k_rows']}; "
                       f"give the exact number of (query, key) pairs the call computes")
    if role == "knot":
        if phase == "fwd+bwd":
            raise _err(label, f"{key}.role", "a fwd+bwd point cannot be a knot (the model needs forward and "
                       "backward separately); mark it 'role: reference' and add derived fwd and bwd points")
        if p["causal"] and ints["q_rows"] != ints["k_rows"]:
            raise _err(label, f"{key}.role", "causal knots must be square (q_rows = k_rows); mark rectangular "
                       "causal points 'role: reference'")
    if peak is not None and tflops * 1e12 > peak * 1.0000001:
        raise _err(label, f"{key}.tflops", f"{tflops} TFLOP/s exceeds device.peak_flops ({peak / 1e12:g} TFLOP/s); "
                   f"tflops is in TFLOP/s, check the unit")
    return KernelPoint(phase=phase, causal=p["causal"], tflops=tflops, source=source, role=role, derived=derived,
                       pairs=pairs, **ints)


# ---- shipped profiles -------------------------------------------------------------------------------

def _profile_dir():
    return resources.files("ringsim.profiles")


def profile_names() -> list[str]:
    """Names of the shipped profiles (YAML files in ``ringsim.profiles``), sorted."""
    return sorted(p.name[:-5] for p in _profile_dir().iterdir() if p.name.endswith(".yaml"))


def load_profile(name_or_path) -> KernelProfile:
    """A shipped profile name (``h100-sxm-fa3``) or a path to a YAML file → validated profile."""
    text_name = str(name_or_path)
    names = profile_names()
    stem = text_name[:-5] if text_name.endswith(".yaml") else text_name
    if os.sep not in text_name and "/" not in text_name and stem in names:
        label = f"profile {stem}"
        text = _profile_dir().joinpath(stem + ".yaml").read_text(encoding="utf-8")
    elif os.path.isfile(text_name):
        label = text_name
        try:
            with open(text_name, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{label}: cannot read kernel profile ({e}); check the path and permissions") from None
        stem = os.path.splitext(os.path.basename(text_name))[0]
    else:
        raise InputError(f"kernel profile {text_name!r} is neither a shipped profile nor an existing file; "
                         f"shipped: {', '.join(names)} (or give a path to a YAML file, e.g. from "
                         f"`ringsim profile-kernels -o prof.yaml`)")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"{label}: YAML syntax error{where}: {problem}; fix the YAML syntax") from None
    return profile_from_doc(doc, label, default_name=stem)
