"""Single-GPU attention-kernel timings for the block shapes and masks a ring uses (calibration data).

    python benchmarks/gpu_kernel_timings.py [--world-sizes 2,4,8] [--seq-lens 32K,128K] \
        [--heads 32 --kv-heads 8 --head-dim 128] [--dtype bf16] [--output traces/gpu-<name>.json]

For every (world size G, sequence length T, schedule) it takes the distinct blocks of one causal
ring from the plan (ringsim.runtime.kernels.block_plan on the plan's token positions: the trimmed
rows × columns and whether the block is full, causal or masked) and times, with CUDA events, the
forward and backward of the CUDA SDPA kernels on that shape:

- ``flash``: ``aten._scaled_dot_product_flash_attention`` (+ ``_backward``), fp16/bf16 only;
- ``efficient``: ``aten._scaled_dot_product_efficient_attention`` (+ ``_backward``), any dtype.

Each timing is the median of ``--iters`` runs after ``--warmup`` runs. ``masked`` blocks (sliding
windows) are timed with the efficient kernel and a boolean bias. Output: one JSON document with
the device, torch/CUDA versions and one row per (kernel, block): ``rows, cols, kind, pairs,
fwd_s, bwd_s, fwd_tflops, bwd_tflops`` — the shapes a calibrated cost model needs.

``--slice-steps`` times instead what ringsim's ring-flash-attn model charges a ``slice_overhead``
for (``ringsim.strategies.ring.SLICE_OVERHEAD``, fitted to the development set without a GPU): for
each distinct forward call on a row slice of a rank's queries (stripe: rows 1…N−1 against keys
0…N−2, causal; zigzag: the second half of the queries against all keys), a ring-flash-attn step —
the call on the slice views plus the fp32 merge into the slice and its write-back, as
gpu-attention-kernels.md §3 describes them — against the same call on fresh tensors of the slice's
shape with a plain merge. ``slice_overhead = (sliced − plain) / call``; the rows go to the same JSON
(``"what": "slice steps"``). The call is flash-attn's when the package is installed, else torch's
flash SDPA.

Without CUDA the script refuses (exit 2) and records nothing: CPU numbers are not GPU numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys


def _parse_list(text, what):
    from ringsim.units import parse_int_list

    return parse_int_list(text, what)


def distinct_blocks(schedule: str, G: int, T: int, mask: str):
    """The ring's distinct (rows, cols, kind) blocks with their pair counts and multiplicity."""
    from ringsim.runtime.kernels import block_plan
    from ringsim.schedules import Plan

    plan = Plan(schedule, G, T, mask)
    lo, hi = plan.mask.bounds(T)
    seen = {}
    for r in range(G):
        for s in range(G):
            bp = block_plan(plan.tokens(r), plan.tokens(plan.shard_owner(r, s)), lo, hi)
            if bp.kind == "empty":
                continue
            key = (bp.r1 - bp.r0, bp.c1 - bp.c0, bp.kind, bp.pairs)
            seen.setdefault(key, [0, bp])[0] += 1
    return [(k, n, bp) for k, (n, bp) in seen.items()]


def time_block(torch, kernel, rows, cols, kind, mask, heads, kv_heads, head_dim, dtype, warmup, iters):
    dev = torch.device("cuda")
    q = torch.randn(1, heads, rows, head_dim, device=dev, dtype=dtype)
    k = torch.randn(1, heads, cols, head_dim, device=dev, dtype=dtype)  # GQA expanded: kernels take H heads
    v = torch.randn(1, heads, cols, head_dim, device=dev, dtype=dtype)
    causal = kind == "causal"
    scale = head_dim ** -0.5
    bias = None
    if kind == "masked":
        if kernel == "flash":
            return None
        m = torch.as_tensor(mask, device=dev)
        bias = torch.zeros(rows, cols, device=dev, dtype=dtype).masked_fill(~m, float("-inf"))
        bias = bias.expand(1, heads, rows, cols)
    aten = torch.ops.aten

    if kernel == "flash":
        def fwd():
            return aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)

        res = fwd()
        do = torch.randn_like(res[0])

        def bwd():
            return aten._scaled_dot_product_flash_attention_backward(
                do, q, k, v, res[0], res[1], res[2], res[3], res[4], res[5], 0.0, causal, res[6], res[7],
                scale=scale)
    else:
        def fwd():
            return aten._scaled_dot_product_efficient_attention(q, k, v, bias, True, 0.0, causal, scale=scale)

        res = fwd()
        do = torch.randn_like(res[0])

        def bwd():
            return aten._scaled_dot_product_efficient_attention_backward(
                do, q, k, v, bias, res[0], res[1], res[2], res[3], 0.0, [True, True, True, False], causal,
                scale=scale)

    timed = _cuda_timer(torch, warmup, iters)
    return timed(fwd), timed(bwd)


def rfa_merge(out, lse, block_out, block_lse):
    """ring-flash-attn's merge as the project reference (§3) states it: fp32 output and LSE, the
    block's output cast to fp32, ``out − sigmoid(blse − lse)·(out − bout)``, ``lse − logsigmoid(lse −
    blse)``; ``out`` is (batch, rows, heads, d), ``lse`` (batch, rows, heads, 1), ``block_lse``
    (batch, heads, rows)."""
    import torch.nn.functional as F

    block_out = block_out.float()
    block_lse = block_lse.transpose(-2, -1).unsqueeze(-1)
    return out - F.sigmoid(block_lse - lse) * (out - block_out), lse - F.logsigmoid(lse - block_lse)


def attention_call(torch, q, k, v, causal: bool):
    """(out, lse) of one forward call on (batch, rows, heads, d) views: flash-attn's own forward when
    installed (it reads strided views as ring-flash-attn hands them), else SDPA on transposed views
    (flash on CUDA, the math kernel elsewhere); K/V heads are expanded to the query heads."""
    try:
        from flash_attn.flash_attn_interface import _flash_attn_forward
    except ImportError:
        _flash_attn_forward = None
    scale = q.shape[-1] ** -0.5
    if _flash_attn_forward is not None and q.is_cuda:
        try:  # flash-attn >= 2.7 splits the window; older releases take a pair
            res = _flash_attn_forward(q, k, v, 0.0, scale, causal=causal, window_size_left=-1, window_size_right=-1,
                                      softcap=0.0, alibi_slopes=None, return_softmax=False)
        except TypeError:
            res = _flash_attn_forward(q, k, v, 0.0, scale, causal=causal, window_size=(-1, -1), softcap=0.0,
                                      alibi_slopes=None, return_softmax=False)
        return res[0], (res[5] if len(res) == 8 else res[1])
    g = q.shape[2] // k.shape[2]
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k.repeat_interleave(g, dim=2), v.repeat_interleave(g, dim=2)))
    if q.is_cuda:
        o, lse = torch.ops.aten._scaled_dot_product_flash_attention(qt, kt, vt, 0.0, causal, False, scale=scale)[:2]
        return o.transpose(1, 2), lse
    s_ = (qt.float() @ kt.float().transpose(-2, -1)) * scale
    if causal:
        n, m = s_.shape[-2:]
        s_ = s_.masked_fill(torch.ones(n, m, dtype=torch.bool).triu(m - n + 1), float("-inf"))
    lse = torch.logsumexp(s_, dim=-1)
    return (torch.softmax(s_, dim=-1) @ vt.float()).to(q.dtype).transpose(1, 2), lse


def slice_steps(N: int):
    """The forward calls on a row slice of a rank's N queries in ring-flash-attn: (schedule,
    q_start, rows, k_start, k_rows, causal)."""
    return [("striped", 1, N - 1, 0, N - 1, True), ("zigzag", N // 2, N - N // 2, 0, N, False)]


def time_slice_step(torch, timer, N, heads, kv_heads, head_dim, dtype, device, q_start, rows, k_start, k_rows,
                    causal):
    """Seconds of (plain call, plain step, sliced step) for one sliced call shape, by ``timer(fn)``:
    the call on fresh tensors of the slice's shape, that call plus a plain merge, and the call on
    the slice views of an N-row shard plus the merge into ``out[:, q_start:]`` with its write-back."""
    q = torch.randn(1, N, heads, head_dim, device=device, dtype=dtype)
    kv = torch.randn(1, N, 2, kv_heads, head_dim, device=device, dtype=dtype)
    k, v = kv[:, :, 0].contiguous(), kv[:, :, 1].contiguous()
    out = torch.randn(1, N, heads, head_dim, device=device, dtype=torch.float32)
    lse = torch.randn(1, heads, N, device=device, dtype=torch.float32).transpose(1, 2).unsqueeze(-1)
    qs, ks, vs = (x.clone() for x in (q[:, q_start:q_start + rows], k[:, k_start:k_start + k_rows],
                                      v[:, k_start:k_start + k_rows]))
    out_s, lse_s = out[:, q_start:q_start + rows].clone(), lse[:, q_start:q_start + rows].clone()

    def call():
        return attention_call(torch, qs, ks, vs, causal)

    def plain():
        bo, bl = attention_call(torch, qs, ks, vs, causal)
        return rfa_merge(out_s, lse_s, bo, bl)

    def sliced():
        bo, bl = attention_call(torch, q[:, q_start:q_start + rows], k[:, k_start:k_start + k_rows],
                                v[:, k_start:k_start + k_rows], causal)
        sl = (slice(None), slice(q_start, q_start + rows))
        o, l_ = rfa_merge(out[sl], lse[sl], bo, bl)
        out[sl], lse[sl] = o, l_

    return timer(call), timer(plain), timer(sliced)


def _cuda_timer(torch, warmup, iters):
    def timed(fn):
        for _ in range(warmup):
            fn()
        ts = []
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            ts.append(a.elapsed_time(b) * 1e-3)
        return statistics.median(ts)
    return timed


def _slice_rows(torch, a, dtype, points, schedules) -> list:
    """--slice-steps: one row per (G, T, sliced call of a schedule) with its plain and sliced steps."""
    timer = _cuda_timer(torch, a.warmup, a.iters)
    rows = []
    for G, T in points:
        N = T // G
        for sched, q0, nq, k0, nk, causal in slice_steps(N):
            if sched not in schedules:
                continue
            t_call, t_plain, t_sliced = time_slice_step(torch, timer, N, a.heads, a.kv_heads, a.head_dim, dtype,
                                                        "cuda", q0, nq, k0, nk, causal)
            rows.append({"schedule": sched, "world_size": G, "seq_len": T, "q_start": q0, "rows": nq,
                         "k_start": k0, "cols": nk, "causal": causal, "call_s": t_call, "plain_step_s": t_plain,
                         "sliced_step_s": t_sliced, "slice_overhead": (t_sliced - t_plain) / t_call})
            print(f"{sched:8s} G={G} T={T} {nq}x{nk}: call {t_call * 1e3:.3f} ms, plain step "
                  f"{t_plain * 1e3:.3f} ms, sliced step {t_sliced * 1e3:.3f} ms: slice_overhead "
                  f"{rows[-1]['slice_overhead']:.3f}", file=sys.stderr)
    return rows


def _block_rows(torch, a, dtype, points, schedules, kernels) -> list:
    """One row per (kernel, G, T, schedule, distinct block) with its forward and backward times."""
    rows = []
    for G, T in points:
        for sched in schedules:
            for (nr, nc, kind, pairs), count, bp in distinct_blocks(sched, G, T, a.mask):
                for kernel in kernels:
                    try:
                        t = time_block(torch, kernel, nr, nc, kind, bp.mask, a.heads, a.kv_heads, a.head_dim,
                                       dtype, a.warmup, a.iters)
                    except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
                        print(f"skip {kernel} {nr}x{nc} {kind}: {str(e).splitlines()[0]}", file=sys.stderr)
                        torch.cuda.empty_cache()
                        continue
                    if t is None:
                        continue
                    flops = 4.0 * a.heads * a.head_dim * pairs
                    rows.append({"kernel": kernel, "world_size": G, "seq_len": T, "schedule": sched,
                                 "rows": nr, "cols": nc, "kind": kind, "pairs": int(pairs),
                                 "blocks_in_ring": count, "fwd_s": t[0], "bwd_s": t[1],
                                 "fwd_tflops": flops / t[0] / 1e12, "bwd_tflops": 2.5 * flops / t[1] / 1e12})
                    print(f"{kernel:9s} G={G} T={T} {sched:10s} {nr}x{nc} {kind:7s} "
                          f"fwd {t[0] * 1e3:.3f} ms bwd {t[1] * 1e3:.3f} ms", file=sys.stderr)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world-sizes", default="2,4,8")
    ap.add_argument("--seq-lens", default="32K,128K")
    ap.add_argument("--schedules", default="contiguous,striped,zigzag")
    ap.add_argument("--mask", default="causal")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    ap.add_argument("--kernels", default="flash,efficient")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--slice-steps", action="store_true",
                    help="time ring-flash-attn's sliced steps against plain ones (the slice_overhead)")
    ap.add_argument("--output", default=None, help="JSON path [traces/gpu-kernels_<gpu>.json]")
    a = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu_kernel_timings: torch is not installed; pip install 'ringsim[torch]'", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("gpu_kernel_timings: no CUDA device here; this script only records GPU kernel timings "
              "and writes nothing without one", file=sys.stderr)
        return 2
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    kernels = [k.strip() for k in a.kernels.split(",") if k.strip()]
    if dtype == torch.float32 and "flash" in kernels:
        kernels.remove("flash")  # flash needs fp16/bf16
    gpu = torch.cuda.get_device_name(0)
    schedules = [x.strip() for x in a.schedules.split(",") if x.strip()]
    points = [(G, T) for G in _parse_list(a.world_sizes, "world sizes")
              for T in _parse_list(a.seq_lens, "sequence lengths")]
    if a.slice_steps:
        rows = _slice_rows(torch, a, dtype, points, schedules)
    else:
        rows = _block_rows(torch, a, dtype, points, schedules, kernels)
    what = "slice steps" if a.slice_steps else "single-GPU SDPA kernel timings per ring block shape"
    doc = {"source": "measured", "what": what,
           "gpu_model": gpu, "host": socket.gethostname(), "torch_version": torch.__version__,
           "cuda_version": torch.version.cuda, "dtype": a.dtype, "mask": a.mask,
           "heads": a.heads, "kv_heads": a.kv_heads, "head_dim": a.head_dim,
           "timing": f"median of {a.iters} CUDA-event timings after {a.warmup} warm-ups",
           "flops": "fwd 4*H*d*pairs, bwd 2.5x fwd", "rows": rows}
    out = a.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "traces",
                                   "gpu-kernels_" + "".join(c if c.isalnum() else "-" for c in gpu.lower()) + ".json")
    from ringsim.units import write_atomic

    write_atomic(out, json.dumps(doc, indent=1))
    print(f"wrote {out} ({len(rows)} rows)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
