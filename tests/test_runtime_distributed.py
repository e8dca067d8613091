"""Real multi-process ring attention (gloo on CPU) against single-process attention.

One process group per world size runs every configuration (ringsim.runtime.conformance), so the
cost is a handful of process launches, not one per case. Lengths: 3816 (= 8·477) and 3840
(= 2⁸·15) — not powers of two, divisible by 2G for every G ≤ 4, so all three schedules run at the
same T — plus tiny odd shards (7 tokens per zigzag chunk) with GQA and a sliding window whose
blocks have fully masked rows.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ringsim.runtime.conformance import conformance_worker  # noqa: E402
from ringsim.runtime.kernels import attention_reference, default_scale  # noqa: E402
from ringsim.runtime.launch import run_world  # noqa: E402
from ringsim.runtime.runner import RunConfig, make_inputs, workload_of  # noqa: E402
from ringsim.schedules import SCHEDULES, Plan  # noqa: E402
from ringsim.timeline import read_timeline  # noqa: E402

pytestmark = pytest.mark.distributed

ATOL, RTOL = 2e-5, 1e-4
BIG_T = {1: 3816, 2: 3840, 3: 3816, 4: 3840}
DIMS = dict(heads=2, kv_heads=2, head_dim=16)
SMALL = dict(heads=4, kv_heads=2, head_dim=8)  # GQA


def _configs(G: int) -> list[dict]:
    cfgs = []
    for sched in SCHEDULES:
        for mask in ("causal", "full"):
            for phase in ("fwd+bwd", "fwd"):
                cfgs.append(dict(schedule=sched, seq_len=BIG_T[G], mask=mask, phase=phase, **DIMS))
        # tiny odd shards, GQA, and a window of 3 tokens: many block rows have no allowed key
        for mask in ("sliding:3", "causal"):
            cfgs.append(dict(schedule=sched, seq_len=14 * G, mask=mask, phase="fwd+bwd", seed=1, **SMALL))
    return cfgs


@functools.lru_cache(maxsize=None)
def _reference(T, mask, heads, kv_heads, head_dim, seed):
    """fp64 reference and fp32 single-process SDPA (out, lse, dq, dk, dv) in global order."""
    cfg = RunConfig(world_size=1, seq_len=T, mask=mask, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                    seed=seed).validate()
    q, k, v, dout = make_inputs(cfg)
    lo, hi = Plan("contiguous", 1, T, mask).mask.bounds(T)
    pos = np.arange(T)
    scale = default_scale(head_dim)
    r64 = attention_reference(q, k, v, pos, pos, lo, hi, scale, dout=dout)
    qs, ks, vs = (t.clone().requires_grad_(True) for t in (q, k, v))
    d = torch.as_tensor(pos[:, None] - pos[None, :])
    kw = {"is_causal": True} if mask == "causal" else ({} if mask == "full" else {"attn_mask": (d >= lo) & (d <= hi)})
    o32 = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, scale=scale, enable_gqa=heads != kv_heads, **kw)
    o32.backward(dout)
    l32 = attention_reference(q, k, v, pos, pos, lo, hi, scale, dtype=torch.float32, head_chunk=heads)[1]
    names = ("out", "lse", "dq", "dk", "dv")
    return dict(zip(names, r64)), dict(zip(names, (o32.detach(), l32, qs.grad, ks.grad, vs.grad)))


def _simulated_bytes(G, c) -> dict:
    """Bytes per (phase, step) of the simulated run of this configuration (its timeline's send rows)."""
    from ringsim.simulate import SimSpec, simulate_point
    from ringsim.topoload import load_topology
    from ringsim.validate import localhost_cpu

    cfg = RunConfig(world_size=G, **c).validate()
    res = simulate_point(SimSpec(workload_of(cfg), localhost_cpu(G), c["schedule"], G, c["mask"], c["phase"]),
                         keep_timeline=True)
    df = res["_timeline"].df
    sends = df[df["kind"] == "send"]
    return {(str(p), int(s)): float(b) for (p, s), b in sends.groupby(["phase", "step"], observed=True)["bytes"].sum().items()}


def _close(got, ref, what):
    got, ref = got.double(), ref.double()
    assert torch.isfinite(got).all(), f"{what}: NaN/Inf in the ring's result"
    bad = (got - ref).abs() > ATOL + RTOL * ref.abs()
    assert not bad.any(), f"{what}: max abs err {(got - ref).abs().max().item():.3g} over tolerance"


def _check_world(G):
    cfgs = _configs(G)
    results = run_world(conformance_worker, (cfgs,), G, timeout_s=60.0, threads=max(1, (os.cpu_count() or 1) // G))
    assert len(results) == G
    for i, c in enumerate(cfgs):
        per_rank = [res[i] for res in results]
        plan = Plan(c["schedule"], G, c["seq_len"], c["mask"])
        r64, r32 = _reference(c["seq_len"], c["mask"], c["heads"], c["kv_heads"], c["head_dim"], c.get("seed", 0))
        names = ["out", "lse"] + (["dq", "dk", "dv"] if c["phase"] == "fwd+bwd" else [])
        tag = f"G={G} {c['schedule']} T={c['seq_len']} {c['mask']} {c['phase']}"
        for n in names:
            got = torch.from_numpy(plan.unshard([p[n].numpy() for p in per_rank], axis=2))
            _close(got, r64[n], f"{tag} {n} vs fp64")
            _close(got, r32[n], f"{tag} {n} vs fp32 single-process")
        # bytes: what each rank sent equals what its peer received, per step and in total, and the
        # bytes of every (phase, step) summed over ranks are the simulator's (the same program)
        n_loc = c["seq_len"] // G
        shard = 2 * 1 * n_loc * c["kv_heads"] * c["head_dim"] * 4  # K and V, fp32
        sim = _simulated_bytes(G, c)
        measured: dict = {}
        for r in range(G):
            nb = (r + 1) % G
            assert per_rank[r]["bytes_sent"] == per_rank[nb]["bytes_received"]
            rows_r, rows_nb = per_rank[r]["transfer_rows"], per_rank[nb]["transfer_rows"]
            for (phase, step, kind), msgs in rows_r.items():
                if kind != "send":
                    continue
                ((peer, nbytes),) = msgs
                assert peer == nb
                assert rows_nb[(phase, step, "recv")] == [(r, nbytes)]
                measured[(phase, step)] = measured.get((phase, step), 0.0) + nbytes
                if phase == "fwd":
                    assert nbytes == shard
                else:  # bwd: KV, KV + dK/dV, dK/dV only (last step and the return)
                    expect = shard if step == 0 or step >= G - 1 else 2 * shard
                    assert nbytes == expect, (tag, step, nbytes, expect)
            fwd_steps = [s for (ph, s, k) in rows_r if ph == "fwd" and k == "send"]
            assert sorted(fwd_steps) == list(range(G - 1))
            # every step has a compute row carrying the plan's exact pairs
            comp = {(ph, s): p for (ph, s, p) in per_rank[r]["compute_steps"]}
            for s in range(G):
                assert comp[("fwd", s)] == plan.pairs[r, s]
                if c["phase"] == "fwd+bwd":
                    assert comp[("bwd", s)] == plan.pairs[r, s]
        assert measured == sim, (tag, measured, sim)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("G", [1, 2, 3, 4])
def test_ring_equals_single_process_attention(G):
    _check_world(G)


# ---- the command: trace, watchdog ----------------------------------------------------------------
def _ringsim(args, env_extra=None, timeout=120):
    env = dict(os.environ, **(env_extra or {}))
    t0 = time.time()
    p = subprocess.run([sys.executable, "-c", "from ringsim.cli import main; main()", *args],
                       capture_output=True, text=True, env=env, timeout=timeout)
    return p, time.time() - t0


@pytest.mark.timeout(150)
def test_run_command_check_and_trace(tmp_path):
    trace = tmp_path / "t.json"
    p, _ = _ringsim(["run", "--world-size", "2", "--schedule", "zigzag", "--seq-len", "120", "--heads", "2",
                     "--head-dim", "16", "--phase", "fwd+bwd", "--check", "--repeat", "2", "--warmup", "1",
                     "--trace", str(trace), "--timeout-s", "60"])
    assert p.returncode == 0, p.stderr
    assert "PASS" in p.stdout and "dv" in p.stdout
    tl = read_timeline(trace)
    m = tl.meta
    assert m["source"] == "measured" and m["world_size"] == 2 and m["schedule"] == "zigzag"
    assert m["backend"] == "gloo" and m["torch_version"] == torch.__version__
    iters = m["iterations"]
    assert [i["iter"] for i in iters] == [1, 2]  # warm-up 0 excluded
    df = tl.df
    for it in iters:  # each rank's barrier exit: the window starts at the first, every row after its own
        assert len(it["rank_start_s"]) == 2 and min(it["rank_start_s"]) == it["start_s"]
        for r, t0 in enumerate(it["rank_start_s"]):
            mine = df[(df["rank"] == r) & (df["start_s"] >= it["start_s"] - 1e-9) & (df["start_s"] <= it["end_s"])]
            assert mine["start_s"].min() >= t0 - 1e-9
    for it in iters:
        rows = df[(df["start_s"] >= it["start_s"] - 1e-9) & (df["start_s"] <= it["end_s"] + 1e-9)]
        for r in (0, 1):
            for phase in ("fwd", "bwd"):
                d = rows[(rows["rank"] == r) & (rows["phase"] == phase)]
                assert sorted(d[d["kind"] == "compute"]["step"]) == [0, 1]
                for kind in ("send", "recv"):
                    steps = sorted(d[d["kind"] == kind]["step"])
                    assert steps == ([0] if phase == "fwd" else [0, 1, 2])  # bwd: + the dK/dV return
    assert (df["end_s"] >= df["start_s"]).all() and len(df) == len(df.drop_duplicates())
    # the Chrome trace is what Perfetto opens: complete events with µs timestamps
    raw = json.loads(trace.read_text())
    assert any(e.get("ph") == "X" and e["pid"] == 1 for e in raw["traceEvents"])


def _bytes_per_step(path, iters=1) -> dict:
    """Bytes sent per (phase, step) of one iteration of a trace."""
    df = read_timeline(path).df
    s = df[df["kind"] == "send"].groupby(["phase", "step"], observed=True)["bytes"].sum() / iters
    return {(str(p), int(st)): float(b) for (p, st), b in s.items()}


def run_and_simulate_bytes(tmp_path, G: int, dims: list, label: str, run_extra=()) -> tuple:
    """`ringsim run --trace` (2 iterations) and `ringsim simulate --trace` on the same workload
    (``dims``: the shared flags): their bytes per (phase, step) and the run's trace path."""
    from ringsim.cli import main

    run = tmp_path / f"run-{label}.json"
    p, _ = _ringsim(["run", "--world-size", str(G), *dims, *run_extra, "--repeat", "2", "--warmup", "0",
                     "--trace", str(run), "--timeout-s", "60"])
    assert p.returncode == 0, p.stderr
    sim = tmp_path / f"sim-{label}.json"
    with pytest.raises(SystemExit) as e:
        main(["simulate", "--topology", "localhost-cpu", "--world-size", str(G), "--layers", "1",
              "--kv-heads", "2", "--dtype", "fp32", *dims, "--trace", str(sim), "--format", "json"])
    assert e.value.code == 0
    return _bytes_per_step(run, iters=2), _bytes_per_step(sim), run


@pytest.mark.timeout(240)
@pytest.mark.parametrize("G", [2, 3])
def test_run_and_simulate_traces_send_the_same_bytes_per_step(G, tmp_path):
    """For every layout, fwd+bwd: the bytes per (phase, step) of one iteration of `ringsim run
    --trace` equal those of `ringsim simulate --trace` on the same workload (one program)."""
    for layout in SCHEDULES:
        dims = ["--heads", "2", "--head-dim", "16", "--seq-len", str(96 * G), "--schedule", layout,
                "--phase", "fwd+bwd"]
        measured, simulated, _ = run_and_simulate_bytes(tmp_path, G, dims, layout)
        assert measured == simulated, (layout, measured, simulated)
        assert ("bwd", G) in simulated  # the dK/dV return is a step of both


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode,bound_s", [("exit", 60.0), ("hang", 8.0)])
def test_watchdog_names_dead_or_hung_rank(mode, bound_s):
    p, elapsed = _ringsim(["run", "--world-size", "2", "--schedule", "contiguous", "--seq-len", "64", "--heads",
                           "1", "--head-dim", "8", "--repeat", "1", "--warmup", "0", "--timeout-s", str(bound_s)],
                          env_extra={"RINGSIM_TEST_FAULT": f"{mode}:1:1"})
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    line = p.stderr.strip().splitlines()[-1]
    assert "rank 1" in line and "Traceback" not in p.stderr
    assert ("exited with code 17" in line) if mode == "exit" else ("made no progress" in line)
    # bounded: start-up (a few seconds for torch) plus the watchdog's timeout
    assert elapsed < bound_s + 45


@pytest.mark.parametrize("args,needle", [
    (["--world-size", "3", "--schedule", "zigzag", "--seq-len", "100"], "nearest valid lengths: 96 or 102"),
    (["--heads", "4", "--kv-heads", "3"], "multiple of --kv-heads"),
    (["--mask", "diagonal"], "unknown mask"),
    (["--timeout-s", "0"], "--timeout-s must be positive"),
])
def test_run_command_bad_input_is_one_line_exit_2(args, needle, capsys):
    from ringsim.cli import main

    with pytest.raises(SystemExit) as e:
        main(["run", *args])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and needle in err and len(err.splitlines()) == 1, err
