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
