"""ringsim's contended DES against SimGrid's C++ API on the same contended ring, in one sitting.

The ring is ``bench_engines``' contended case: G ranks striped over G/8 nodes, every node behind one
50 GB/s uplink, so each uplink carries the 8 hops of its node at once (max-min shared); zigzag,
llama3-8b, 4,096 tokens per rank, forward, roofline compute. SimGrid replays exactly that program
(``benchmarks/simgrid/ring_s4u.cpp``: one actor per rank on S4U, a mailbox per hop, put/get posted
at the step's start, sleep for the compute, wait for both) with its max-min model configured like
ringsim's: CM02 without the TCP window bound, cross-traffic or correction factors (``SIMGRID_CFG``).

1. **Same times first.** Every rank's every step end from SimGrid must equal ringsim's to 1e-9
   (relative); the benchmark stops if not.
2. **Speed.** For each size both are timed alternately (interleaved, best of ``--reps``): ringsim's
   ``simulate_program`` end to end from the built program (cost model, engine, makespan; rows lazy)
   and SimGrid's platform building + simulation (its own clock, without reading the input file). The
   ratio is SimGrid's seconds over ringsim's: above 1, ringsim is faster.

SimGrid is built on the fly when installed (``pkg-config simgrid``: Debian's ``libsimgrid-dev``) into
``benchmarks/simgrid/build/`` (ignored by git); without it the SimGrid columns are skipped.

Run: ``python benchmarks/bench_simgrid.py [--sizes 64,256,1024] [--reps 5] [--engine des]``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_engines import striped_nodes, timed, workload  # noqa: E402

from ringsim.costs import CostContext, RooflineCost  # noqa: E402
from ringsim.engines import Knobs, simulate_program  # noqa: E402
from ringsim.strategies import build_ring  # noqa: E402

SRC = HERE / "simgrid" / "ring_s4u.cpp"
BUILD = HERE / "simgrid" / "build"
SIMGRID_CFG = ["--cfg=network/model:CM02", "--cfg=network/TCP-gamma:0", "--cfg=network/crosstraffic:0",
               "--cfg=network/latency-factor:1", "--cfg=network/bandwidth-factor:1", "--cfg=network/weight-S:0",
               "--log=root.thres:critical"]


def build_simgrid() -> Path | None:
    """Compile ring_s4u.cpp against the installed SimGrid; None when SimGrid (or g++) is missing."""
    if not shutil.which("pkg-config") or not shutil.which("g++"):
        return None
    probe = subprocess.run(["pkg-config", "--cflags", "--libs", "simgrid"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None
    BUILD.mkdir(parents=True, exist_ok=True)
    exe = BUILD / "ring_s4u"
    if not exe.exists() or exe.stat().st_mtime < SRC.stat().st_mtime:
        cmd = ["g++", "-O2", "-std=c++17", str(SRC), "-o", str(exe)] + probe.stdout.split()
        subprocess.run(cmd, check=True)
    return exe


def program_file(flat, compute, topo, path: Path) -> None:
    """Write the program in ring_s4u's input format (see the C++ file's header)."""
    assert flat.wait_after_zero and not flat.send_end.any() and not flat.recv_end.any()
    lines = [str(len(topo.links))]
    lines += [f"{l.bandwidth_Bps!r} {l.latency_s!r}" for l in topo.links]
    routes = [topo.route(int(a), int(b)) for a, b in zip(flat.hop_src, flat.hop_dst)]
    lines.append(str(len(routes)))
    lines += [f"{int(a)} {int(b)} {len(rt)} " + " ".join(map(str, rt))
              for a, b, rt in zip(flat.hop_src, flat.hop_dst, routes)]
    lines.append(f"{flat.world_size} {flat.N}")
    lines += [" ".join(repr(float(x)) for x in row) for row in compute]
    for n in range(flat.N):
        a, b = int(flat.step_msgs[n]), int(flat.step_msgs[n + 1])
        lines.append(str(b - a))
        lines += [f"{int(flat.hop[m])} {int(flat.bytes[m])}" for m in range(a, b)]
    path.write_text("\n".join(lines) + "\n")


def run_simgrid(exe: Path, prog: Path, times: Path | None = None) -> tuple[float, float]:
    args = [str(exe), str(prog)] + ([str(times)] if times else []) + SIMGRID_CFG
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    vals = dict(zip(out[::2], out[1::2]))
    return float(vals["wall_s"]), float(vals["makespan_s"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,256,1024")
    ap.add_argument("--reps", type=int, default=5, help="interleaved repetitions per size (best of)")
    ap.add_argument("--engine", default="des", help="ringsim engine (des; reference only at small sizes)")
    args = ap.parse_args(argv)
    exe = build_simgrid()
    if exe is None:
        print("SimGrid not found (pkg-config simgrid); install libsimgrid-dev to compare. ringsim only.",
              file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for G in [int(x) for x in args.sizes.split(",")]:
            plan, wl = workload(G)
            plan.pairs, plan.call_shapes
            topo = striped_nodes(G)
            program = build_ring(plan, wl, "fwd")
            flat = program.flat
            compute = RooflineCost().step_seconds(CostContext(program, wl, topo))
            res = simulate_program(program, wl, topo, engine=args.engine)
            rank_steps = G * flat.N
            sg_best = float("nan")
            if exe is not None:
                prog_path, times_path = Path(tmp) / f"ring{G}.txt", Path(tmp) / f"times{G}.txt"
                program_file(flat, compute, topo, prog_path)
                run_simgrid(exe, prog_path, times_path)
                sg = np.loadtxt(times_path).reshape(flat.N, G)
                ours = res.arrays.step_start_s[1:]
                err = float(np.max(np.abs(sg - ours) / np.maximum(np.abs(ours), 1e-300)))
                if err > 1e-9:
                    sys.exit(f"G={G}: SimGrid and ringsim disagree (max relative difference {err:.3g}); not timing")
                print(f"  G={G}: SimGrid and ringsim agree on all {sg.size} step ends (max rel. diff {err:.2g})",
                      file=sys.stderr)
            rs_best = float("inf")
            sg_best = float("inf") if exe is not None else float("nan")
            for _ in range(args.reps):  # interleaved: both see the same machine load
                rs_best = min(rs_best, timed(lambda: simulate_program(build_ring(plan, wl, "fwd"), wl, topo,
                                                                      engine=args.engine), 0.0, 1))
                if exe is not None:
                    sg_best = min(sg_best, run_simgrid(exe, prog_path)[0])
            ratio = sg_best / rs_best if exe is not None else float("nan")
            rows.append((G, rank_steps, rs_best, sg_best, ratio))
            print(f"  G={G:5d}: ringsim {args.engine} {rs_best:.4f} s ({rank_steps / rs_best:,.0f} rank-steps/s), "
                  f"SimGrid C++ {sg_best:.4f} s, ratio {ratio:.2f}", file=sys.stderr)
    print()
    print(f"contended ring (8 flows per uplink), best of {args.reps} interleaved runs, {time.strftime('%Y-%m-%d')}")
    print("| ranks | rank-steps | ringsim des s | rank-steps/s | SimGrid C++ s | SimGrid / ringsim |")
    print("|---:|---:|---:|---:|---:|---:|")
    for G, n, a, b, r in rows:
        print(f"| {G} | {n:,} | {a:.4f} | {n / a:,.0f} | {b:.4f} | {r:.2f}× |")


if __name__ == "__main__":
    main()
