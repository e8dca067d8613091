"""Jobs of many CP groups on one fabric (ringsim.job): composition, placement, symmetry, contention.

Hand-computed timelines on a tiny machine, the 1,024-GPU acceptance case against a hand calculation
of what a 4:1 fat-tree costs, and results with and without the symmetry reduction identical to
1e-12 on jobs where it applies, partly applies and does not apply.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ringsim.costs import CostContext, RooflineCost
from ringsim.engines import Knobs, simulate_program
from ringsim.job import (build_job, components, job_topology, node_groups, place_job, run_job, simulate_job,
                         tp_workload)
from ringsim.program import compose_programs, unit_messages
from ringsim.simulate import SimSpec
from ringsim.strategies import parse_strategy
from ringsim.topoload import load_topology
from ringsim.units import InputError
from ringsim.workload import ModelSpec, Workload, get_model
from test_cli_foundation import run

TINY = str(Path(__file__).parent / "data" / "tiny-2node.yaml")
TOY = ModelSpec("toy", 1, 1, 1, 64)


def tiny_spec(n_tokens_per_rank=128, world_size=None, topology=None):
    topo = topology or load_topology(TINY)
    return SimSpec(workload=Workload(TOY, 2 * n_tokens_per_rank, dtype="fp32"), topology=topo,
                   schedule="contiguous", mask="full", phase="fwd", world_size=world_size)


# ---- composition --------------------------------------------------------------------------------------

def test_composed_rings_equal_each_ring_alone_where_they_share_no_link():
    """Two 2-rank rings on the tiny machine's two nodes (one per node switch): nothing shared, so
    the composed program's numbers are each ring's own, message by message."""
    spec = tiny_spec()
    ring = parse_strategy("contiguous").build(spec.workload, 2, "full", "fwd")
    maps = [np.array([0, 1]), np.array([2, 3])]
    job = compose_programs([ring, ring], maps, 4)
    assert job.world_size == 4 and job.plan is ring.plan
    topo = spec.topology
    both = simulate_program(job, spec.workload, topo, engine="des")
    for m in maps:
        alone = simulate_program(ring, spec.workload, topo.with_placement([topo.gpus[int(r)] for r in m]), engine="des")
        assert np.array_equal(both.arrays.step_start_s[:, m], alone.arrays.step_start_s)
        ids = unit_messages(both.program.flat, m)
        assert np.array_equal(both.arrays.msg_end_s[ids], alone.arrays.msg_end_s)
        # kv owners are global ranks
        assert set(job.flat.kv_owner[:, m].ravel()) == set(m.tolist())


def test_composed_ring_flash_attn_rings_keep_the_slice_overhead():
    """A job of ring-flash-attn zigzag groups prices each group's calls as the group alone does,
    slice overhead included (the kernel-profile model); groups of the two implementations do not
    compose (their calls are priced differently)."""
    from ringsim.costs import resolve_kernels
    from ringsim.strategies.ring import SLICE_OVERHEAD

    topo = load_topology("dgx-h100-8")
    wl = Workload(ModelSpec("bench", 1, 32, 8, 128), 4 * 8192, 1, "bf16")
    cost = resolve_kernels("fa2", topo)
    rfa = parse_strategy("zigzag", "ring-flash-attn").build(wl, 4, "causal", "fwd+bwd")
    maps = [np.array([0, 2, 4, 6]), np.array([1, 3, 5, 7])]
    job = compose_programs([rfa, rfa], maps, 8)
    for st in job.stages:
        for op in st.ops:
            if hasattr(op, "slice_overhead"):
                assert op.slice_overhead == SLICE_OVERHEAD["ring-flash-attn"] > 0
    steps_job = cost.step_seconds(CostContext(job, wl, topo))
    steps_one = cost.step_seconds(CostContext(rfa, wl, topo))
    for m in maps:
        np.testing.assert_allclose(steps_job[:, m], steps_one, rtol=1e-12)
    # forward programs of the two implementations have the same stages; only the overhead tells them apart
    fwd = [parse_strategy("zigzag", impl).build(wl, 4, "causal", "fwd") for impl in ("ring-flash-attn", "ringsim")]
    compose_programs([fwd[0], fwd[0]], maps, 8)
    with pytest.raises(ValueError, match="different stage structure"):
        compose_programs(fwd, maps, 8)


def test_compose_refuses_shared_ranks_and_different_structures():
    wl = Workload(TOY, 8, dtype="fp32")
    ring = parse_strategy("contiguous").build(wl, 2, "full", "fwd")
    other = parse_strategy("contiguous").build(wl, 2, "full", "fwd+bwd")
    with pytest.raises(ValueError, match="share a rank"):
        compose_programs([ring, ring], [[0, 1], [1, 2]], 4)
    with pytest.raises(ValueError, match="different stage structure"):
        compose_programs([ring, other], [[0, 1], [2, 3]], 4)
    with pytest.raises(ValueError, match="outside"):
        compose_programs([ring], [[0, 4]], 4)
    # idle ranks get an empty call and no messages
    job = compose_programs([ring], [[1, 3]], 4)
    assert (job.flat.pairs[:, [0, 2]] == 0).all() and set(job.flat.src) | set(job.flat.dst) == {1, 3}


# ---- hand-computed contention between groups --------------------------------------------------------------

def test_two_groups_share_the_inter_node_link_by_hand():
    """tiny-2node: g0, g1 on switch sw0, g2, g3 on sw1, the switches joined by one 10 GB/s, 1 µs link
    (NVLink 100 GB/s, 0 µs). Two CP groups of 2 placed across the nodes (g0,g2) and (g1,g3): each
    ring's step-0 K/V transfer of 2·128·64·4 = 65,536 bytes crosses sw0→sw1 (or back) together with
    the other group's, at 5 GB/s each. Compute per step = 128² pairs × 4·64 FLOP / 1e12 FLOP/s.

        transfer  = 1 µs + 65,536 B / 5 GB/s  = 14.1072 µs
        makespan  = transfer + compute of step 1 = 14.1072 + 4.194304 = 18.301504 µs

    One group alone (or the contiguous placement, which keeps each group in its node) does not
    share: 1 µs + 65,536 / 10 GB/s = 7.5536 µs, so 11.747904 µs alone."""
    compute = 128 * 128 * 4 * 64 / 1e12
    assert compute == pytest.approx(4.194304e-6, rel=1e-12)
    topo = load_topology(TINY).with_placement(["g0", "g2", "g1", "g3"])
    res = simulate_job(tiny_spec(topology=topo), cp=2, policy="placement", compare_placement=False)
    assert res["groups"] == 2 and res["placement"] == "placement"
    assert res["layer_makespan_s"] == pytest.approx(1e-6 + 65536 / 5e9 + compute, rel=1e-12)
    assert [g["layer_makespan_s"] for g in res["per_group"]] == pytest.approx([18.301504e-6] * 2, rel=1e-12)
    most = res["most_shared_link"]
    assert (most["src"], most["dst"], most["groups"], most["flows"]) in (("sw0", "sw1", 2, 2), ("sw1", "sw0", 2, 2))
    assert res["links_shared_by_groups"] == 2  # the inter-node link, both directions
    assert res["symmetry"]["used"] is False and res["symmetry"]["components"] == 1
    alone = simulate_job(tiny_spec(topology=topo, world_size=2), cp=2, compare_placement=False)
    assert alone["groups"] == 1 and alone["layer_makespan_s"] == pytest.approx(11.747904e-6, rel=1e-12)
    contiguous = simulate_job(tiny_spec(), cp=2, compare_placement=False)
    assert contiguous["links_shared_by_groups"] == 0
    # within a node the transfer (65,536 B / 100 GB/s = 0.65536 µs) hides behind step 0's compute
    assert contiguous["layer_makespan_s"] == pytest.approx(2 * compute, rel=1e-12)


# ---- placement ------------------------------------------------------------------------------------------

def test_placement_policies_by_hand():
    topo = load_topology("dgx-h100-4n")  # 4 nodes × 8 GPUs
    c = place_job(topo, cp=4)
    assert c.dp == 8 and list(c.gpus[:5]) == ["n0.g0", "n0.g1", "n0.g2", "n0.g3", "n0.g4"]
    r = place_job(topo, cp=4, policy="rail-aligned")
    assert r.dp == 8
    assert [r.gpus[int(x)] for x in r.unit_ranks(0, 0)] == ["n0.g0", "n1.g0", "n2.g0", "n3.g0"]
    assert [r.gpus[int(x)] for x in r.unit_ranks(5, 0)] == ["n0.g5", "n1.g5", "n2.g5", "n3.g5"]
    t = place_job(topo, cp=2, tp=4, policy="rail-aligned")  # 2 slots of 4 GPUs per node, 2 node blocks
    assert t.dp == 4
    assert [t.gpus[int(x)] for x in t.unit_ranks(1, 2)] == ["n0.g6", "n1.g6"]
    assert [t.gpus[int(x)] for x in t.unit_ranks(2, 0)] == ["n2.g0", "n3.g0"]
    assert sorted(t.gpus) == sorted(topo.gpus)  # every GPU once
    assert [len(n) for n in node_groups(topo)] == [8] * 4
    for kw, msg in ((dict(cp=8, policy="rail-aligned"), "needs 8 nodes"),
                    (dict(cp=3), "not a multiple"),
                    (dict(cp=2, tp=3, dp=4), "does not divide"),
                    (dict(cp=4, dp=9), "needs dp × cp × tp = 36 GPUs"),
                    (dict(cp=4, policy="ring"), "unknown placement policy")):
        with pytest.raises(InputError, match=msg):
            place_job(topo, **kw)


def test_tp_shards_the_heads():
    wl = Workload(get_model("llama3-8b"), 1024)  # 32 heads, 8 K/V heads
    assert (tp_workload(wl, 4).model.heads, tp_workload(wl, 4).model.kv_heads) == (8, 2)
    assert tp_workload(wl, 16).model.kv_heads == 1  # fewer K/V heads than TP ranks: replicated
    assert tp_workload(wl, 4).shard_bytes(100) * 4 == wl.shard_bytes(100)
    with pytest.raises(InputError, match="query heads"):
        tp_workload(wl, 3)


def test_tp_rings_take_their_share_of_nvlink():
    """TP=2 on dgx-h100-2n with cp 8 contiguous: each CP rank is 2 GPUs of a node, so each group's
    two TP rings move half the K/V each, over NVLink left at half bandwidth by TP's share."""
    spec = SimSpec(workload=Workload(get_model("llama3-8b"), 64 * 1024), topology=load_topology("dgx-h100-2n"),
                   schedule="zigzag", phase="fwd")
    res = simulate_job(spec, cp=8, tp=2, compare_placement=False, keep_run=True)
    run_, layout, program, topo = res.pop("_run")
    assert res["dp"] == 1 and res["tp_nvlink_share"] == 0.5 and len(run_.T) == 2
    assert {l.bandwidth_Bps for l in topo.links if l.link_class == "nvlink"} == {225e9}
    wl = tp_workload(spec.workload, 2)
    assert program.flat.bytes.max() == wl.shard_bytes(64 * 1024 // 8)


# ---- the acceptance case: 1,024 GPUs, 64 groups, a 4:1 fat-tree ------------------------------------------

ACCEPT = ["simulate", "--model", "llama3-8b", "--seq-len", "1M", "--cp-degree", "16", "--schedule", "zigzag",
          "--phase", "fwd+bwd", "--kernels", "roofline", "--format", "json"]  # the hand calculation prices the roofline


def _job(topology, *extra):
    code, out, err = run(*ACCEPT, "--topology", topology, *extra)
    assert code == 0, err
    return json.loads(out)["results"][0]


def test_oversubscribed_fat_tree_slows_the_job_by_the_hand_calculation():
    """llama3-8b, 1M tokens, CP 16 (65,536 tokens per rank), zigzag, fwd+bwd, 64 groups, contiguous.

    Per rank and step (every rank the same under zigzag) the roofline compute is c_n; a step's K/V
    (268,435,456 B) or K/V + dK/dV (805,306,368 B) moves during it. A group fills two nodes; its two
    node-crossing hops (g7 → g0 of the next node) are cross-rail.

    - dgx-h100-128n: the hop goes over rail 7 and NVLink (PXN): 50 GB/s, 4.2 µs, no other hop on it.
    - 4:1 fat-tree: it leaves through g7's NIC to the rail-7 leaf, up to the spine, down to the rail-0
      leaf. The rail-7 leaf of an SU (32 nodes: 16 groups) sends 32 such hops at once through one
      32 × 50 / 4 = 400 GB/s uplink: 12.5 GB/s each; latency 4 × 0.6 = 2.4 µs.

    Forward: 268 MB / 12.5 GB/s = 21.5 ms < 47.4 ms of compute; backward: 805 MB / 12.5 GB/s = 64.4
    ms < 118.6 ms: hidden on both fabrics. Only the last step, the dK/dV return (536,870,912 B, no
    compute), is exposed. So per layer

        makespan = Σ_n c_n + latency + 536,870,912 B / rate

    and the 4:1 preset slows the job by (Σc + 2.4 µs + 536,870,912 / 12.5e9) / (Σc + 4.2 µs +
    536,870,912 / 50e9). Rail-aligned placement keeps every hop on one rail leaf: no spine, no slowdown."""
    base = _job("dgx-h100-128n")
    over = _job("dgx-h100-128n-fattree-4to1")
    # the hand calculation
    wl = Workload(get_model("llama3-8b"), 1 << 20)
    unit = parse_strategy("zigzag").build(wl, 16, "causal", "fwd+bwd")
    c = RooflineCost().step_seconds(CostContext(unit, wl, load_topology("dgx-h100-128n")))
    assert np.ptp(c, axis=1).max() == 0.0  # every rank computes the same at each step
    sum_c = float(c[:, 0].sum())
    kv, dkv = wl.shard_bytes(65536), wl.grad_shard_bytes(65536)
    assert (kv, dkv) == (268435456, 536870912)
    fwd_c, bwd_c = float(c[1, 0]), float(c[17, 0])
    assert kv / 12.5e9 < fwd_c and (kv + dkv) / 12.5e9 < bwd_c  # hidden even at 12.5 GB/s
    layer_base = sum_c + 4.2e-6 + dkv / 50e9
    layer_over = sum_c + 2.4e-6 + dkv / 12.5e9
    for r in (base, over):
        assert r["groups"] == 64 and r["world_size"] == 1024 and r["dp"] == 64 and r["cp_degree"] == 16
        assert len(r["per_group"]) == 64 and r["slowest_group"]["group"] in range(64)
        assert r["makespan_s"] == pytest.approx(max(g["makespan_s"] for g in r["per_group"]), rel=1e-15)
    assert base["layer_makespan_s"] == pytest.approx(layer_base, rel=1e-9)
    assert over["layer_makespan_s"] == pytest.approx(layer_over, rel=1e-9)
    assert over["makespan_s"] / base["makespan_s"] == pytest.approx(layer_over / layer_base, rel=1e-9)
    assert over["makespan_s"] == pytest.approx(32 * layer_over, rel=1e-9)
    # where the groups meet: the rail leaves' spine links, 16 groups and 32 flows each
    most = over["most_shared_link"]
    assert (most["groups"], most["flows"], most["bandwidth_Bps"]) == (16, 32, 400e9)
    assert "spine1" in (most["src"], most["dst"])
    assert over["links_shared_by_groups"] == 8  # 4 SUs × (rail-7 leaf up, rail-0 leaf down)
    assert base["links_shared_by_groups"] == 0 and base["most_shared_link"]["groups"] == 1
    # symmetry: 4 SUs alike on the fat-tree (one simulated), 64 groups alike on the rail switches
    assert over["symmetry"]["used"] and over["symmetry"]["simulated_units"] == 16
    assert base["symmetry"]["used"] and base["symmetry"]["simulated_units"] == 1
    # another placement: rail-aligned keeps every hop on its rail leaf
    alt = over["other_placement"]
    assert alt["placement"] == "rail-aligned" and alt["links_shared_by_groups"] == 0
    assert alt["layer_makespan_s"] == pytest.approx(sum_c + 2 * 0.6e-6 + dkv / 50e9, rel=1e-9)


def test_two_to_one_halves_the_exposed_return():
    r = _job("dgx-h100-128n-fattree-2to1", "--no-symmetry")
    wl = Workload(get_model("llama3-8b"), 1 << 20)
    unit = parse_strategy("zigzag").build(wl, 16, "causal", "fwd+bwd")
    c = RooflineCost().step_seconds(CostContext(unit, wl, load_topology("dgx-h100-128n")))
    assert r["layer_makespan_s"] == pytest.approx(float(c[:, 0].sum()) + 2.4e-6 + wl.grad_shard_bytes(65536) / 25e9,
                                                  rel=1e-9)
    assert r["symmetry"]["used"] is False and r["most_shared_link"]["bandwidth_Bps"] == 800e9


# ---- symmetry: identical with and without -------------------------------------------------------------------

def _runs(spec, cp, **kw):
    out = []
    for sym in (True, False):
        res = simulate_job(spec, cp, symmetry=sym, compare_placement=False, keep_run=True, **kw)
        out.append((res, res.pop("_run")[0]))
    return out


def _assert_identical(a, b):
    (ra, ja), (rb, jb) = a, b
    assert ja.symmetry["units"] == jb.symmetry["units"]
    for xs, ys in ((ja.T, jb.T), (ja.E, jb.E), (ja.XS, jb.XS), (ja.XE, jb.XE)):
        for x, y in zip(xs, ys):
            assert x.shape == y.shape
            assert np.allclose(x, y, rtol=1e-12, atol=0.0)
    assert ja.link_bytes.keys() == jb.link_bytes.keys()
    for k in ja.link_bytes:
        assert ja.link_bytes[k] == pytest.approx(jb.link_bytes[k], rel=1e-12)
        assert ja.link_busy_s[k] == pytest.approx(jb.link_busy_s[k], rel=1e-12, abs=1e-18)
    assert [g["makespan_s"] for g in ra["per_group"]] == pytest.approx([g["makespan_s"] for g in rb["per_group"]],
                                                                       rel=1e-12)
    for key in ("makespan_s", "links_shared_by_groups", "most_shared_link", "shared_links"):
        assert ra[key] == (pytest.approx(rb[key], rel=1e-12) if key == "makespan_s" else rb[key])


@pytest.mark.parametrize("topology,cp,kw,used", [
    ("dgx-h100-128n-fattree-4to1", 16, {}, True),              # 4 SUs alike
    ("dgx-h100-128n-fattree-4to1", 8, {"policy": "rail-aligned"}, True),
    ("dgx-h100-16n", 8, {"tp": 2}, True),                      # TP rings, every group alone
    ("dgx-h100-4n", 32, {}, False),                            # one group: nothing to reduce
])
def test_symmetry_reduction_changes_nothing(topology, cp, kw, used):
    spec = SimSpec(workload=Workload(get_model("llama3-8b"), 128 * 1024), topology=load_topology(topology),
                   schedule="zigzag", phase="fwd+bwd")
    a, b = _runs(spec, cp, **kw)
    assert a[1].symmetry["used"] is used and b[1].symmetry["used"] is False
    if used:
        assert a[1].symmetry["simulated_units"] < a[1].symmetry["units"]
    _assert_identical(a, b)


def test_a_straggler_breaks_its_class_and_nothing_else():
    """A slow GPU in SU 1 makes that SU's component differ (its compute times do): it is simulated
    itself, the three other SUs once; results equal the full run."""
    topo = load_topology("dgx-h100-128n-fattree-4to1").with_slow_rank(300, 0.1)
    spec = SimSpec(workload=Workload(get_model("llama3-8b"), 128 * 1024), topology=topo, schedule="zigzag",
                   phase="fwd+bwd")
    a, b = _runs(spec, 16)
    assert a[1].symmetry["used"] and a[1].symmetry["classes"] == 2 and a[1].symmetry["simulated_units"] == 32
    _assert_identical(a, b)
    per = [g["makespan_s"] for g in a[0]["per_group"]]
    assert a[0]["slowest_group"]["group"] == 300 // 16 and max(per) > min(per)


def test_components_by_shared_links():
    assert components([[(1, 2)], [(3,)], [(2, 5)], [(5,), (7,)], [(9,)]]) == [[0, 2, 3], [1], [4]]


# ---- the command line ---------------------------------------------------------------------------------------

def test_job_cli_table_and_errors():
    code, out, err = run("simulate", "--topology", "dgx-h100-4n", "--seq-len", "64K", "--cp-degree", "4")
    assert code == 0, err
    assert "8 CP groups" in out and "slowest group" in out and "placement rail-aligned instead" in out
    code, out, err = run("simulate", "--topology", "dgx-h100-4n", "--seq-len", "64K", "--cp-degree", "8")
    assert code == 0 and "placement rail-aligned: not applicable (rail-aligned placement puts each CP rank" in out
    code, out, err = run("simulate", "--topology", "dgx-h100-4n", "--seq-len", "64K", "--cp-degree", "8",
                         "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("topology,schedule,placement,group") and len(out.splitlines()) == 5
    for args, msg in ((["--tp", "2"], "add --cp-degree"),
                      (["--cp-degree", "3"], "not a multiple"),
                      (["--cp-degree", "8", "--placement", "n0.g0,n0.g1", "--placement-policy", "rail-aligned"],
                       "drop --placement-policy"),
                      (["--cp-degree", "8", "--tp-nvlink-share", "1.5"], "in [0, 1)"),
                      (["--cp-degree", "8", "--trace", "x.json"], "--trace")):
        code, out, err = run("simulate", "--topology", "dgx-h100-4n", "--seq-len", "64K", *args)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, (args, err)
        assert out == ""


def test_fat_tree_dimension_validation(tmp_path):
    base = ("device: {name: X, peak_flops: 1e12, efficiency: 1.0, memory: '1 GB'}\n"
            "dimensions:\n  - {topology: switch, size: 2, bandwidth: '10 GB/s', latency: '1 us'}\n")
    for dim, msg in (("{topology: fat-tree, size: 4, leaf_size: 3, bandwidth: '1 GB/s', latency: '1 us'}", "leaf_size"),
                     ("{topology: fat-tree, size: 4, leaf_size: 2, oversubscription: 0, bandwidth: '1 GB/s', "
                      "latency: '1 us'}", "oversubscription"),
                     ("{topology: switch, size: 4, leaf_size: 2, bandwidth: '1 GB/s', latency: '1 us'}",
                      "only a fat-tree")):
        p = tmp_path / "t.yaml"
        p.write_text(base + f"  - {dim}\n")
        with pytest.raises(InputError, match=msg):
            load_topology(str(p))
    p = tmp_path / "ok.yaml"
    p.write_text(base + "  - {topology: fat-tree, size: 4, leaf_size: 2, oversubscription: 2, bandwidth: '1 GB/s', "
                 "latency: '1 us'}\ngpu_transit: false\n")
    t = load_topology(str(p))
    ups = [l for l in t.links if l.dst == "spine1"]
    assert len(ups) == 4 and {l.bandwidth_Bps for l in ups} == {1e9}  # 2 members × 1 GB/s / 2
    # n0.g1 → n3.g0: through g1's leaf and the spine, never through n0.g0 (gpu_transit: false)
    path = [t.links[i].src for i in t.route(1, 6)] + [t.links[t.route(1, 6)[-1]].dst]
    assert path == ["n0.g1", "sw1:n*.g1/leaf0", "spine1", "sw1:n*.g0/leaf1", "n3.g0"]
