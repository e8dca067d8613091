"""Measure a kernel profile on this machine (``ringsim profile-kernels``); needs torch.

Times one fused attention call per grid point, forward and backward, and writes the
:mod:`ringsim.kernelprofile` format:

- **CPU** (``cpu-sdpa``): the kernel the runtime uses for full and causal blocks,
  ``aten._scaled_dot_product_flash_attention_for_cpu`` and its ``_backward`` (called directly,
  as :mod:`ringsim.runtime.kernels` does), timed with ``time.perf_counter``.
- **CUDA**: torch's SDPA restricted to one backend with ``torch.nn.attention.sdpa_kernel`` —
  ``flash`` (FlashAttention-2 inside torch), ``cudnn`` or ``efficient`` — or the ``flash-attn``
  package's ``flash_attn_func`` when it is installed; backward through autograd
  (``torch.autograd.grad`` on the SDPA output, which runs the backend's backward kernel), timed
  with CUDA events.

The grid: square calls S × S for every size, full and causal (these become the profile's knots),
plus full rectangles f·S × S and S × f·S for every fraction f (``role: reference`` points: the
model predicts them from the squares and its occupancy term, whose ``wave_tail`` is fitted to
them). Causal rectangles are not timed: the torch kernels' alignment for q ≠ k differs between
backends. The grid runs in ``repeats`` rounds (each shape once per round, after ``warmup`` untimed
calls), and a point keeps the minimum (default: other processes only ever add time) or the median
of its rounds. FLOPs count the exact pairs (S(S+1)/2 for a causal square;
``flop_convention: exact-pairs``).
"""
from __future__ import annotations

import datetime
import math
import os
import platform
import socket
import statistics
import time

import numpy as np

from .kernelprofile import FORMAT, KernelProfile, causal_pairs, profile_from_doc
from .units import InputError

__all__ = ["KERNELS", "measure_profile", "grid_shapes", "fit_wave_tail", "cpu_model"]

KERNELS = ("auto", "cpu-sdpa", "flash", "cudnn", "efficient", "flash-attn")
_FAMILY = {"cpu-sdpa": "cpu-sdpa", "flash": "fa2", "cudnn": "cudnn", "efficient": "sdpa-efficient",
           "flash-attn": "fa2"}
_OP = {"cpu-sdpa": "aten._scaled_dot_product_flash_attention_for_cpu (+ _backward)",
       "flash": "torch SDPA, SDPBackend.FLASH_ATTENTION (backward via autograd)",
       "cudnn": "torch SDPA, SDPBackend.CUDNN_ATTENTION (backward via autograd)",
       "efficient": "torch SDPA, SDPBackend.EFFICIENT_ATTENTION (backward via autograd)",
       "flash-attn": "flash_attn.flash_attn_func (backward via autograd)"}
_DTYPES = ("fp32", "bf16", "fp16")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def grid_shapes(sizes, rect_fractions) -> list[tuple[int, int, bool]]:
    """(q_rows, k_rows, causal) of the grid: squares full and causal, then full rectangles."""
    shapes = []
    for S in sorted(set(sizes)):
        shapes += [(S, S, False), (S, S, True)]
    for S in sorted(set(sizes)):
        for f in rect_fractions:
            r = max(1, int(round(f * S)))
            if r != S:
                for shape in ((r, S, False), (S, r, False)):
                    if shape not in shapes:
                        shapes.append(shape)
    return shapes


def fit_wave_tail(profile: KernelProfile, upper: float = 4.0, step: float = 0.02):
    """The ``wave_tail`` (0…upper) that best predicts the profile's reference points (least squares in
    log throughput) and the max |error| there; ``(None, None)`` without reference points."""
    refs = [p for p in profile.points if p.role == "reference"]
    if not refs:
        return None, None
    measured = np.array([p.tflops for p in refs])
    best = None
    for i in range(int(round(upper / step)) + 1):
        c = round(i * step, 6)
        errs = np.log(profile.with_model(wave_tail=c).predict_tflops_many(refs) / measured)
        sse = float(np.sum(errs ** 2))
        if best is None or sse < best[0] - 1e-15:
            best = (sse, c, float(np.max(np.abs(np.expm1(errs)))))
    return best[1], best[2]


def _resolve(torch, device: str, kernel: str, dtype: str):
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is visible to torch here; use --device cpu (or auto)")
    if kernel == "auto":
        kernel = "cpu-sdpa" if device == "cpu" else "flash"
    if device == "cpu" and kernel != "cpu-sdpa":
        raise InputError(f"--kernel {kernel} needs CUDA; on CPU the kernel is cpu-sdpa (the runtime's CPU kernel)")
    if device == "cuda" and kernel == "cpu-sdpa":
        raise InputError("--kernel cpu-sdpa runs on CPU; use --device cpu, or flash/cudnn/efficient/flash-attn on CUDA")
    if kernel == "flash-attn":
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            raise InputError("--kernel flash-attn: the flash-attn package is not installed here; "
                             "pip install flash-attn, or use --kernel flash (torch's FlashAttention-2)") from None
    if dtype == "auto":
        dtype = "fp32" if device == "cpu" else "bf16"
    if dtype not in _DTYPES:
        raise InputError(f"--dtype {dtype!r}: use one of auto, {', '.join(_DTYPES)}")
    if kernel in ("flash", "cudnn", "flash-attn") and dtype == "fp32":
        raise InputError(f"--kernel {kernel} runs in fp16/bf16 only; give --dtype bf16 "
                         f"(or --kernel efficient for fp32)")
    return device, kernel, dtype


def _cpu_timer(fn, warmup):
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _cuda_timer(torch, min_sample_s: float = 2e-3, max_calls: int = 100):
    """Seconds per call from CUDA events around back-to-back calls (enough calls for ~2 ms, so the
    host's launch overhead hides behind the queued kernels of short calls)."""

    def elapsed(fn, calls):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        a.record()
        for _ in range(calls):
            fn()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) * 1e-3 / calls

    def timer(fn, warmup):
        for _ in range(warmup):
            fn()
        one = elapsed(fn, 1)
        calls = int(min(max_calls, max(1, math.ceil(min_sample_s / max(one, 1e-9)))))
        return one if calls == 1 else elapsed(fn, calls)

    return timer


def _time_point(torch, device, kernel, tdtype, q_rows, k_rows, causal, heads, head_dim, batch, warmup):
    """(forward seconds, backward seconds) of one timed call of this shape, after ``warmup`` untimed ones."""
    dev = torch.device(device)
    scale = head_dim ** -0.5
    shape_q, shape_k = (batch, heads, q_rows, head_dim), (batch, heads, k_rows, head_dim)
    q = torch.randn(shape_q, device=dev, dtype=tdtype)
    k = torch.randn(shape_k, device=dev, dtype=tdtype)
    v = torch.randn(shape_k, device=dev, dtype=tdtype)
    if kernel == "cpu-sdpa":
        aten = torch.ops.aten
        out, lse = aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)
        dout = torch.randn_like(out)
        t_f = _cpu_timer(lambda: aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale),
                         warmup)
        t_b = _cpu_timer(lambda: aten._scaled_dot_product_flash_attention_for_cpu_backward(
            dout, q, k, v, out, lse, 0.0, causal, scale=scale), warmup)
        return t_f, t_b
    timer = _cuda_timer(torch)
    if kernel == "flash-attn":
        from flash_attn import flash_attn_func

        qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))  # (batch, rows, heads, d)

        def run(a, b_, c):
            return flash_attn_func(a, b_, c, causal=causal, softmax_scale=scale)

        with torch.no_grad():
            t_f = timer(lambda: run(qt, kt, vt), warmup)
        qg, kg, vg = (x.detach().requires_grad_() for x in (qt, kt, vt))
        out = run(qg, kg, vg)
        dout = torch.randn_like(out)
        t_b = timer(lambda: torch.autograd.grad(out, (qg, kg, vg), dout, retain_graph=True), warmup)
        return t_f, t_b
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION}[kernel]
    sdpa = torch.nn.functional.scaled_dot_product_attention
    with sdpa_kernel(backend):
        with torch.no_grad():
            t_f = timer(lambda: sdpa(q, k, v, is_causal=causal, scale=scale), warmup)
        qg, kg, vg = (x.detach().requires_grad_() for x in (q, k, v))
        out = sdpa(qg, kg, vg, is_causal=causal, scale=scale)
        dout = torch.randn_like(out)
        t_b = timer(lambda: torch.autograd.grad(out, (qg, kg, vg), dout, retain_graph=True), warmup)
    return t_f, t_b


def _batch(tokens, batch, q_rows, k_rows):
    return max(1, tokens // max(q_rows, k_rows)) if tokens else batch


def measure_profile(*, sizes, rect_fractions=(0.5,), heads=4, head_dims=(64,), batch=1, tokens=None,
                    device="auto", kernel="auto", dtype="auto", repeats=5, warmup=1, statistic="min",
                    threads=None, name=None, seed=0, command=None, on_point=None) -> KernelProfile:
    """Time the grid and return the measured, validated :class:`KernelProfile`.

    ``tokens``: when given, each size S runs ``max(1, tokens // S)`` sequences (the FA benchmarks'
    batch × seqlen = 16K convention) instead of ``batch``. The grid runs ``repeats`` rounds, each
    shape once per round after ``warmup`` untimed calls; a point's time is the ``statistic`` (min or
    median) of its rounds. ``on_point(done, total, label)`` is called after every timed call (a
    progress bar)."""
    try:
        import torch
    except ImportError:
        raise InputError("profile-kernels needs torch; pip install 'ringsim[torch]' (torch==2.13.0 on this "
                         "project's machines)") from None
    for what, v, lo in (("--heads", heads, 1), ("--batch", batch, 1), ("--repeats", repeats, 1),
                        ("--warmup", warmup, 0)):
        if v is None or v < lo:
            raise InputError(f"{what} must be an integer ≥ {lo}, got {v}")
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be ≥ 1, got {threads}")
    if tokens is not None and tokens < 1:
        raise InputError(f"--tokens must be ≥ 1, got {tokens}")
    if statistic not in ("min", "median"):
        raise InputError(f"--statistic {statistic!r}: use min or median")
    if not sizes:
        raise InputError("--sizes is empty; give square sizes such as 256,512,1024")
    for f in rect_fractions:
        if not 0 < f <= 1:
            raise InputError(f"--rect fraction {f} is not in (0, 1]; e.g. 0.5 for half-height and half-width blocks")
    if not head_dims or any(d < 1 for d in head_dims):
        raise InputError(f"--head-dims must be positive integers, got {head_dims}")
    device, kernel, dtype = _resolve(torch, device, kernel, dtype)
    tdtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    shapes = grid_shapes(sizes, rect_fractions)
    runs = [(d, shape) for d in head_dims for shape in shapes]
    total = len(runs) * repeats
    alignment = "top-left"  # torch SDPA's is_causal; only square causal calls are timed, where both agree
    samples = {run: ([], []) for run in runs}
    done = 0
    try:
        # round-robin: every shape once per round, so a burst of load from other processes hits one
        # sample of many shapes rather than every sample of one
        for _ in range(repeats):
            for d, (q_rows, k_rows, causal) in runs:
                b = _batch(tokens, batch, q_rows, k_rows)
                try:
                    t_f, t_b = _time_point(torch, device, kernel, tdtype, q_rows, k_rows, causal, heads, d, b, warmup)
                except (RuntimeError, MemoryError) as e:
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                    raise InputError(f"{kernel} failed on {q_rows}x{k_rows} {'causal' if causal else 'full'} "
                                     f"(heads {heads}, head_dim {d}, batch {b}, {dtype}): {first}; try smaller "
                                     f"--sizes/--heads, another --dtype or --kernel") from None
                samples[(d, (q_rows, k_rows, causal))][0].append(t_f)
                samples[(d, (q_rows, k_rows, causal))][1].append(t_b)
                done += 1
                if on_point:
                    on_point(done, total, f"{q_rows}x{k_rows} {'causal' if causal else 'full'} d{d} "
                                          f"fwd {t_f * 1e3:.2f} ms bwd {t_b * 1e3:.2f} ms")
        used_threads = torch.get_num_threads()
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)
    pick = min if statistic == "min" else statistics.median
    points = []
    for d, (q_rows, k_rows, causal) in runs:
        b = _batch(tokens, batch, q_rows, k_rows)
        pairs = int(causal_pairs(q_rows, k_rows, alignment)) if causal else q_rows * k_rows
        role = "knot" if q_rows == k_rows else "reference"
        for phase, ts, factor in (("fwd", samples[(d, (q_rows, k_rows, causal))][0], 1.0),
                                  ("bwd", samples[(d, (q_rows, k_rows, causal))][1], 2.5)):
            flops = factor * 4.0 * b * heads * d * pairs
            p = {"phase": phase, "causal": causal, "head_dim": d, "q_rows": q_rows, "k_rows": k_rows,
                 "heads": heads, "batch": b, "tflops": float(f"{flops / pick(ts) / 1e12:.6g}"), "source": "measured"}
            if causal:
                p["pairs"] = pairs
            if role != "knot":
                p["role"] = role
            points.append(p)

    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        dev = {"name": torch.cuda.get_device_name(0), "sm_count": int(props.multi_processor_count)}
        model = {"tile_rows": 128, "parallel": {"fwd": "queries", "bwd": "keys"}}
    else:
        dev = {"name": cpu_model(), "threads": int(used_threads)}
        # torch's CPU flash kernel: forward splits work over batch × heads × query blocks (256 rows from
        # 768 query rows up; 64 or 32 below), backward over batch × heads only
        model = {"tile_rows": 256, "parallel": {"fwd": "queries", "bwd": "heads"}}
    model["head_dim_exponent"] = 0.5
    measured = {
        "host": socket.gethostname(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(), "python": platform.python_version(), "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or 0, "threads": int(used_threads), "torch_version": str(torch.__version__),
        "device": device, "dtype": dtype, "op": _OP[kernel], "repeats": repeats, "warmup": warmup,
        "timing": (f"{statistic} of {repeats} rounds over the grid (each shape once per round after {warmup} "
                   "untimed calls), timed with " + ("CUDA events around enough back-to-back calls for ~2 ms"
                                                    if device == "cuda" else "time.perf_counter")),
        "grid": (f"sizes {','.join(map(str, sorted(set(sizes))))}; rect fractions "
                 f"{','.join(f'{f:g}' for f in rect_fractions) or 'none'}; heads {heads}; head dims "
                 f"{','.join(map(str, head_dims))}; " + (f"tokens {tokens}" if tokens else f"batch {batch}")),
    }
    if device == "cuda":
        measured.update({"gpu": torch.cuda.get_device_name(0), "cuda_version": str(torch.version.cuda)})
        if torch.backends.cudnn.version():
            measured["cudnn_version"] = str(torch.backends.cudnn.version())
    if command:
        measured["command"] = command
    doc = {
        "format": FORMAT,
        "name": name or f"{device}-{kernel}",
        "description": f"{kernel} attention measured by ringsim profile-kernels on {dev['name']}",
        "device": dev,
        "kernel": {"family": _FAMILY[kernel], "dtype": dtype, "causal_alignment": alignment, "op": _OP[kernel]},
        "model": model,
        "sources": {"measured": {"cite": f"measured by ringsim profile-kernels on {measured['host']} "
                                         f"({measured['date']}); see measured:",
                                 "flop_convention": "exact-pairs"}},
        "measured": measured,
        "points": points,
    }
    profile = profile_from_doc(doc, "measured profile")
    c, err = fit_wave_tail(profile)
    if c is not None:
        nref = sum(p.role == "reference" for p in profile.points)
        profile = profile.with_model(
            wave_tail=c, wave_tail_source=f"fitted to this profile's {nref} rectangular (role: reference) points: "
                                          f"max error {100 * err:.1f} %")
        profile.measured["fit"] = f"wave_tail {c:g}: rectangles within {100 * err:.1f} %"
    return profile
