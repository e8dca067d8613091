"""The ranks' start skew: measured runs start their first step apart (the iteration's prologue);
the engines and the shared-core replay release ranks late, the calibration records the skew, and
validation draws replay it. Hand-worked cases on the golden setup of test_engine_golden."""
from __future__ import annotations

import numpy as np
import pytest

from ringsim.units import InputError
from ringsim.workload import Workload
from test_engine_golden import ENGINES, MODEL, TOKENS_PER_RANK, US, HandCost, switch_topology
from test_nccl_sm_share import _compute_rows


@pytest.mark.parametrize("engine", ENGINES)
def test_a_released_rank_starts_its_first_step_late(engine):
    """``release_s``: rank 1 starts 3 µs late. Its step-0 send and receive post at 3 µs, so both
    transfers run 3–13 µs (rendezvous); rank 0 computes 0–20 and starts step 1 at 20, rank 1
    computes 3–23 and 23–43: the makespan grows by the release, and the timeline has only the
    program's steps."""
    from ringsim.engines import simulate_program
    from ringsim.strategies import parse_strategy

    wl = Workload(MODEL, seq_len=TOKENS_PER_RANK * 2, dtype="fp32")
    prog = parse_strategy("contiguous").build(wl, 2, "full", "fwd")
    res = simulate_program(prog, wl, switch_topology(2), HandCost([[20, 20], [20, 20]]), engine=engine,
                           release_s=np.array([0.0, 3 * US]))
    assert _compute_rows(res) == [(0, 0, 0.0, 20.0), (0, 1, 20.0, 40.0), (1, 0, 3.0, 23.0), (1, 1, 23.0, 43.0)]
    sends = res.timeline.of_kind("send").sort_values("rank")
    assert np.allclose(sends["start_s"] / US, [3, 3]) and np.allclose(sends["end_s"] / US, [13, 13])
    assert res.layer_makespan_s == pytest.approx(43 * US, rel=1e-12)
    with pytest.raises(InputError, match="non-negative"):
        simulate_program(prog, wl, switch_topology(2), HandCost([[20, 20], [20, 20]]), release_s=[0.0, -1.0])


def test_the_shared_core_replay_releases_ranks_too():
    """fluid_program: 2 ranks on 1 core, one 10 core-µs block each, no messages (one step). Rank 1
    released at 4 µs: rank 0 runs alone 0–4 (4 done), then both at half speed until rank 0's last
    6 µs of work finish at 16; rank 1 has 4 left, alone: done at 20."""
    from ringsim.calibration import fluid_program
    from ringsim.strategies import parse_strategy

    wl = Workload(MODEL, seq_len=TOKENS_PER_RANK * 2, dtype="fp32")
    prog = parse_strategy("contiguous").build(wl, 2, "full", "fwd")
    flat = prog.flat
    W = np.zeros((flat.N, 2))
    W[0] = 10.0
    start, end, _, _ = fluid_program(flat, W, np.zeros_like(W), np.zeros(flat.M), 1.0, np.array([0.0, 4.0]))
    assert start[0].tolist() == [0.0, 4.0]
    assert end[0] == pytest.approx([16.0, 20.0])


def test_the_calibration_records_the_start_skew_and_validation_replays_it():
    """On a committed Ulysses run (G = 4, T = 2048): every timed iteration's skew vector is each
    rank's first row less the earliest (0 for one rank, ≥ 0 for all); the calibration keeps them by
    world size (per run, the per-rank median); a validation draw releases the ranks by one of them,
    shuffled, and the median over
    draws lies above the prediction without it (the all-to-all of step 0 waits for its last rank)."""
    import os

    from ringsim.calibration import calibrate, start_skew_s
    from ringsim.calibration.model import CalibratedCost
    from ringsim.timeline import read_timeline
    from ringsim.calibration import assign_iterations
    from ringsim.validate import validate_timeline

    d = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "traces", "cpu-gloo-strategies")
    runs = [(T, read_timeline(os.path.join(d, f"cpu-gloo_w4_ulysses_causal_fwd_T{T}.json"))) for T in (1024, 2048, 4096)]
    tl = runs[1][1]
    vectors, first = start_skew_s(tl)
    df = tl.df
    it = assign_iterations(df)
    assert len(vectors) == it.max() + 1 == 7
    for i, v in enumerate(vectors):
        rows = df[(it == i) & df["kind"].astype(str).isin(["compute", "merge", "send", "recv"])]
        want = rows.groupby("rank")["start_s"].min().to_numpy()
        assert np.allclose(v, want - want.min()) and v.min() == 0.0
        assert all(first[(r, i)] == pytest.approx(want[r]) for r in range(4))
    assert max(v.max() for v in vectors) > 1e-3  # a millisecond and more: what the draws replay
    doc = calibrate([(str(T), t) for T, t in runs if T != 2048])
    # one vector per run: per rank, the median over its iterations (one iteration's outlier, e.g. a
    # profiler's first-op overhead, does not move it)
    assert set(doc["start_skew"]["by_world_size"]) == {"4"} and len(doc["start_skew"]["by_world_size"]["4"]) == 2
    for (_, run), v in zip([r for r in runs if r[0] != 2048], doc["start_skew"]["by_world_size"]["4"]):
        assert np.allclose(v, np.median(np.array(start_skew_s(run)[0]), axis=0))
    cost = CalibratedCost(doc)
    c = cost.with_dispersion(3, 4)
    assert sorted(np.round(c.release_s, 12)) in [sorted(np.round(v, 12)) for v in
                                                 map(np.asarray, doc["start_skew"]["by_world_size"]["4"])]
    assert cost.with_dispersion(3, 2).release_s is None  # no runs of that size: no skew
    v_draws, _ = validate_timeline(tl, cost)
    v_plain, _ = validate_timeline(tl, cost, samples=0)
    assert v_draws["dispersion_draws"] == 25
    assert v_draws["predicted_makespan_s"] > v_plain["predicted_makespan_s"]
