"""`ringsim advise`: candidates aligned with the node, the ranking, the one-line reasons, and the
issue's Done-when command."""
import json
import time

import pytest

from ringsim.advise import candidates, node_size, why_not
from ringsim.topoload import load_topology
from ringsim.units import InputError
from ringsim.workload import Workload, get_model
from test_cli_foundation import run


def test_node_size_from_dimensions_or_bandwidth():
    assert node_size(load_topology("dgx-h100-16n"), 128) == 8
    assert node_size(load_topology("dgx-h100-8"), 8) == 8
    assert node_size(load_topology("dgx-h100-4n"), 16) == 8
    alternating = load_topology("2node-shared-nic")  # explicit file whose placement alternates the nodes
    assert node_size(alternating, 8) == 1
    in_order = alternating.with_placement(alternating.meta["all_gpus"])
    assert node_size(in_order, 8) == 4  # consecutive ranks at the best bandwidth


def test_candidates_align_with_the_node_and_the_heads():
    wl = Workload(get_model("llama3-70b"), 1 << 20)  # 64 query heads
    c = candidates(wl, load_topology("dgx-h100-16n"), 128, "fwd+bwd")
    assert c[:6] == ["zigzag", "striped", "contiguous", "allgather", "allgather:tree", "ulysses"]
    assert "usp:8x16" in c and "usp:16x8" in c and "usp:8x16:ring-inner" in c and "usp:128x1" not in c
    assert not any(x.startswith("usp:128") for x in c)  # 128 does not divide 64 heads
    assert {x for x in c if x.startswith("double-ring")} == {f"double-ring:{i}x{128 // i}" for i in (2, 4, 8, 16, 32, 64)}
    c6 = candidates(wl, load_topology("dgx-h100-8"), 6, "fwd")  # node of 6 ranks: 4 is not aligned
    assert "usp:2x3" in c6 and not any("usp:4" in x for x in c6)
    assert candidates(wl, load_topology("dgx-h100-8"), 8, "fwd", cached_tokens=1000) == ["pass-kv:1000", "pass-q:1000"]
    with pytest.raises(InputError, match="prefill"):
        candidates(wl, load_topology("dgx-h100-8"), 8, "fwd+bwd", cached_tokens=1000)


def test_why_lines_name_the_factor():
    best = {"schedule": "a", "makespan_s": 10.0, "exposed_comm_s": 0.1, "exposed_comm_mean_s": 0.1, "max_compute_s": 9.9,
            "work_imbalance": 1.0, "peak_memory_bytes": 1e9}
    comm = dict(best, schedule="b", makespan_s=15.0, exposed_comm_s=5.1, exposed_comm_mean_s=4.0)
    imb = dict(best, schedule="c", makespan_s=19.0, max_compute_s=18.9, work_imbalance=1.9)
    tie = dict(best, schedule="d", makespan_s=10.01, peak_memory_bytes=3e9)
    assert "exposed communication" in why_not(best, comm) and "1.50×" in why_not(best, comm)
    assert "work imbalance" in why_not(best, imb) and "1.90× the mean" in why_not(best, imb)
    assert "ties" in why_not(best, tie) and "2 GB more per GPU" in why_not(best, tie)


def test_advise_done_when_command():
    """The issue's command: a ranked list and a best entry with its reason, in well under 60 s."""
    t = time.perf_counter()
    code, out, err = run("advise", "--model", "llama3-70b", "--seq-len", "1M", "--topology", "dgx-h100-16n",
                         "--phase", "fwd+bwd", "--device-memory", "80GB", "--format", "json")
    wall = time.perf_counter() - t
    assert code == 0, err
    doc = json.loads(out)
    ranked, best = doc["ranked"], doc["best"]
    assert len(ranked) >= 20 and [r["rank"] for r in ranked] == list(range(1, len(ranked) + 1))
    assert [r["makespan_s"] for r in ranked] == sorted(r["makespan_s"] for r in ranked)
    assert best["schedule"] == ranked[0]["schedule"] and best["reason"].startswith(f"{best['schedule']} is fastest")
    assert all(r["why_not"] for r in ranked[1:]) and all(r["peak_memory_bytes"] <= 80e9 for r in ranked)
    assert any(r["strategy"] == "ulysses" and "does not divide the 64 query heads" in r["reason"]
               for r in doc["not_applicable"])
    by = {r["schedule"]: r for r in ranked}
    assert "work imbalance" in by["contiguous"]["why_not"] and "exposed communication" in by["allgather"]["why_not"]
    assert wall < 60 and doc["query"]["node_size"] == 8


def test_advise_memory_limit_and_table():
    code, out, err = run("advise", "--model", "llama3-70b", "--seq-len", "1M", "--topology", "dgx-h100-8",
                         "--phase", "fwd+bwd", "--device-memory", "70GB", "--strategies", "zigzag,allgather,ulysses")
    assert code == 0, err
    assert "best: zigzag is fastest" in out and "not applicable: allgather: needs" in out


def test_why_not_names_the_sms_nccl_takes():
    """When most of a loser's extra compute is what NCCL's send/recv kernels took, the reason says
    so; otherwise it names the calls' tiles and memory work."""
    from ringsim.advise import why_not

    best = {"schedule": "usp:8x2", "makespan_s": 100.0, "exposed_comm_s": 1.0, "exposed_comm_mean_s": 1.0,
            "max_compute_s": 90.0, "work_imbalance": 1.0, "peak_memory_bytes": 1e9, "nccl_compute_slowdown_s": 0.5}
    other = dict(best, schedule="double-ring:4x32", makespan_s=110.0, max_compute_s=100.0,
                 nccl_compute_slowdown_s=8.0)
    line = why_not(best, other)
    assert line.startswith("double-ring:4x32: 1.10× slower") and "up to 8 s of a rank's compute lost to the SMs" in line
    other["nccl_compute_slowdown_s"] = 1.0
    assert "partly masked tiles" in why_not(best, other)


def test_why_not_splits_extra_compute_into_kernels_and_memory_work():
    """With the cost model's split of the busiest rank's compute, the reason names the larger
    difference (memory work between kernels, or the kernel calls) with both figures."""
    best = {"schedule": "allgather", "makespan_s": 10.0, "exposed_comm_s": 0.1, "exposed_comm_mean_s": 0.1,
            "max_compute_s": 9.9, "work_imbalance": 1.0, "peak_memory_bytes": 1e9, "nccl_compute_slowdown_s": 0.0,
            "busiest_kernel_s": 9.7, "busiest_memory_s": 0.2}
    mem = dict(best, schedule="zigzag", makespan_s=11.0, max_compute_s=10.9, busiest_kernel_s=9.9,
               busiest_memory_s=1.0)
    kern = dict(best, schedule="ulysses", makespan_s=11.0, max_compute_s=10.9, busiest_kernel_s=10.6,
                busiest_memory_s=0.3)
    line = why_not(best, mem)
    assert "mostly memory work between kernels" in line and "1 s against 200 ms" in line and "9.9 s against 9.7 s" in line
    line = why_not(best, kern)
    assert "mostly kernel calls" in line and "10.6 s against 9.7 s" in line and "300 ms against 200 ms" in line
    # a calibration has no split: the general reason
    assert "partly masked tiles, or it does more memory work" in why_not(best, dict(kern, busiest_kernel_s=None))


def test_busiest_rank_split_is_the_priced_compute():
    """simulate's kernel/memory split of a rank's compute sums to what the engines ran as priced
    compute (every rank), and its busiest-rank fields come from it; a calibration has none."""
    import numpy as np

    from ringsim.costs import resolve_kernels
    from ringsim.engines import simulate_program
    from ringsim.simulate import SimSpec, compute_split, simulate_point
    from ringsim.strategies import parse_strategy

    topo = load_topology("dgx-h100-8")
    wl = Workload(get_model("llama3-8b"), 64 * 1024, 1, "bf16")
    cost = resolve_kernels("fa2", topo)
    for spec_s, impl, phase in (("zigzag", "ring-flash-attn", "fwd+bwd"), ("ulysses", "ringsim", "fwd"),
                                ("allgather", "ringsim", "fwd+bwd")):
        prog = parse_strategy(spec_s, impl, None).build(wl, 8, "causal", phase)
        res = simulate_program(prog, wl, topo, cost)
        kern, mem = compute_split(prog, wl, cost.apply_to_topology(topo, prog), cost)
        priced = res.priced_compute_s if res.priced_compute_s is not None else res.compute_s
        np.testing.assert_allclose(kern + mem, priced.sum(axis=0), rtol=1e-9)
        assert (mem > 0).all() and (kern > 0).all()
        row = simulate_point(SimSpec(wl, topo, spec_s, 8, "causal", phase, cost_model=cost, implementation=impl))
        r = row["busiest_rank"]
        assert row["per_rank"][r]["compute_s"] == max(p["compute_s"] for p in row["per_rank"])
        assert row["busiest_kernel_s"] == pytest.approx(kern[r] * wl.model.layers, rel=1e-9)
        assert row["busiest_memory_s"] == pytest.approx(mem[r] * wl.model.layers, rel=1e-9)
    # a calibration prices whole steps: no split, and the fields say so
    import os

    from ringsim.calibration import load_calibration
    from ringsim.validate import localhost_cpu

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cal = load_calibration(os.path.join(here, "reports", "calib-cpu-gloo.json"))
    small = Workload(get_model("llama3-8b"), 4096, 1, "fp32")
    prog = parse_strategy("zigzag", "ringsim", None).build(small, 2, "causal", "fwd")
    assert compute_split(prog, small, localhost_cpu(2), cal) is None
