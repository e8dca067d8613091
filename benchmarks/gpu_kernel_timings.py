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

    return timed(fwd), timed(bwd)


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
    rows = []
    for G in _parse_list(a.world_sizes, "world sizes"):
        for T in _parse_list(a.seq_lens, "sequence lengths"):
            for sched in [s.strip() for s in a.schedules.split(",") if s.strip()]:
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
    doc = {"source": "measured", "what": "single-GPU SDPA kernel timings per ring block shape",
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
