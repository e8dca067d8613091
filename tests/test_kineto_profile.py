"""The same run in both forms: `ringsim run --profile` writes real torch.profiler (Kineto) traces
beside ringsim's own timeline; imported by order and kind onto the program, they must give the
same calibration and validation as ringsim's own trace (issue 17).

Small runs (GQA 4/2 heads; T = 512, d = 32 with 2 timed iterations for the mapping; T = 4096,
d = 64 with 8 for the agreement) on local gloo ranks; G = 4 oversubscribes a 2-core machine, which is fine:
both forms are the SAME run."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from ringsim.kineto import expected_steps, import_kineto, load_trace  # noqa: E402
from ringsim.runtime.conformance import runs_worker  # noqa: E402
from ringsim.runtime.launch import run_world  # noqa: E402
from ringsim.runtime.runner import RunConfig, assemble, program_of  # noqa: E402
from ringsim.timeline import read_timeline  # noqa: E402

pytestmark = pytest.mark.distributed

DIMS = dict(seq_len=512, heads=4, kv_heads=2, head_dim=32)


def _ringsim(args, timeout=120):
    p = subprocess.run([sys.executable, "-c", "from ringsim.cli import main; main()", *args],
                       capture_output=True, text=True, timeout=timeout)
    return p


def _cli(args, capsys):
    from ringsim.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    return out.out


def _strip(src, dst):
    """Copies of the profiler traces without ringsim's step markers and embedded configuration:
    what a run made by other code (ring-flash-attention, …) leaves."""
    os.makedirs(dst)
    for name in sorted(os.listdir(src)):
        if not name.endswith(".pt.trace.json"):
            continue
        data = load_trace(os.path.join(src, name))
        data.pop("ringsim")
        data["traceEvents"] = [e for e in data["traceEvents"] if not str(e.get("name", "")).startswith("ringsim/")]
        with open(os.path.join(dst, name), "w") as f:
            json.dump(data, f)
    return dst


def _rows(tl):
    df = tl.df.sort_values(["rank", "start_s", "kind"]).reset_index(drop=True)
    return df[["rank", "phase", "kind", "step", "start_s", "end_s", "peer", "bytes", "pairs"]].astype(str).values.tolist()


@pytest.mark.timeout(120)
def test_run_profile_contiguous_gqa_maps_every_call_to_its_step(tmp_path, capsys):
    """`ringsim run --profile`: contiguous layout (rank 0 idle at step 1), fwd+bwd, GQA. Every
    attention op and transfer maps onto its program step — the steps ringsim's own trace of the
    run gives them — with and without the runtime's step markers."""
    prof = tmp_path / "prof"
    p = _ringsim(["run", "--world-size", "2", "--schedule", "contiguous", "--phase", "fwd+bwd", "--seq-len", "512",
                  "--heads", "4", "--kv-heads", "2", "--head-dim", "32", "--repeat", "2", "--warmup", "1",
                  "--timeout-s", "60", "--profile", str(prof)])
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(prof)) == ["rank0.pt.trace.json", "rank1.pt.trace.json", "ringsim.json"]
    det = {}
    tl = import_kineto([str(prof)], details=det)
    st = det["stats"]
    assert det["problems"] == [] and st.get("calls_unmapped", 0) == 0 and st.get("transfers_unmapped", 0) == 0
    # per iteration: rank 0 computes fwd/bwd step 0, rank 1 steps 0 and 1: 6 calls, 2 iterations
    assert st["calls_mapped"] == 12 and st["transfers_mapped"] == 2 * 2 * 4 * 2
    assert st["marker_agree"] == st["calls_mapped"] + st["transfers_mapped"] and "marker_disagree" not in st
    assert tl.meta["config_source"].startswith("embedded") and tl.meta["workload"]["kv_heads"] == 2
    # the same steps as ringsim's own trace of the run, call by call
    own = read_timeline(prof / "ringsim.json").df
    for df in (tl.df, own):
        df["key"] = list(zip(df["rank"], df["phase"].astype(str), df["step"], df["pairs"]))
    live = lambda df: sorted(df[(df["kind"] == "compute") & (df["pairs"] > 0)]["key"])
    assert live(tl.df) == live(own)
    empty = lambda df: sorted(df[(df["kind"] == "compute") & (df["pairs"] == 0)]["key"])
    assert empty(tl.df) == empty(own) == [(0, "bwd", 1, 0.0)] * 2 + [(0, "fwd", 1, 0.0)] * 2
    program = program_of(RunConfig(world_size=2, schedule="contiguous", phase="fwd+bwd", **DIMS).validate())
    for r in (0, 1):
        want = [(ph, es.step) for ph, lst in expected_steps(program, r).items() for es in lst for _ in es.active]
        got = tl.df[(tl.df["rank"] == r) & (tl.df["kind"] == "compute") & (tl.df["pairs"] > 0)]
        assert sorted(zip(got["phase"].astype(str), got["step"])) == sorted(want * 2)
    # without markers and embedded metadata (order and kind only), given the configuration instead
    bare = _strip(prof, tmp_path / "bare")
    cfg = {"schedule": "contiguous", "mask": "causal", "dtype": "fp32", "device": "cpu",
           "cpu_cores": tl.meta["cpu_cores"], "threads_per_rank": tl.meta["threads_per_rank"], **DIMS}
    det2 = {}
    tl2 = import_kineto([bare], cfg, details=det2)
    assert det2["problems"] == [] and "marker_agree" not in det2["stats"]
    assert _rows(tl2) == _rows(tl)
    text = _cli(["import-trace", str(prof)], capsys)
    assert "ringsim can validate" in text and "step markers agree 44/44" in text
    _cli(["calibrate", str(prof), "-o", str(tmp_path / "calib.json")], capsys)


# Both forms see the same events but stamp them at different points: the profiler at the ops,
# ringsim run at the Python around them (posts ~9 µs later, completions ~20 µs and merge ends
# ~18 µs earlier in the profiler's form, medians over 60 runs). With calls of a few ms (T = 1024,
# d = 32) that is ~1 % of a block, a bias a one-run calibration on a shared 2-core host amplified
# past 2 points in 3-8 % of configurations. With calls of tens of ms (T = 4096, d = 64: 1 GFLOP per
# G = 4 block) every configuration agrees within 2 points: 96 configurations in one sitting,
# `python benchmarks/bench_profiler_agreement.py --rounds 8` (see the README).
BOUND = 0.02
DIMS_AGREE = dict(seq_len=4096, heads=4, kv_heads=2, head_dim=64)


def _agreement(G, tmp_path, capsys):
    cfgs, dirs = [], []
    for sched in ("contiguous", "striped", "zigzag"):
        for phase in ("fwd", "fwd+bwd"):
            d = tmp_path / f"{sched}-{phase.replace('+', '')}"
            d.mkdir()
            dirs.append(d)
            cfgs.append(dict(schedule=sched, phase=phase, repeat=8, warmup=1, timeout_s=60.0, profile=str(d),
                             **DIMS_AGREE))
    results = run_world(runs_worker, (cfgs,), G, timeout_s=60.0, threads=1)
    report = []
    for i, (c, d) in enumerate(zip(cfgs, dirs)):
        cfg = RunConfig(world_size=G, **c).validate()
        own, _ = assemble(cfg, [res[i] for res in results], "gloo", "cpu")
        own.write(d / "ringsim.json")
        det = {}
        import_kineto([str(d)], details=det)
        assert det["problems"] == [], (c["schedule"], c["phase"], det["problems"][:3])
        assert det["stats"].get("marker_disagree", 0) == 0
        if c["schedule"] == "contiguous":  # idle steps: rank r computes at steps <= r only
            program = program_of(cfg)
            tl = import_kineto([str(d)])
            for r in range(G):
                want = sorted((ph, es.step) for ph, lst in expected_steps(program, r).items() for es in lst for _ in es.active)
                got = tl.df[(tl.df["rank"] == r) & (tl.df["kind"] == "compute") & (tl.df["pairs"] > 0)]
                assert sorted(zip(got["phase"].astype(str), got["step"])) == sorted(want * c["repeat"])
        out = {}
        for form, src in (("ringsim", d / "ringsim.json"), ("profiler", d)):
            calib = d / f"calib-{form}.json"
            _cli(["calibrate", str(src), "-o", str(calib)], capsys)
            out[form] = json.loads(_cli(["validate", str(src), "--calibration", str(calib), "--format", "json"],
                                        capsys))
        a, b = out["ringsim"], out["profiler"]
        report.append((c["schedule"], c["phase"], a["makespan_error"], b["makespan_error"]))
        assert [(s["phase"], s["step"]) for s in a["per_step"]] == [(s["phase"], s["step"]) for s in b["per_step"]]
        assert abs(a["measured_makespan_s"] - b["measured_makespan_s"]) <= 0.02 * a["measured_makespan_s"]
        assert a["iterations"] == b["iterations"] == c["repeat"]
    with capsys.disabled():
        print(f"\nG={G}: makespan error from ringsim's trace -> from the profiler's, per layout and phase:")
        for sched, phase, ea, eb in report:
            print(f"  {sched:10s} {phase:7s} {ea * 100:+6.2f}% -> {eb * 100:+6.2f}%  (|diff| {abs(ea - eb) * 100:.2f} pp)")
    assert max(abs(ea - eb) for _, _, ea, eb in report) <= BOUND, report


@pytest.mark.timeout(240)
@pytest.mark.parametrize("G", [2, 4])
def test_calibrate_and_validate_agree_on_both_forms_of_a_run(G, tmp_path, capsys):
    """For every layout, fwd and fwd+bwd: `calibrate` and `validate` on the profiler traces give
    the makespan error they give on ringsim's own trace of the same run (see the note above):
    within 2 points, with the same per-step structure, the same measured makespan (2 %) and every
    call and transfer mapped onto its step (contiguous: idle steps get none)."""
    _agreement(G, tmp_path, capsys)


@pytest.mark.timeout(120)
def test_other_strategies_map_every_call_and_transfer(tmp_path):
    """All-gather (two calls per step, one of them run as two kernels: a bottom-right causal block
    wider than tall) and Ulysses (all-to-alls, a share of the heads per call): every call and
    transfer maps onto its step, as the step markers confirm."""
    cfgs, dirs = [], []
    for strategy in ("allgather", "ulysses"):
        d = tmp_path / strategy
        d.mkdir()
        dirs.append(d)
        cfgs.append(dict(schedule=strategy, phase="fwd+bwd", repeat=2, warmup=1, timeout_s=60.0, profile=str(d),
                         seq_len=256, heads=4, kv_heads=2, head_dim=16))
    results = run_world(runs_worker, (cfgs,), 2, timeout_s=60.0, threads=1)
    for i, (c, d) in enumerate(zip(cfgs, dirs)):
        cfg = RunConfig(world_size=2, **c).validate()
        own, _ = assemble(cfg, [res[i] for res in results], "gloo", "cpu")
        det = {}
        tl = import_kineto([str(d)], details=det)
        st = det["stats"]
        assert det["problems"] == [] and st["marker_agree"] == st["calls_mapped"] + st["transfers_mapped"], c
        key = lambda df: sorted(zip(df["rank"], df["phase"].astype(str), df["step"], df["pairs"]))
        comp = lambda df: df[(df["kind"] == "compute") & (df["pairs"] > 0)]
        assert key(comp(tl.df)) == key(comp(own.df)), c["schedule"]
        np_flops = lambda df: sorted(comp(df)["flops"].round(3))
        assert np_flops(tl.df) == np_flops(own.df)  # a Ulysses call's FLOPs: its share of the heads
        sends = lambda df: sorted(zip(*(df[df["kind"] == "send"][k] for k in ("rank", "step", "peer", "bytes"))))
        assert sends(tl.df) == sends(own.df), c["schedule"]


@pytest.mark.parametrize("args,needle", [
    (["--profile", "{file}"], "is a file"),
    (["--profile", "{missing}/x"], "does not exist; create it first"),
    (["--profile", "{dir}", "--trace", "{dir}/ringsim.json"], "both name"),
])
def test_run_profile_bad_input_is_one_line_exit_2(args, needle, tmp_path, capsys):
    from ringsim.cli import main

    f = tmp_path / "f.txt"
    f.write_text("x")
    (tmp_path / "prof").mkdir()
    subs = {"file": str(f), "missing": str(tmp_path / "nope"), "dir": str(tmp_path / "prof")}
    with pytest.raises(SystemExit) as e:
        main(["run", "--world-size", "2", "--seq-len", "64", *[a.format(**subs) for a in args]])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and needle in err and len(err.splitlines()) == 1, err


@pytest.mark.timeout(180)
def test_both_forms_of_a_run_give_the_same_kernel_profile(tmp_path):
    """`calibrate --write-profile` from the profiler traces of a run and from ringsim's own trace of
    it: the same call shapes (knots and references), the same times up to where each form reads the
    clock (the profiler at the op, ringsim around it: tens of µs on ms-long calls)."""
    import numpy as np

    from ringsim.calibration.kernels import profile_from_runs
    from ringsim.calibration.measured import load_measured

    prof = tmp_path / "prof"
    p = _ringsim(["run", "--world-size", "2", "--schedule", "contiguous", "--phase", "fwd+bwd", "--seq-len", "2048",
                  "--heads", "4", "--head-dim", "64", "--repeat", "3", "--warmup", "1", "--timeout-s", "90",
                  "--profile", str(prof)], timeout=170)
    assert p.returncode == 0, p.stderr
    own = profile_from_runs(load_measured([str(prof / "ringsim.json")]))
    kin = profile_from_runs(load_measured([str(prof)]))
    key = lambda pt: (pt.phase, pt.causal, pt.q_rows, pt.k_rows, pt.heads, pt.batch, pt.role)
    assert sorted(map(key, own.points)) == sorted(map(key, kin.points)) and len(own.points) == 4
    a = {key(pt): pt.tflops for pt in own.points}
    ratio = np.array([pt.tflops / a[key(pt)] for pt in kin.points])
    assert np.all(np.abs(ratio - 1) < 0.10), ratio
