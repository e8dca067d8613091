"""How fast the ring simulators run: simulated rank-steps per second.

A rank-step is one rank doing one ring step (a 1024-rank forward ring is 1024 × 1024 rank-steps).
Cases, each at 64, 256 and 1024 ranks (``--quick``: 64 and 256, DES only at 64):

- ``fast``           the exact fast path on a contention-free ring (every GPU on one switch),
                     end to end: the ring's program, cost model, recurrence, makespan (the Timeline's rows are built
                     lazily, on first use, so a sweep that reads only makespans never pays for them);
- ``fast + rows``    the same, plus building the Timeline's DataFrame (4 rows per rank-step);
- ``fast (core)``    the recurrence alone (``run_fast`` on a built program with its compute times, no Timeline);
- ``des``            the simpy DES on the same contention-free ring, end to end (rows lazy);
- ``des contended``  the DES where hops share links: nodes of 8 GPUs behind one uplink each, ranks
                     striped over nodes so all 8 GPUs of a node send to the next node at once
                     (each uplink carries 8 flows shared max-min fairly); ``des`` is what
                     ``engine="des"`` runs (the compiled core where built), ``des (Python)`` the
                     Python DES (``RINGSIM_PURE_PYTHON=1``).

Each figure is the best of repeated runs (at least three, and up to 256 ranks as many as fit in
a second): on a shared machine other jobs only ever add time. ``--runs N`` repeats the whole
benchmark and reports the lowest–highest of those bests.

``--fast-scaling`` instead records how the fast path's cost per rank-step grows with ranks, from 64 to
16,384: a ring program built directly (rank r sends its 4,096-token K/V shard to r+1 at every step and
computes one full 4,096 × 4,096 block), ``min(G, 1024)`` steps of it — a whole 16,384-rank ring would be
268M messages, ~15 GB of flat arrays, more than this machine holds — run by the fast path end to end
(``simulate_program``) and by its recurrence alone.

Run: ``python benchmarks/bench_engines.py [--quick] [--sizes 64,256] [--runs 3] [--fast-scaling]``.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time

from ringsim.costs import CostContext, RooflineCost
from ringsim.engines import Knobs, simulate_program
from ringsim.engines.fast import run_fast
from ringsim.schedules import Plan
from ringsim.strategies import build_ring
from ringsim.topology import Device, Link, Topology
from ringsim.workload import Workload, get_model

H100 = Device("h100", 989e12, 0.5, 80e9)
TOKENS_PER_RANK = 4096


def switch_ring(G: int) -> Topology:
    """G GPUs on one NVSwitch-like switch (450 GB/s, 1 µs per direction): no two hops share a link."""
    links = []
    for i in range(G):
        links.append(Link(len(links), f"g{i}", "sw", 450e9, 1e-6, "nvlink"))
        links.append(Link(len(links), "sw", f"g{i}", 450e9, 1e-6, "nvlink"))
    return Topology(f"switch-{G}", H100, [f"g{i}" for i in range(G)], links)


def striped_nodes(G: int, per_node: int = 8) -> Topology:
    """G/8 nodes; in a node GPUs hang off a switch (450 GB/s), each node switch has one 50 GB/s
    uplink to an IB switch. Rank r sits on node r mod N, so every hop crosses two uplinks that
    carry all 8 of that node's hops at once."""
    n_nodes = max(G // per_node, 2)
    links = []

    def cable(a, b, bw, lat, cls):
        links.append(Link(len(links), a, b, bw, lat, cls))
        links.append(Link(len(links), b, a, bw, lat, cls))

    gpus = []
    for n in range(n_nodes):
        for k in range(G // n_nodes):
            cable(f"n{n}g{k}", f"nsw{n}", 450e9, 1e-6, "nvlink")
        cable(f"nsw{n}", "ib", 50e9, 2e-6, "ib")
    for r in range(G):
        gpus.append(f"n{r % n_nodes}g{r // n_nodes}")
    return Topology(f"striped-{G}", H100, gpus, links)


def workload(G: int):
    T = TOKENS_PER_RANK * G
    return Plan("zigzag", G, T, "causal"), Workload(get_model("llama3-8b"), T)


def timed(fn, min_time_s: float = 0.0, min_reps: int = 1):
    """Best of repeated runs: at least ``min_reps``, and more until ``min_time_s`` has passed;
    returns seconds. The best is the least disturbed run (other jobs only ever add time)."""
    best = float("inf")
    t_start = time.perf_counter()
    reps = 0
    while True:
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        reps += 1
        if reps >= min_reps and time.perf_counter() - t_start >= min_time_s:
            return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes only (seconds, not minutes)")
    ap.add_argument("--sizes", default=None, help="comma-separated rank counts (default 64,256,1024)")
    ap.add_argument("--runs", type=int, default=1,
                    help="run the whole benchmark this many times and report the lowest–highest rate per "
                         "cell (this machine's speed drifts between runs; the README's table is --runs 3)")
    ap.add_argument("--fast-scaling", action="store_true",
                    help="the fast path's cost per rank-step from 64 to 16,384 ranks (see the module docstring)")
    args = ap.parse_args(argv)
    if args.fast_scaling:
        return fast_scaling([int(x) for x in (args.sizes or "64,256,1024,4096,16384").split(",")])
    if args.runs > 1:
        tables = [bench(args) for _ in range(args.runs)]
        print()
        print(f"rank-steps/s, lowest–highest of {args.runs} runs")
        print("| engine | case | ranks | rank-steps/s |")
        print("|---|---|---:|---:|")
        for i, (engine, case, G, n, _, _) in enumerate(tables[0]):
            rates = [t[i][5] for t in tables]
            print(f"| {engine} | {case} | {G} | {min(rates):,.0f}–{max(rates):,.0f} |")
        return
    rows = bench(args)
    print()
    print("| engine | case | ranks | rank-steps | seconds | rank-steps/s |")
    print("|---|---|---:|---:|---:|---:|")
    for engine, case, G, n, secs, rate in rows:
        print(f"| {engine} | {case} | {G} | {n:,} | {secs:.4f} | {rate:,.0f} |")


def synthetic_ring(G: int, steps: int):
    """``steps`` steps of a ring of G ranks as a program built directly (no plan): every rank sends
    its K/V shard of TOKENS_PER_RANK tokens (llama3-8b) to r+1 and computes one full block."""
    import numpy as np

    from ringsim.blocks import BlockPlan, CallShapes
    from ringsim.program import KernelOp, Messages, Program, Stage

    n = TOKENS_PER_RANK
    wl = Workload(get_model("llama3-8b"), n * G)
    shapes = CallShapes([BlockPlan("full", 0, n, 0, n, n * n)])
    ranks = np.arange(G, dtype=np.int64)
    kv = Messages(ranks[None, :], ((ranks + 1) % G)[None, :], np.array([[float(wl.shard_bytes(n))]]), (("kv",),))
    op = KernelOp("fwd", shapes, np.zeros((steps, G), dtype=np.int64))
    return Program(G, [Stage("fwd", 0, steps, (op,), (kv,), "ring")], strategy="synthetic",
                   meta={"layout": "synthetic", "seq_len": n * G, "phase": "fwd", "tokens_per_rank": n}), wl


def fast_scaling(sizes: list[int]) -> None:
    rows = []
    for G in sizes:
        steps = min(G, 1024)
        prog, wl = synthetic_ring(G, steps)
        topo = switch_ring(G)
        comp = RooflineCost().step_seconds(CostContext(prog, wl, topo))
        prog.flat
        n = G * steps
        e2e = timed(lambda: simulate_program(prog, wl, topo, engine="fast"), 0.0, 3)
        core = timed(lambda: run_fast(prog.flat, comp, topo, Knobs()), 0.0, 3)
        rows.append((G, steps, n, e2e, core))
        print(f"  G={G:6d} steps={steps:5d}  e2e {e2e:8.3f} s {n / e2e:14,.0f}/s  core {core:8.3f} s {n / core:14,.0f}/s",
              file=sys.stderr)
    print()
    print("| ranks | steps | rank-steps | end to end: rank-steps/s | ns per rank-step | recurrence only: rank-steps/s "
          "| ns per rank-step |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for G, steps, n, e2e, core in rows:
        print(f"| {G:,} | {steps:,} | {n:,} | {n / e2e:,.0f} | {1e9 * e2e / n:.0f} | {n / core:,.0f} | {1e9 * core / n:.0f} |")


def pure_python(sim, topo):
    """The DES without its compiled core (ringsim.engines.des.ProgramDES), for comparison."""
    import os

    old = os.environ.get("RINGSIM_PURE_PYTHON")
    os.environ["RINGSIM_PURE_PYTHON"] = "1"
    try:
        return sim(topo, "des")
    finally:
        if old is None:
            del os.environ["RINGSIM_PURE_PYTHON"]
        else:
            os.environ["RINGSIM_PURE_PYTHON"] = old


def bench(args) -> list[tuple]:
    """One pass over every case; rows (engine, case, ranks, rank-steps, seconds, rank-steps/s)."""
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else ([64, 256] if args.quick else [64, 256, 1024])
    des_limit = 64 if args.quick else max(sizes)
    rows = []
    for G in sizes:
        plan, wl = workload(G)
        plan.pairs, plan.call_shapes  # the exact work and call tables are computed once per plan; not part of any engine
        topo = switch_ring(G)
        rank_steps = G * G
        sim = lambda t, engine: simulate_program(build_ring(plan, wl, "fwd"), wl, t, engine=engine)
        cases = [("fast", "contention-free", lambda: sim(topo, "fast")),
                 ("fast + rows", "contention-free", lambda: len(sim(topo, "fast").timeline.df))]
        program = build_ring(plan, wl, "fwd")
        comp = RooflineCost().step_seconds(CostContext(program, wl, topo))
        program.flat  # built once, like the problem of the engines before programs
        cases.append(("fast (core)", "contention-free", lambda: run_fast(program.flat, comp, topo, Knobs())))
        if G <= des_limit:
            cases.append(("des", "contention-free", lambda: sim(topo, "des")))
            contended = striped_nodes(G)
            assert contended.ring_shares_links(G)
            cases.append(("des", "contended (8 flows/uplink)", lambda: sim(contended, "des")))
            cases.append(("des (Python)", "contended (8 flows/uplink)", lambda: pure_python(sim, contended)))
        for engine, case, fn in cases:
            # best of three runs at least, and of as many as fit in a second up to 256 ranks
            secs = timed(fn, min_time_s=1.0 if G <= 256 else 0.0, min_reps=3)
            rows.append((engine, case, G, rank_steps, secs, rank_steps / secs))
            print(f"  {engine:12s} {case:28s} G={G:5d}  {secs:9.4f} s  {rank_steps / secs:14,.0f} rank-steps/s",
                  file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
