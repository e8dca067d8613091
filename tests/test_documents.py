"""Packed documents: closed-form pair tables and per-rank work against brute force, layouts, specs, CLI."""
import json
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringsim.cli import main
from ringsim.documents import (LAYOUTS, count_band, imbalance, imbalance_distribution, make_layout, pair_table,
                               parse_documents, parse_layout, sample_packs, work_per_rank)
from ringsim.schedules import Plan, parse_mask
from ringsim.units import InputError

ALL_LAYOUTS = list(LAYOUTS) + ["balanced:1", "balanced:2", "balanced:3"]


def brute_pairs(layout, mask):
    """pairs[r, s] from a dense (padded_len × padded_len) document mask."""
    G, Tp = layout.world_size, layout.padded_len
    pos = np.arange(Tp)
    doc = layout.document_of(pos)
    lo, hi = parse_mask(mask).bounds(Tp)
    d = pos[:, None] - pos[None, :]
    allowed = (doc[:, None] == doc[None, :]) & (doc[:, None] >= 0) & (d >= lo) & (d <= hi)
    toks = [layout.tokens(r) for r in range(G)]
    out = np.zeros((G, G), dtype=np.int64)
    for r in range(G):
        for s in range(G):
            out[r, s] = allowed[np.ix_(toks[r], toks[(r - s) % G])].sum()
    return out


def doc_total(n, mask):
    """Allowed pairs of one document of n tokens, by formula."""
    m = parse_mask(mask)
    if m.kind == "full":
        return n * n
    if m.kind == "causal":
        return n * (n + 1) // 2
    W = min(m.window, n)
    return W * (W + 1) // 2 + (n - W) * W


def check_layout_invariants(layout):
    G = layout.world_size
    toks = [layout.tokens(r) for r in range(G)]
    assert all(len(t) == layout.tokens_per_rank for t in toks)  # equal shards
    assert all(np.all(np.diff(t) > 0) for t in toks)  # increasing local order
    assert sorted(np.concatenate(toks).tolist()) == list(range(layout.padded_len))  # a partition
    assert layout.padded_len % G == 0
    real = np.array([(layout.document_of(t) >= 0).sum() for t in toks])
    np.testing.assert_array_equal(layout.real_tokens_per_rank(), real)
    assert real.sum() == layout.seq_len


# ---- exact counting ---------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(n=st.integers(-2, 9), m=st.integers(-2, 9), delta=st.integers(-20, 20), lo=st.integers(-25, 25),
       width=st.integers(0, 30))
def test_count_band_brute_force(n, m, delta, lo, width):
    hi = lo + width
    expected = sum(lo <= delta + i - j <= hi for i in range(max(n, 0)) for j in range(max(m, 0)))
    assert int(count_band(n, m, delta, lo, hi)) == expected


masks = st.one_of(st.sampled_from(["causal", "full"]), st.integers(1, 70).map(lambda w: f"sliding:{w}"))
packs = st.lists(st.one_of(st.integers(1, 6), st.integers(1, 60)), min_size=1, max_size=8)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(G=st.sampled_from([1, 2, 3, 4, 8]), lengths=packs, mask=masks)
def test_pair_table_equals_brute_force(G, lengths, mask):
    for name in ALL_LAYOUTS:
        layout = make_layout(name, lengths, G, mask)
        check_layout_invariants(layout)
        pairs = pair_table(layout, mask)
        np.testing.assert_array_equal(pairs, brute_pairs(layout, mask), err_msg=f"{name} G={G} {lengths} {mask}")
        np.testing.assert_array_equal(work_per_rank(layout, mask), pairs.sum(axis=1))
        assert pairs.sum() == sum(doc_total(n, mask) for n in lengths)


@pytest.mark.parametrize("G", [1, 2, 3, 4, 8])
def test_documents_shorter_than_a_chunk(G):
    # a long document among many one- and two-token documents: most chunks hold several documents,
    # zigzag-doc pads every short one to 2G
    lengths = [1, 2, 1, 1, 37, 2, 1, 3, 1]
    for name in ALL_LAYOUTS:
        for mask in ("causal", "full", "sliding:2", "sliding:9"):
            layout = make_layout(name, lengths, G, mask)
            np.testing.assert_array_equal(pair_table(layout, mask), brute_pairs(layout, mask), err_msg=f"{name} {mask}")


@pytest.mark.parametrize("sched", ["contiguous", "striped", "zigzag"])
@pytest.mark.parametrize("G,T", [(1, 8), (2, 20), (3, 42), (4, 8 * 13), (8, 16 * 5), (8, 1 << 20)])
@pytest.mark.parametrize("mask", ["causal", "full", "sliding:1", "sliding:7", "sliding:1000"])
def test_one_document_gives_todays_plan(sched, G, T, mask):
    layout = make_layout(sched, [T], G)
    assert layout.pad_tokens == 0
    plan = Plan(sched, G, T, mask)
    np.testing.assert_array_equal(pair_table(layout, mask), plan.pairs)
    if T < 4096:
        for r in range(G):
            np.testing.assert_array_equal(layout.tokens(r), plan.tokens(r))


def test_hand_counted_contiguous_pack():
    # G=2, documents [2, 6], causal: rank 0 holds doc 0 (1+2) and doc 1's first two tokens (1+2);
    # rank 1 holds doc 1's tokens 2..5 (3+4+5+6)
    layout = make_layout("contiguous", [2, 6], 2)
    np.testing.assert_array_equal(work_per_rank(layout, "causal"), [6, 18])
    # rank 1 against rank 0's shard (step 1): doc 1 queries 2..5 see doc-1 keys 0, 1: 4 × 2
    np.testing.assert_array_equal(pair_table(layout, "causal"), [[6, 0], [10, 8]])
    assert imbalance(pair_table(layout, "causal")) == pytest.approx(1.5)


def test_zigzag_doc_pads_like_transformer_engine():
    G = 2  # every document padded to a multiple of 2G = 4, at its end
    layout = make_layout("zigzag-doc", [5, 8, 1], G)
    assert layout.padded_len == 8 + 8 + 4 and layout.pad_tokens == 3 + 0 + 3
    np.testing.assert_array_equal(layout.doc_starts, [0, 8, 16])
    np.testing.assert_array_equal(layout.doc_chunk_tokens, [2, 2, 1])
    # rank 0: chunks 0 and 3 of every document; rank 1: chunks 1 and 2
    np.testing.assert_array_equal(layout.tokens(0), [0, 1, 6, 7, 8, 9, 14, 15, 16, 19])
    np.testing.assert_array_equal(layout.tokens(1), [2, 3, 4, 5, 10, 11, 12, 13, 17, 18])
    np.testing.assert_array_equal(layout.segments(1), [[2, 1, 4], [10, 1, 4], [17, 1, 2]])
    # padding: rank 0 holds 6, 7 (doc 0) and 19 (doc 2); rank 1 holds 5 (doc 0) and 17, 18 (doc 2)
    np.testing.assert_array_equal(layout.real_tokens_per_rank(), [7, 7])


def test_zigzag_doc_hand_counted():
    # one document of 3 tokens on 2 ranks: padded to 4, chunks of one token; rank 0 holds {0, 3(pad)},
    # rank 1 holds {1, 2}. Causal: rank 0: (0,0). Rank 1: own shard (1,1), (2,1), (2,2); rank 0's: (1,0), (2,0)
    np.testing.assert_array_equal(pair_table(make_layout("zigzag-doc", [3], 2), "causal"), [[1, 0], [3, 2]])


def test_balanced_with_two_chunks_is_zigzag_for_one_document():
    for G in (2, 3, 8):
        T = 2 * G * 5
        bal = make_layout("balanced:2", [T], G)
        zz = make_layout("zigzag", [T], G)
        for r in range(G):
            np.testing.assert_array_equal(bal.tokens(r), zz.tokens(r))


def test_balanced_is_lpt_with_capacity():
    # 4 documents of 4 tokens in chunks of 2 on 2 ranks (balanced:4), causal: chunk works alternate
    # 1+2 = 3 (first half of a document) and 3+4 = 7. LPT gives each rank two 7s and two 3s.
    layout = make_layout("balanced:4", [4, 4, 4, 4], 2)
    np.testing.assert_array_equal(work_per_rank(layout, "causal"), [20, 20])


@pytest.mark.parametrize("mask", ["causal", "full", "sliding:300"])
@pytest.mark.parametrize("K", [1, 2, 8, 32])
def test_balanced_matches_a_reference_lpt(mask, K):
    rng = np.random.default_rng(K)
    lengths = rng.integers(1, 3000, 40)
    G = 8
    layout = make_layout(f"balanced:{K}", lengths, G, mask)
    # chunk works from per-position work: a query at offset t of a document of n tokens sees
    # n (full), t + 1 (causal) or min(t + 1, W) (sliding) keys
    per_pos = np.concatenate([{"full": np.full(n, n), "causal": np.arange(1, n + 1),
                               "sliding:300": np.minimum(np.arange(1, n + 1), 300)}[mask] for n in lengths])
    per_pos = np.concatenate([per_pos, np.zeros(layout.pad_tokens, dtype=np.int64)])
    works = per_pos.reshape(G * K, layout.chunk_tokens).sum(axis=1)
    load, held, owner = [0] * G, [0] * G, [None] * (G * K)
    for i in sorted(range(G * K), key=lambda i: (-works[i], i)):
        r = min((rk for rk in range(G) if held[rk] < K), key=lambda rk: (load[rk], rk))
        owner[i] = r
        load[r] += works[i]
        held[r] += 1
    assert layout.chunk_owner.tolist() == owner
    np.testing.assert_array_equal(work_per_rank(layout, mask), load)


def test_large_pack_methods_agree():
    """1024 ranks, 2,000 documents: the closed-form pair tables, summed by rows, equal the
    independent per-rank work, and the totals equal the per-document formula."""
    rng = np.random.default_rng(1)
    T, D, G = 1 << 20, 2000, 1024
    cuts = np.sort(rng.choice(np.arange(1, T), D - 1, replace=False))
    lengths = np.diff(np.concatenate([[0], cuts, [T]]))
    total = sum(doc_total(int(n), "causal") for n in lengths)
    for name in LAYOUTS:
        layout = make_layout(name, lengths, G)
        pairs = pair_table(layout, "causal")
        assert pairs.sum() == total, name
        np.testing.assert_array_equal(pairs.sum(axis=1), work_per_rank(layout, "causal"), err_msg=name)


# ---- specs ------------------------------------------------------------------------------------
def test_parse_explicit_forms(tmp_path):
    assert parse_documents("4K,60K,1000").lengths == (4096, 61440, 1000)
    assert parse_documents(" 7 ").lengths == (7,)
    assert parse_documents("[0, 4096, 10000]").lengths == (4096, 5904)
    f = tmp_path / "lengths.txt"
    f.write_text("# a pack\n4K\n\n1000  # short one\n12\n")
    assert parse_documents(str(f)).lengths == (4096, 1000, 12)
    j = tmp_path / "cu.json"
    j.write_text("[0, 3, 10]")
    assert parse_documents(str(j)).lengths == (3, 7)
    assert parse_documents("4K,60K", seq_len=4096 + 61440).kind == "lengths"


def test_parse_distributions(tmp_path):
    mean = parse_documents("lognormal:mean=8K,sigma=1.2")
    assert mean.kind == "lognormal" and mean.mean_tokens == pytest.approx(8192)
    assert mean.median_tokens == pytest.approx(8192 * np.exp(-1.2 ** 2 / 2))
    med = parse_documents("lognormal:median=16K,sigma=1")
    assert med.mu == pytest.approx(np.log(16384)) and med.sigma == 1
    assert parse_documents("LOGNORMAL:sigma=0.5,mean=1.5K").mean_tokens == pytest.approx(1536)
    f = tmp_path / "l.txt"
    f.write_text("10\n20\n20\n")
    emp = parse_documents(f"file:{f}")
    assert emp.kind == "empirical" and emp.lengths == (10, 20, 20) and emp.is_distribution


@pytest.mark.parametrize("text,msg", [
    ("", "empty"),
    ("4K,,x", "not a length list"),
    ("4K,0", "must be positive"),
    ("1.5K", "whole token counts"),
    ("[0, 5, 3]", "increase strictly"),
    ("[1, 5]", "start at 0"),
    ("[0, 5.5]", "integers only"),
    ("[0, 5", "not a valid JSON"),
    ("missing.txt", "does not exist"),
    ("file:missing.txt", "does not exist"),
    ("file:", "give a path"),
    ("uniform:a=1", "unknown distribution"),
    ("lognormal:mean=8K", "sigma= is missing"),
    ("lognormal:sigma=1", "exactly one of mean="),
    ("lognormal:mean=8K,median=8K,sigma=1", "exactly one of mean="),
    ("lognormal:mean=8K,sigma=x", "not a number"),
    ("lognormal:mean=8K,sigma=-1", "sigma must be in"),
    ("lognormal:mean=0,sigma=1", "must be positive"),
    ("lognormal:mean=8K,sigma=1,shape=2", "not mean=, median= or sigma="),
])
def test_parse_errors(text, msg):
    with pytest.raises(InputError, match=msg) as e:
        parse_documents(text)
    assert "\n" not in str(e.value)


def test_parse_file_errors(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_text("100\nabc\n")
    with pytest.raises(InputError, match="line 2"):
        parse_documents(str(f))
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(InputError, match="lists no lengths"):
        parse_documents(str(tmp_path / "empty.txt"))
    with pytest.raises(InputError, match="sum to 5 tokens but the sequence length is 6"):
        parse_documents("2,3", seq_len=6)


def test_make_layout_errors():
    for kw, msg in (({"chunks_per_rank": 0}, "1 to 256"), ({"world_size": 0}, "positive")):
        args = {"name": "balanced", "doc_lengths": [8], "world_size": 2, **kw}
        with pytest.raises(InputError, match=msg):
            make_layout(**args)
    with pytest.raises(InputError, match="positive"):
        make_layout("zigzag", [4, 0], 2)
    with pytest.raises(InputError, match="at least one document"):
        make_layout("zigzag", [], 2)


def test_parse_layout():
    assert parse_layout("Zigzag-Doc") == ("zigzag-doc", None)
    assert parse_layout("balanced:16") == ("balanced", 16)
    for bad, msg in (("ring", "unknown layout"), ("zigzag:2", "takes no parameter"), ("balanced:0", "1 to 256")):
        with pytest.raises(InputError, match=msg):
            parse_layout(bad)


def test_sample_packs():
    spec = parse_documents("lognormal:mean=4K,sigma=1")
    a = sample_packs(spec, 100_000, 20, seed=3)
    assert all(p.sum() == 100_000 and p.min() >= 1 for p in a)
    b = sample_packs(spec, 100_000, 5, seed=3)
    for x, y in zip(a, b):  # pack i depends on (seed, i) only
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], sample_packs(spec, 100_000, 1, seed=4)[0])
    with pytest.raises(InputError, match="describe one pack"):
        sample_packs(parse_documents("4K"), 4096, 2)
    with pytest.raises(InputError, match="positive"):
        sample_packs(spec, 4096, 0)


@pytest.mark.parametrize("key,stat", [("mean", np.mean), ("median", np.median)])
def test_lognormal_parameters_mean_what_they_say(key, stat):
    packs = sample_packs(parse_documents(f"lognormal:{key}=16K,sigma=1"), 1 << 20, 200, seed=0)
    drawn = np.concatenate([p[:-1] for p in packs])  # all but the cut last document
    assert stat(drawn) == pytest.approx(16384, rel=0.05)


def test_empirical_draws_only_listed_lengths(tmp_path):
    f = tmp_path / "l.txt"
    f.write_text("300\n700\n")
    packs = sample_packs(parse_documents(f"file:{f}"), 10_000, 10, seed=1)
    assert set(np.concatenate([p[:-1] for p in packs]).tolist()) <= {300, 700}


# ---- the imbalance distribution -------------------------------------------------------------------
def test_distribution_of_one_pack_matches_the_pair_table():
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, 300, 25)
    for mask in ("causal", "full", "sliding:50"):
        dist = imbalance_distribution([lengths], 4, mask, ALL_LAYOUTS)
        for row in dist["layouts"]:
            layout = make_layout(row["layout"], lengths, 4, mask)
            assert row["mean"] == pytest.approx(imbalance(pair_table(layout, mask)), rel=1e-12), row["layout"]
            assert row["padded_len_mean"] == layout.padded_len


def test_issue_example_imbalance_figures():
    """200 packs of 1M tokens, lognormal median 16K, σ = 1, 8 ranks (issue 16 quotes zigzag mean 2.04,
    p95 2.82, max 3.67; contiguous mean 2.27; striped 1.000)."""
    packs = sample_packs(parse_documents("lognormal:median=16K,sigma=1"), 1 << 20, 200, seed=0)
    rows = {r["layout"]: r for r in imbalance_distribution(packs, 8, "causal")["layouts"]}
    assert 1.8 < rows["zigzag"]["mean"] < 2.3 and 2.4 < rows["zigzag"]["p95"] < 3.2
    assert 2.0 < rows["contiguous"]["mean"] < 2.6
    assert rows["striped"]["max"] < 1.001
    assert rows["zigzag-doc"]["max"] < 1.01 and rows["balanced"]["p95"] < 1.1
    assert rows["contiguous"]["p50"] <= rows["contiguous"]["p95"] <= rows["contiguous"]["max"]


# ---- CLI ----------------------------------------------------------------------------------------------
def run(*args):
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def test_cli_imbalance_distribution_is_fast():
    t0 = time.perf_counter()
    code, out, err = run("plan", "--schedule", "zigzag", "--world-size", "8", "--seq-len", "1M", "--documents",
                         "lognormal:mean=16K,sigma=1", "--samples", "1000", "--seed", "0", "--format", "json")
    elapsed = time.perf_counter() - t0
    assert code == 0, err
    assert elapsed < 10
    doc = json.loads(out)
    rows = {r["layout"]: r for r in doc["layouts"]}
    assert list(rows) == ["zigzag", "zigzag-doc", "balanced"]
    assert doc["samples"] == 1000 and doc["documents"]["mean_tokens"] == pytest.approx(16384)
    assert rows["zigzag-doc"]["mean"] < rows["zigzag"]["mean"] and rows["balanced"]["mean"] < rows["zigzag"]["mean"]
    for r in rows.values():
        assert r["p50"] <= r["p95"] <= r["max"]


def test_cli_one_pack():
    code, out, err = run("plan", "--world-size", "2", "--schedule", "zigzag-doc", "--documents", "1000,2000,1096",
                         "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["layout"]["padded_len"] == 4096 and doc["imbalance"] == pytest.approx(1.0)
    assert doc["total_pairs"] == sum(n * (n + 1) // 2 for n in (1000, 2000, 1096))
    assert sum(r["pairs"] for r in doc["per_rank"]) == doc["total_pairs"]
    assert sum(s["pairs"] for s in doc["steps"]) == doc["total_pairs"]
    assert [r["layout"] for r in doc["layouts"]] == ["zigzag-doc", "balanced"]
    code, out, _ = run("plan", "--world-size", "4", "--documents", "lognormal:mean=4K,sigma=1", "--seq-len", "64K",
                       "--layouts", "all")
    assert code == 0 and "imbalance (max/mean work)" in out and "striped" in out
    code, out, _ = run("plan", "--world-size", "2", "--documents", "[0,100,300]", "--format", "csv")
    assert code == 0 and out.startswith("rank,step,owner,pairs")


@pytest.mark.parametrize("argv,msg", [
    (["--documents", "4K,60K", "--seq-len", "1M"], "sum to 65536 tokens"),
    (["--documents", "4K", "--samples", "3"], "lists one pack"),
    (["--samples", "3"], "needs --documents"),
    (["--schedule", "zigzag-doc"], "need --documents"),
    (["--documents", "4K", "--schedule", "ring"], "unknown layout"),
    (["--documents", "4K", "--layouts", "zigzag,,"], None),
    (["--documents", "4K", "--layouts", ","], "--layouts is empty"),
    (["--documents", "lognormal:mean=8K,sigma=1", "--samples", "0"], "positive"),
    (["--documents", "4K", "--world-size", "0"], "positive"),
])
def test_cli_errors(argv, msg):
    code, out, err = run("plan", *argv)
    if msg is None:
        assert code == 0
        return
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
