"""Strategy traces validated after calibration at other lengths (issue 13).

The runs (``traces/cpu-gloo-strategies/``, one sitting, 4 interleaved rounds, the least disturbed
kept): gloo on this 2-core host, causal, 4 heads × 64, fp32, 1 warm-up + 7 timed iterations;
``ulysses`` and ``allgather`` at G = 2 and 4, ``usp:2x2`` at G = 4; fwd and fwd+bwd; T = 1024,
2048, 3072, 4096. G = 4 oversubscribes the host (4 single-thread ranks on 2 cores).

``ringsim calibrate`` sees every run except those at the held-out length (all strategies and
world sizes together, as a user calibrating one machine would); ``ringsim validate`` then predicts
the held-out runs. Target: every makespan within 15 %. ``RINGSIM_STRATEGY_TRACES=DIR`` checks
another directory of such runs.

    python benchmarks/bench_strategy_validation.py               # held out: T = 3072 (interpolation)
    python benchmarks/bench_strategy_validation.py --held-out 2048
    python benchmarks/bench_strategy_validation.py --fit 1024,4096 --held-out 3072   # the ring's split
    python benchmarks/bench_strategy_validation.py --measure 4   # re-take the runs (about 7 minutes), then check
    python benchmarks/bench_strategy_validation.py --dir traces/cpu-gloo-strategies-2 --held-out 2048 \
        --profile traces/cpu-gloo-strategies-2/cpu-sdpa-1thread.yaml         # the second sitting

``--measure`` runs ``traces/make_traces.py --schedules ulysses,allgather,usp:2x2``; run it on a
quiet machine, in one sitting.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIR = os.environ.get("RINGSIM_STRATEGY_TRACES") or os.path.join(ROOT, "traces", "cpu-gloo-strategies")
STRATEGIES = "ulysses,allgather,usp:2x2"


def length(path: str) -> int:
    return int(path.rsplit("_T", 1)[1].split(".")[0])


def check(held_out: int, directory: str = DIR, fit_lengths: tuple[int, ...] | None = None,
          profile=None) -> list[dict]:
    """Calibrate on every run not at ``held_out`` tokens (or only on the runs at ``fit_lengths``);
    validate the runs at ``held_out``."""
    from ringsim.calibration import calibrate, load_calibration
    from ringsim.timeline import read_timeline
    from ringsim.validate import validate_timeline

    files = sorted(glob.glob(os.path.join(directory, "cpu-gloo_*.json")))
    fit = [(f, read_timeline(f)) for f in files
           if length(f) != held_out and (fit_lengths is None or length(f) in fit_lengths)]
    if not fit or len(fit) == len(files):
        raise SystemExit(f"no runs at T = {held_out} (or only those) in {directory}")
    doc = calibrate(fit, profile=profile)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "calib.json")
        with open(path, "w") as f:
            json.dump(doc, f)
        cost = load_calibration(path)
    rows = []
    for f in files:
        if length(f) != held_out:
            continue
        tl = read_timeline(f)
        v, _ = validate_timeline(tl, cost, label=os.path.basename(f))
        rows.append({"file": os.path.basename(f), "world_size": tl.meta["world_size"],
                     "strategy": tl.meta.get("strategy") or tl.meta.get("schedule"), "phase": tl.meta["phase"],
                     "measured_s": v["measured_makespan_s"], "predicted_s": v["predicted_makespan_s"],
                     "error": v["makespan_error"]})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--held-out", type=int, default=3072, help="the length calibration does not see (default 3072)")
    ap.add_argument("--dir", default=DIR, help="the runs (default traces/cpu-gloo-strategies)")
    ap.add_argument("--fit", default=None, metavar="T,T",
                    help="calibrate only on these lengths (default: every length but the held-out one)")
    ap.add_argument("--profile", default=None, metavar="PROFILE",
                    help="start the calibration from this kernel profile (calibrate --profile)")
    ap.add_argument("--measure", type=int, default=0, metavar="ROUNDS", help="re-take the runs first")
    a = ap.parse_args()
    if a.measure:
        subprocess.run([sys.executable, os.path.join(ROOT, "traces", "make_traces.py"), "--schedules", STRATEGIES,
                        "--rounds", str(a.measure), "--out", a.dir], check=True)
    fit = tuple(int(t) for t in a.fit.split(",")) if a.fit else None
    prof = None
    if a.profile:
        from ringsim.kernelprofile import load_profile

        prof = load_profile(a.profile)
    rows = check(a.held_out, a.dir, fit_lengths=fit, profile=prof)
    print(f"calibrated on T {'in ' + a.fit if fit else '!= ' + str(a.held_out)}, predicting T = {a.held_out}")
    print("| G | strategy | phase | measured ms | predicted ms | error |")
    print("|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["world_size"], r["strategy"], r["phase"])):
        print(f"| {r['world_size']} | {r['strategy']} | {r['phase']} | {r['measured_s'] * 1e3:.1f} | "
              f"{r['predicted_s'] * 1e3:.1f} | {r['error'] * 100:+.1f} % |")
    n = sum(abs(r["error"]) <= 0.15 for r in rows)
    print(f"\nwithin 15 %: {n} of {len(rows)}; max |error| {max(abs(r['error']) for r in rows) * 100:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
