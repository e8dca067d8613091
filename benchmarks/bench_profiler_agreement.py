"""How closely the two forms of one profiled run agree (issue 17): `ringsim run --profile` writes
torch.profiler (Kineto) traces beside ringsim's own timeline; `calibrate` + `validate` from each
form give a makespan error, and this prints |difference| per layout × phase over several rounds.

    python benchmarks/bench_profiler_agreement.py --world-sizes 2 4 --rounds 3 --seq-len 4096 --head-dim 64

Every round runs the six configurations (contiguous / striped / zigzag × fwd / fwd+bwd) in one
process group per world size, profiled, then calibrates and validates each form of each run on
its own (a one-run calibration, as a user checking one run would)."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile


def _cli(args):
    from ringsim.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            main(args)
        except SystemExit as e:
            if e.code not in (0, None):
                raise RuntimeError(f"ringsim {' '.join(args)} exited {e.code}")
    return buf.getvalue()


def round_(G, dims, repeat, root):
    from ringsim.kineto import import_kineto
    from ringsim.runtime.conformance import runs_worker
    from ringsim.runtime.launch import run_world
    from ringsim.runtime.runner import RunConfig, assemble

    cfgs, dirs = [], []
    for sched in ("contiguous", "striped", "zigzag"):
        for phase in ("fwd", "fwd+bwd"):
            d = os.path.join(root, f"G{G}-{sched}-{phase.replace('+', '')}")
            os.makedirs(d)
            dirs.append(d)
            cfgs.append(dict(schedule=sched, phase=phase, repeat=repeat, warmup=1, timeout_s=120.0, profile=d, **dims))
    results = run_world(runs_worker, (cfgs,), G, timeout_s=120.0, threads=1)
    rows = []
    for i, (c, d) in enumerate(zip(cfgs, dirs)):
        cfg = RunConfig(world_size=G, **c).validate()
        own, _ = assemble(cfg, [res[i] for res in results], "gloo", "cpu")
        own.write(os.path.join(d, "ringsim.json"))
        det = {}
        import_kineto([d], details=det)
        errs = {}
        for form, src in (("ringsim", os.path.join(d, "ringsim.json")), ("profiler", d)):
            calib = os.path.join(d, f"calib-{form}.json")
            _cli(["calibrate", src, "-o", calib])
            errs[form] = json.loads(_cli(["validate", src, "--calibration", calib, "--format", "json"]))["makespan_error"]
        rows.append((c["schedule"], c["phase"], errs["ringsim"], errs["profiler"], len(det["problems"])))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world-sizes", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=64)
    a = ap.parse_args()
    dims = dict(seq_len=a.seq_len, heads=a.heads, kv_heads=a.kv_heads, head_dim=a.head_dim)
    print(f"T={a.seq_len} heads={a.heads}/{a.kv_heads} d={a.head_dim}, {a.repeat} timed iterations per run")
    for G in a.world_sizes:
        diffs = []
        for r in range(a.rounds):
            with tempfile.TemporaryDirectory(prefix="ringsim-agree-") as root:
                for sched, phase, ea, eb, probs in round_(G, dims, a.repeat, root):
                    d = abs(ea - eb) * 100
                    diffs.append(d)
                    print(f"G={G} round {r}: {sched:10s} {phase:7s} {ea * 100:+7.2f}% -> {eb * 100:+7.2f}%  "
                          f"|diff| {d:5.2f} pp  problems {probs}", flush=True)
        over = sum(d > 2 for d in diffs)
        print(f"G={G}: {len(diffs)} configurations, median |diff| {statistics.median(diffs):.2f} pp, "
              f"max {max(diffs):.2f} pp, over 2 pp: {over}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
