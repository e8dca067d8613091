"""Instrumentation overhead of `ringsim run`: instrumented vs uninstrumented iterations, one run.

    python benchmarks/bench_runtime_overhead.py [--world-size 2] [--seq-len 4096] [--pairs 8] [--phase fwd+bwd]

Both variants run in the same process group, interleaved (ringsim.runtime.bench.overhead_worker);
per iteration the slowest rank's time counts. Prints the median of each and their ratio, and the
median of the per-pair ratios (robust to drift). Prints JSON with --json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics

from ringsim.runtime.bench import overhead_worker
from ringsim.runtime.launch import run_world


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world-size", type=int, default=2)
    ap.add_argument("--schedule", default="zigzag")
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--phase", default="fwd+bwd")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    threads = max(1, (os.cpu_count() or 1) // a.world_size)
    cfg = dict(schedule=a.schedule, seq_len=a.seq_len, heads=a.heads, head_dim=a.head_dim, phase=a.phase,
               threads_per_rank=threads)
    res = run_world(overhead_worker, (cfg, a.pairs, a.warmup), a.world_size, timeout_s=600, threads=threads)
    inst = [max(r["instrumented_s"][i] for r in res) for i in range(a.pairs)]
    plain = [max(r["plain_s"][i] for r in res) for i in range(a.pairs)]
    ratios = [x / y for x, y in zip(inst, plain)]
    doc = {"config": cfg, "world_size": a.world_size, "pairs": a.pairs,
           "median_instrumented_s": statistics.median(inst), "median_plain_s": statistics.median(plain),
           "ratio_of_medians": statistics.median(inst) / statistics.median(plain),
           "median_pair_ratio": statistics.median(ratios),
           "rows_per_iteration_per_rank": res[0]["rows_recorded"] // (a.pairs + a.warmup)}
    if a.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"{a.schedule} G={a.world_size} T={a.seq_len} {a.phase}, {a.pairs} interleaved pairs")
        print(f"instrumented: median {doc['median_instrumented_s'] * 1e3:.2f} ms; "
              f"uninstrumented: median {doc['median_plain_s'] * 1e3:.2f} ms")
        print(f"overhead: ratio of medians {doc['ratio_of_medians']:.4f}, median per-pair ratio "
              f"{doc['median_pair_ratio']:.4f} ({doc['rows_per_iteration_per_rank']} rows per iteration per rank)")


if __name__ == "__main__":
    main()
