"""NCCL's send/recv kernels hold SMs while a transfer is in flight (issue 12, item 3): the compute
beside them runs on the rest. Hand-worked timelines on the golden setup of test_engine_golden
(every directed link 1e9 B/s, 1 µs; an 8000 B shard), all three engines."""
from __future__ import annotations

import numpy as np
import pytest

from ringsim.costs import RooflineCost
from ringsim.engines import simulate_ring
from ringsim.schedules import Plan
from ringsim.topology import Device, Link, Topology
from ringsim.units import InputError
from ringsim.workload import Workload
from test_engine_golden import ENGINES, MODEL, TOKENS_PER_RANK, US, HandCost, switch_topology


class SharedSMs(HandCost):
    """Hand-set compute; transfers over a link class hold ``share[class]`` of the compute units."""

    def __init__(self, fwd, share):
        super().__init__(fwd)
        self.share = share

    def transfer_sm_share(self, topology):
        return dict(self.share)


def _run(G, fwd, share, topology=None, engine="fast"):
    wl = Workload(MODEL, seq_len=TOKENS_PER_RANK * G, dtype="fp32")
    plan = Plan("contiguous", G, TOKENS_PER_RANK * G, "full")
    return simulate_ring(plan, wl, topology or switch_topology(G), SharedSMs(fwd, share), phase="fwd",
                         engine=engine)


def _compute_rows(res):
    c = res.timeline.of_kind("compute").sort_values(["rank", "step"])
    return [(int(r.rank), int(r.step), round(r.start_s / US, 9), round(r.end_s / US, 9)) for r in c.itertuples()]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_transfer_beside_compute_takes_its_share_of_the_sms(engine):
    """2 ranks, 20 µs steps, the step-0 transfers 0–10 µs (2 µs latency + 8 µs) at a 0.25 share:
    step 0's compute runs at 0.75 while they fly, so it lasts 20 + 0.25 × 10 = 22.5 µs; the last
    step has no transfer and keeps its 20 µs."""
    res = _run(2, [[20, 20], [20, 20]], {"link": 0.25}, engine=engine)
    assert _compute_rows(res) == [(0, 0, 0.0, 22.5), (0, 1, 22.5, 42.5), (1, 0, 0.0, 22.5), (1, 1, 22.5, 42.5)]
    assert res.layer_makespan_s == pytest.approx(42.5 * US, rel=1e-12)
    assert res.timeline.meta["nccl_compute_slowdown_s"] == pytest.approx(2.5 * US, rel=1e-12)
    sends = res.timeline.of_kind("send")
    assert np.allclose(sends["end_s"] - sends["start_s"], 10 * US, rtol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_short_compute_is_slowed_only_while_it_runs(engine):
    """Comm-bound: 4 µs of compute under a 10 µs transfer grows by 0.25 × 4 = 1 µs and still
    waits for the transfer: the makespan does not move."""
    res = _run(2, [[4, 4], [4, 4]], {"link": 0.25}, engine=engine)
    assert _compute_rows(res) == [(0, 0, 0.0, 5.0), (0, 1, 10.0, 14.0), (1, 0, 0.0, 5.0), (1, 1, 10.0, 14.0)]
    assert res.layer_makespan_s == pytest.approx(14 * US, rel=1e-12)


def _ring_of_classes(classes):
    """G GPUs joined only by their ring hops r → r+1 (1e9 B/s, 1 µs; hop r of class classes[r])."""
    G = len(classes)
    links = [Link(r, f"g{r}", f"g{(r + 1) % G}", 1e9, 1e-6, classes[r]) for r in range(G)]
    return Topology("ring-of-classes", Device("toy", 1e12, 1.0, 1e9), [f"g{r}" for r in range(G)], links)


@pytest.mark.parametrize("engine", ENGINES)
def test_transfers_in_flight_together_hold_the_largest_share(engine):
    """4 ranks, 20 µs steps, each hop one link: a transfer takes 1 + 8 = 9 µs. Hop 0 → 1 is class
    "fast" (share 0.5), the others "slow" (0.1). Ranks 0 and 1 each have a fast and a slow transfer
    in flight at once: they hold 0.5 (not 0.6), 4.5 µs more per step with transfers; ranks 2 and 3
    0.9 µs. Worked by hand from the first pass (every step 20 µs, transfers at its first 9 µs):
    ranks 0, 1 step starts 0, 24.5, 49, 73.5, end 93.5; ranks 2, 3: 0, 20.9, 41.8, 62.7, end 82.7
    (their receives, late-posted by the slow ranks, end before their compute does)."""
    res = _run(4, [[20] * 4] * 4, {"fast": 0.5, "slow": 0.1}, _ring_of_classes(["fast", "slow", "slow", "slow"]),
               engine=engine)
    want = []
    for r in range(4):
        t, dur = 0.0, (24.5 if r < 2 else 20.9)
        for s in range(4):
            d = dur if s < 3 else 20.0
            want.append((r, s, round(t, 9), round(t + d, 9)))
            t += d
    assert _compute_rows(res) == want
    assert res.layer_makespan_s == pytest.approx(93.5 * US, rel=1e-12)


def test_the_roofline_and_a_device_without_figures_leave_compute_alone():
    """`--kernels roofline` keeps the old behaviour; a preset's kernel-profile model takes the
    NCCL share from its device (dgx-h100-8: 32 of 132 SMs over NVLink)."""
    from ringsim.costs.kernels import resolve_kernels
    from ringsim.engines import simulate_program
    from ringsim.strategies import parse_strategy
    from ringsim.topoload import load_topology
    from ringsim.workload import get_model

    topo = load_topology("dgx-h100-8")
    assert topo.device.p2p_sm_share() == {"nvlink": pytest.approx(32 / 132)}
    wl = Workload(get_model("llama3-8b"), 128 * 1024, 1, "bf16")
    prog = parse_strategy("zigzag").build(wl, 8, "causal", "fwd")
    base = simulate_program(prog, wl, topo, RooflineCost())
    assert "nccl_compute_slowdown_s" not in base.timeline.meta
    prof = simulate_program(prog, wl, topo, resolve_kernels(None, topo))
    assert prof.timeline.meta["nccl_sm_share"] == {"nvlink": pytest.approx(32 / 132)}
    assert prof.timeline.meta["nccl_compute_slowdown_s"] > 0
    # every rank's compute grew by at most its share of the time its transfers were in flight
    from ringsim.costs import CostContext

    cost = resolve_kernels(None, topo)
    c0 = cost.step_seconds(CostContext(prog, wl, cost.apply_to_topology(topo, prog)))
    grew = prof.compute_s - c0
    assert (grew >= -1e-15).all() and (grew <= 32 / 132 * c0 + 1e-15).all()


@pytest.mark.parametrize("device, why", [
    ({"p2p_sms": {"nvlink": 8}}, "needs device.sms"),
    ({"sms": 100, "p2p_sms": {"nvlink": 200}}, r"SM counts in \[0, 100\]"),
    ({"sms": 0}, "positive integer"),
])
def test_bad_sm_figures_are_refused(tmp_path, device, why):
    import yaml

    from ringsim.topoload import load_topology

    doc = {"name": "t", "device": {"name": "x", "peak_flops": "1 TFLOP/s", "efficiency": 0.5, "memory": "1 GB",
                                   **device},
           "dimensions": [{"topology": "switch", "size": 2, "bandwidth": "1 GB/s", "latency": "1 us",
                           "link_class": "nvlink"}]}
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match=why):
        load_topology(str(p))



def test_the_table_says_what_the_nccl_kernels_took(capsys):
    """`ringsim compare` on a GPU preset names the SM share and how much each strategy's compute grew."""
    from ringsim.cli import main

    with pytest.raises(SystemExit) as e:
        main(["compare", "--topology", "dgx-h100-8", "--seq-len", "128K", "--strategies", "zigzag,ulysses"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "NCCL send/recv kernels hold 24% of the SMs over nvlink while in flight" in text
    assert "zigzag +" in text and "ulysses +0 ns" in text  # Ulysses' all-to-alls overlap no compute
