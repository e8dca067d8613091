"""`ringsim simulate --strategy`, `compare --strategies` and `sweep --strategies`: every strategy on
one topology, with makespan, exposed communication and memory per GPU; strategies that cannot run
a configuration are listed with the reason instead of failing the comparison."""
import json

import pytest

from test_cli_foundation import run

FIVE = "zigzag,allgather,ulysses,usp:8x4,double-ring:8x4"


def _results(*argv):
    code, out, err = run(*argv, "--format", "json")
    assert code == 0, err
    return json.loads(out)["results"]


def test_compare_five_strategies_on_four_nodes():
    """The issue's first Done-when line: all five listed with makespan, exposed communication and
    memory per GPU; the full spec in results[].schedule."""
    res = _results("compare", "--topology", "dgx-h100-4n", "--model", "llama3-8b", "--seq-len", "1M",
                   "--phase", "fwd+bwd", "--strategies", FIVE)
    assert sorted(r["schedule"] for r in res) == sorted(FIVE.split(","))
    for r in res:
        assert r["applicable"] and r["strategy"] == r["schedule"]
        assert r["makespan_s"] > 0 and r["peak_memory_bytes"] > 0
        assert 0 <= r["exposed_comm_mean_s"] <= r["exposed_comm_s"] < r["makespan_s"]
    assert [r["makespan_s"] for r in res] == sorted(r["makespan_s"] for r in res)
    by = {r["schedule"]: r for r in res}
    # all-gather exposes its collectives (nothing overlaps them) and holds every token's K/V
    assert by["allgather"]["exposed_comm_s"] > 10 * by["zigzag"]["exposed_comm_s"]
    assert by["allgather"]["peak_memory_bytes"] > 2 * by["zigzag"]["peak_memory_bytes"]
    assert by["zigzag"]["hops"] and not by["ulysses"]["hops"]  # the hide-block analysis is the ring's


def test_compare_on_one_node_lists_what_cannot_run_with_the_reason():
    res = _results("compare", "--topology", "dgx-h100-8", "--model", "llama3-70b", "--seq-len", "128K",
                   "--phase", "fwd+bwd", "--strategies", "zigzag,allgather,ulysses,usp:8x4,usp:4x2,double-ring:4x2")
    by = {r["schedule"]: r for r in res}
    assert not by["usp:8x4"]["applicable"] and "32 ranks, but the world size is 8" in by["usp:8x4"]["reason"]
    assert res[-1]["schedule"] == "usp:8x4"  # refused rows come last
    assert all(by[s]["applicable"] for s in ("zigzag", "allgather", "ulysses", "usp:4x2", "double-ring:4x2"))


def test_ulysses_degree_not_dividing_heads_is_not_applicable():
    argv = ["compare", "--topology", "dgx-h100-8", "--world-size", "6", "--model", "llama3-8b", "--seq-len", "96K",
            "--strategies", "zigzag,ulysses,usp:3x2"]
    res = _results(*argv)
    by = {r["schedule"]: r for r in res}
    assert by["zigzag"]["applicable"]
    assert "degree 6 does not divide the 32 query heads" in by["ulysses"]["reason"]
    assert "degree 3 does not divide the 32 query heads" in by["usp:3x2"]["reason"]
    code, out, err = run(*argv)
    assert code == 0 and "ulysses: not applicable: ulysses: Ulysses degree 6 does not divide" in out


def test_memory_that_does_not_fit_is_not_applicable():
    res = _results("compare", "--topology", "dgx-h100-8", "--model", "llama3-70b", "--seq-len", "1M",
                   "--phase", "fwd+bwd", "--strategies", "zigzag,allgather", "--device-memory", "70GB")
    by = {r["schedule"]: r for r in res}
    assert by["zigzag"]["applicable"] and by["zigzag"]["memory_limit_bytes"] == 70e9
    assert not by["allgather"]["applicable"] and "more than the 70 GB" in by["allgather"]["reason"]
    # the device's own memory is the default limit in compare
    res = _results("compare", "--topology", "dgx-h100-8", "--model", "llama3-70b", "--seq-len", "1M",
                   "--strategies", "zigzag")
    assert res[0]["memory_limit_bytes"] == 80e9


def test_simulate_strategy_and_refusals():
    res = _results("simulate", "--strategy", "usp:4x2", "--seq-len", "64K", "--phase", "fwd+bwd")
    assert res[0]["schedule"] == "usp:4x2" and res[0]["engine"] == "des"
    res = _results("simulate", "--strategy", "pass-q", "--cached-tokens", "60K", "--seq-len", "64K")
    assert res[0]["schedule"] == "pass-q:61440"
    for argv, msg in ((["--strategy", "ulysses", "--world-size", "6"], "does not divide the 32 query heads"),
                      (["--strategy", "spiral"], "unknown strategy spec(s) spiral"),
                      (["--strategy", "pass-q"], "--cached-tokens"),
                      (["--strategy", "zigzag", "--schedule", "striped"], "not both")):
        code, out, err = run("simulate", *argv)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err


def test_sweep_strategies_rows_carry_exposed_comm_and_reasons():
    code, out, err = run("sweep", "--topology", "dgx-h100-8", "--model", "llama3-8b", "--seq-len", "64K",
                         "--strategies", "zigzag,ulysses,usp:3x2", "--format", "json", "--jobs", "1")
    assert code == 0, err
    rows = {r["schedule"]: r for r in json.loads(out)["results"]}
    assert rows["ulysses"]["exposed_comm_s"] > 0 and rows["zigzag"]["error"] is None
    assert "3 × 2 = 6 ranks" in rows["usp:3x2"]["error"]
