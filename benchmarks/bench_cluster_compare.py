"""The cluster-scale what-if, end to end: a 1024-GPU, 1M-token, fwd+bwd comparison of contiguous
and zigzag on the 128-node preset (dgx-h100-128n), exactly as a user types it.

It runs the CLI in-process (`ringsim compare ... --format json`) and reports the wall time of the
whole command (loading the topology, planning 1024² blocks, simulating both schedules with the
engine `auto` picks, building every timeline row, metrics and critical path).

Run: ``python benchmarks/bench_cluster_compare.py``. Target (issue 14): under 5 s on 2 cores (issue 6: 30 s).
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
import time

from ringsim.cli import main


def run(argv: list[str]) -> tuple[float, dict]:
    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        try:
            main(argv)
        except SystemExit as e:
            if e.code:
                raise RuntimeError(f"ringsim {' '.join(argv)} exited {e.code}")
    return time.perf_counter() - t0, json.loads(out.getvalue())


def main_() -> None:
    argv = ["compare", "--topology", "dgx-h100-128n", "--model", "llama3-8b", "--seq-len", "1M",
            "--phase", "fwd+bwd", "--schedules", "contiguous,zigzag", "--format", "json"]
    wall, doc = run(argv)
    print(f"ringsim {' '.join(argv)}")
    for r in doc["results"]:
        print(f"  {r['schedule']:>10}: makespan {r['makespan_s']:.4g} s, engine {r['engine']}, "
              f"speedup vs contiguous {r.get('speedup_vs_contiguous', float('nan')):.3f}, "
              f"critical path {r['critical_path']['holder']}")
    print(f"  wall time: {wall:.1f} s (target < 5 s)")
    sys.stdout.flush()


if __name__ == "__main__":
    main_()
