"""Packed documents through the whole pipeline: the plan the ring builds on, the simulator, the
CLI, the report and the real runtime (document-aware masks, `--check`)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ringsim.documents import DocumentPlan
from ringsim.engines import simulate_program
from ringsim.schedules import Plan
from ringsim.strategies import build_ring, parse_strategy
from ringsim.topoload import load_topology
from ringsim.units import InputError
from ringsim.workload import ModelSpec, Workload

WL = ModelSpec("m", 1, 4, 4, 64)


def _brute_blocks(plan: DocumentPlan):
    """Every (rank, step) block's allowed pairs and trimmed rows/columns, from a dense mask."""
    T = plan.seq_len
    pos = np.arange(T)
    doc = plan.layout.document_of(pos)
    lo, hi = plan.mask.bounds(T)
    d = pos[:, None] - pos[None, :]
    M = (d >= lo) & (d <= hi) & (doc[:, None] == doc[None, :]) & (doc[:, None] >= 0)
    G = plan.world_size
    out = {}
    for r in range(G):
        for s in range(G):
            B = M[np.ix_(plan.tokens(r), plan.tokens((r - s) % G))]
            rows, cols = np.nonzero(B.any(axis=1))[0], np.nonzero(B.any(axis=0))[0]
            out[(r, s)] = (int(B.sum()), (rows.min(), rows.max() + 1) if len(rows) else None,
                           (cols.min(), cols.max() + 1) if len(cols) else None)
    return out


@pytest.mark.parametrize("layout", ["contiguous", "striped", "zigzag", "zigzag-doc", "balanced:2"])
@pytest.mark.parametrize("mask", ["causal", "full", "sliding:5"])
def test_document_plan_calls_match_a_dense_mask(layout, mask):
    docs = [7, 30, 3, 1, 19]  # 60 tokens, documents shorter than a chunk, a one-token document
    plan = DocumentPlan(layout, docs, 3, mask)
    shapes, ids = plan.call_shapes
    brute = _brute_blocks(plan)
    for (r, s), (pairs, rows, cols) in brute.items():
        b = shapes.block(int(ids[r, s]))
        assert b.pairs == pairs == plan.pairs[r, s]
        if pairs:
            assert (b.r0, b.r1) == rows and (b.c0, b.c1) == cols
            if b.kind == "masked":  # the mask made on demand is the dense one, trimmed
                T = plan.seq_len
                pos = np.arange(T)
                q, k = plan.tokens(r)[b.r0:b.r1], plan.tokens((r - s) % 3)[b.c0:b.c1]
                doc = plan.layout.document_of
                lo, hi = plan.mask.bounds(T)
                dd = q[:, None] - k[None, :]
                want = (dd >= lo) & (dd <= hi) & (doc(q)[:, None] == doc(k)[None, :]) & (doc(q)[:, None] >= 0)
                assert np.array_equal(b.mask, want)
        else:
            assert b.kind == "empty"


def test_one_document_is_the_plain_ring():
    """A pack of one document gives today's numbers: pairs, bytes and the simulated makespan."""
    T, G = 4096, 4
    wl = Workload(WL, T, dtype="fp32")
    topo = load_topology("localhost-cpu")
    for layout in ("contiguous", "striped", "zigzag"):
        plain = parse_strategy(layout).build(wl, G, "causal", "fwd+bwd")
        packed = parse_strategy(layout, documents=[T]).build(wl, G, "causal", "fwd+bwd")
        assert np.array_equal(plain.plan.pairs, packed.plan.pairs)
        assert plain.bytes_by_step() == packed.bytes_by_step()
        a = simulate_program(plain, wl, topo)
        b = simulate_program(packed, wl, topo)
        assert a.layer_makespan_s == pytest.approx(b.layer_makespan_s, rel=1e-12)


def test_documents_change_the_balance_and_padding_moves_bytes():
    wl = Workload(WL, 4096, dtype="fp32")
    docs = [1000, 2000, 1096]
    zz = build_ring(DocumentPlan("zigzag", docs, 2, "causal"), wl)
    zd = build_ring(DocumentPlan("zigzag-doc", docs, 2, "causal"), wl)
    # zigzag over the pack is unbalanced; zigzag-doc splits every document and balances it
    assert zz.plan.imbalance() > 1.05 and zd.plan.imbalance() < zz.plan.imbalance()
    # a pack whose documents do not divide into 2G chunks is padded (padding tokens travel too)
    pad = DocumentPlan("zigzag-doc", [1001, 2000, 1095], 2, "causal")
    assert pad.seq_len > pad.real_seq_len == 4096 and pad.seq_len % 4 == 0
    assert build_ring(pad, wl).bytes_by_step()[("fwd", 0)] == 2 * wl.shard_bytes(pad.tokens_per_rank)
    with pytest.raises(InputError, match="documents hold 4095 tokens"):
        parse_strategy("zigzag", documents=[4095]).plan(wl, 2, "causal")
    with pytest.raises(InputError, match="needs|give --documents"):
        parse_strategy("zigzag-doc")


def test_cli_compare_plan_report_and_sweep_with_documents(tmp_path, capsys):
    from ringsim.cli import main

    with pytest.raises(SystemExit) as e:
        main(["compare", "--documents", "4K,60K,1000,1096", "--schedules", "zigzag,zigzag-doc,balanced,contiguous",
              "--topology", "dgx-h100-8", "--format", "json"])
    assert e.value.code == 0
    res = {r["schedule"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert set(res) == {"zigzag", "zigzag-doc", "balanced", "contiguous"}
    assert res["zigzag-doc"]["documents"]["documents"] == 4 and res["zigzag"]["seq_len"] == 67632
    assert res["zigzag-doc"]["makespan_s"] < res["contiguous"]["makespan_s"]
    rep = tmp_path / "imb.html"
    with pytest.raises(SystemExit) as e:
        main(["plan", "--world-size", "8", "--seq-len", "256K", "--documents", "lognormal:median=16K,sigma=1",
              "--samples", "20", "--report", str(rep), "--format", "json"])
    assert e.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert {r["layout"] for r in doc["layouts"]} >= {"zigzag", "zigzag-doc", "balanced"}
    page = rep.read_text()
    assert page.startswith("<!DOCTYPE html>") and '"type":"box"' in page and "zigzag-doc" in page
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--topology", "dgx-h100-8", "--seq-len", "64K", "--schedules", "zigzag,balanced",
              "--documents", "lognormal:median=4K,sigma=1", "--format", "json", "--jobs", "1"])
    assert e.value.code == 0
    rows = json.loads(capsys.readouterr().out)
    rows = rows["results"]
    assert len(rows) == 2 and all(r.get("error") is None for r in rows)


@pytest.mark.distributed
@pytest.mark.timeout(240)
def test_run_packed_documents_matches_full_attention(tmp_path):
    """The issue's command: zigzag-doc over a pack of three documents, fwd+bwd, checked against
    single-process attention with the same document mask (errors ≤ 1e-5); and with padding."""
    import subprocess
    import sys

    for docs, heads, dim in (("1000,2000,1096", "4", "64"), ("301,500,95", "2", "16")):  # the second is padded
        p = subprocess.run([sys.executable, "-c", "from ringsim.cli import main; main()", "run", "--world-size", "2",
                            "--schedule", "zigzag-doc", "--documents", docs, "--heads", heads,
                            "--head-dim", dim, "--phase", "fwd+bwd", "--check", "--repeat", "1", "--warmup", "0",
                            "--format", "json", "--timeout-s", "90"], capture_output=True, text=True, timeout=200)
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        check = out["check"]
        assert check["ok"] and all(r["max_abs_err_vs_fp64"] <= 1e-5 for r in check["errors"]), check
