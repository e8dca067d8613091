"""`ringsim simulate`, `compare` and `sweep` end to end."""
import json

import pytest

from ringsim.timeline import read_timeline
from test_cli_foundation import run


def test_simulate_default_runs():
    code, out, err = run("simulate")
    assert code == 0, err
    assert "zigzag" in out and "dgx-h100-8" in out


def test_compare_zigzag_vs_contiguous_on_dgx_h100():
    # the ideal roofline: every pair costs the same, so the ratio is the work imbalance
    code, out, err = run("compare", "--topology", "dgx-h100-8", "--model", "llama3-8b", "--seq-len", "128K",
                         "--schedules", "contiguous,striped,zigzag", "--mask", "causal", "--format", "json",
                         "--kernels", "roofline")
    assert code == 0, err
    res = json.loads(out)["results"]
    by = {r["schedule"]: r for r in res}
    assert [r["schedule"] for r in res][-1] == "contiguous"  # sorted by makespan, slowest last
    assert [r["makespan_s"] for r in res] == sorted(r["makespan_s"] for r in res)
    G = 8
    ratio = by["contiguous"]["makespan_s"] / by["zigzag"]["makespan_s"]
    assert ratio == pytest.approx((2 * G - 1) / G, rel=0.01)
    assert by["zigzag"]["speedup_vs_contiguous"] == pytest.approx(ratio)
    for r in res:
        assert {"schedule", "makespan_s", "imbalance", "efficiency", "overlap", "per_rank", "hops",
                "peak_memory_bytes"} <= set(r)
        assert len(r["per_rank"]) == G and len(r["hops"]) == G
    assert by["contiguous"]["imbalance"] == pytest.approx(1.875, abs=0.002)
    # the device's own kernels (FA3 on H100): causal blocks run below full ones, zigzag's half-height
    # blocks lose efficiency, every merge costs HBM traffic — the speedup falls below the ideal 1.875,
    # and the efficiency against the ideal bound (one whole-sequence kernel) is no longer 1 for anyone
    code, out, err = run("compare", "--topology", "dgx-h100-8", "--model", "llama3-8b", "--seq-len", "128K",
                         "--schedules", "contiguous,zigzag", "--format", "json")
    assert code == 0, err
    by = {r["schedule"]: r for r in json.loads(out)["results"]}
    assert by["zigzag"]["kernels"] == "h100-sxm-fa3" and by["zigzag"]["implementation"] == "ringsim"
    assert 1.4 < by["zigzag"]["speedup_vs_contiguous"] < 1.875
    assert all(0.3 < r["efficiency"] < 0.99 for r in by.values())


def test_four_node_cluster_internode_hops_are_the_bottleneck():
    code, out, err = run("compare", "--topology", "dgx-h100-4n", "--model", "llama3-8b", "--seq-len", "128K",
                         "--schedules", "contiguous,zigzag", "--format", "json", "--kernels", "roofline")
    assert code == 0, err
    z = {r["schedule"]: r for r in json.loads(out)["results"]}["zigzag"]
    slow = [h for h in z["hops"] if "ib" in h["link_classes"]]
    fast = [h for h in z["hops"] if "ib" not in h["link_classes"]]
    assert [(h["src"], h["dst"]) for h in slow] == [(7, 8), (15, 16), (23, 24), (31, 0)]
    assert max(h["bottleneck_Bps"] for h in slow) < min(h["bottleneck_Bps"] for h in fast)
    assert "ib" in z["bottleneck_hop"]
    hop = z["critical_path"]["holder"]
    assert hop.startswith("hop ") and hop.split()[1] in ("7->8", "15->16", "23->24", "31->0")
    assert z["overlap"] < 1.0  # IB transfers no longer hide at 4096 tokens per rank


def test_simulate_trace_round_trips(tmp_path):
    p = tmp_path / "sim.json"
    code, out, err = run("simulate", "--world-size", "4", "--seq-len", "64K", "--phase", "fwd+bwd",
                         "--trace", str(p), "--format", "json")
    assert code == 0, err
    tl = read_timeline(p)
    assert set(tl.df["rank"]) == {0, 1, 2, 3}
    assert set(tl.df["phase"]) == {"fwd", "bwd"}
    assert tl.makespan_s() == pytest.approx(json.loads(out)["results"][0]["layer_makespan_s"])


def test_sweep_csv_and_report(tmp_path):
    rep = tmp_path / "sweep.html"
    code, out, err = run("sweep", "--topology", "dgx-h100-8", "--model", "llama3-8b", "--seq-len",
                         "16K,64K,256K,1M", "--schedules", "contiguous,zigzag", "--format", "csv", "--jobs", "1",
                         "--report", str(rep))
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("topology,model,world_size,seq_len,schedule")
    assert len(lines) == 1 + 8
    assert "8/8 points" in err
    html = rep.read_text()
    assert html.startswith("<!DOCTYPE html>") and "Plotly" in html and "Crossovers" in html


def test_sweep_keeps_finished_points_on_interrupt(monkeypatch):
    """A real SIGINT (the signal Ctrl-C sends) arrives while the third point runs."""
    import os
    import signal
    import time

    import ringsim.sweep as sw

    real = sw.run_point
    calls = []

    def signalled(point):
        calls.append(point)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises KeyboardInterrupt here, long before this ends
        return real(point)

    monkeypatch.setattr(sw, "run_point", signalled)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    pts = sw.Study(seq_lens=[16384, 32768], schedules=["contiguous", "zigzag"]).points()
    try:
        t0 = time.monotonic()
        sw.run_study(pts, jobs=1)
    except sw.Interrupted as e:
        exc = e
    except KeyboardInterrupt:  # escaped the sweep: fail this test, not the whole session
        pytest.fail("the interrupt escaped run_study instead of becoming Interrupted")
    else:
        pytest.fail("the sweep was not interrupted")
    finally:
        signal.signal(signal.SIGINT, old)
    assert time.monotonic() - t0 < 4
    assert [(r["seq_len"], r["schedule"]) for r in exc.rows] == [(16384, "contiguous"), (16384, "zigzag")]
    assert exc.rows[1]["speedup_vs_contiguous"] > 1.0


def test_sweep_bad_points_become_error_rows():
    code, out, err = run("sweep", "--seq-len", "1000,1024", "--schedules", "zigzag", "--jobs", "1")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 3 and "nearest valid" in lines[1] and lines[2].endswith(",")
    assert "1 of 2 points could not run" in err


ERRORS = [
    (["compare", "--schedules", "contiguous,spiral"], "unknown schedule(s) spiral"),
    (["simulate", "--topology", "no-such-machine"], "no-such-machine"),
    (["simulate", "--world-size", "16"], "fewer than world size 16"),
    (["simulate", "--straggler", "3"], "--straggler"),
    (["simulate", "--straggler", "99:0.5"], "outside 0..7"),
    (["simulate", "--link-scale", "warp:2"], "no link class 'warp'"),
    (["simulate", "--engine", "fast", "--topology", "2node-shared-nic", "--placement",
      "n0.g0,n1.g0,n0.g1,n1.g1,n0.g2,n1.g2,n0.g3,n1.g3"], "--engine des"),
    (["simulate", "--degrade-link", "g0:sw0:0.5"], "write A,B,FACTOR"),
    (["simulate", "--degrade-link", "g0,g5,0.5"], "no link between"),
    (["sweep", "--phase", "bwd"], "--phase takes fwd"),
    (["sweep", "--bw-scale", "0"], "must be positive"),
    (["sweep", "--format", "parquet"], "--output"),
]


@pytest.mark.parametrize("argv,msg", ERRORS)
def test_error_paths(argv, msg):
    code, out, err = run(*argv)
    assert code == 2, (out, err)
    assert msg in err
    assert len(err.strip().splitlines()) == 1, err


def test_sweep_with_calibration_matches_compare():
    import os

    calib = os.path.join(os.path.dirname(__file__), "..", "reports", "calib-cpu-gloo.json")
    common = ["--topology", "localhost-cpu", "--world-size", "2", "--seq-len", "2048", "--calibration", calib]
    code, out, err = run("sweep", *common, "--schedules", "zigzag", "--format", "json", "--jobs", "1")
    assert code == 0, err
    swept = json.loads(out)["results"][0]
    code, out, err = run("compare", *common, "--schedules", "zigzag", "--format", "json")
    assert code == 0, err
    compared = json.loads(out)["results"][0]
    assert swept["makespan_s"] == pytest.approx(compared["makespan_s"], rel=1e-12)
    code, out, _ = run("sweep", "--topology", "localhost-cpu", "--world-size", "2", "--seq-len", "2048",
                       "--schedules", "zigzag", "--format", "json", "--jobs", "1")
    assert json.loads(out)["results"][0]["makespan_s"] != pytest.approx(swept["makespan_s"], rel=1e-3)
