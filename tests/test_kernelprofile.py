"""Kernel profiles: the shipped profiles reproduce their tables, the model interpolates and
extrapolates as documented, bad files are one-line InputErrors, and `ringsim profile-kernels`
measures a loadable profile."""
import io
import math
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
import yaml

from ringsim.cli import main
from ringsim.kernelprofile import (FORMAT, KernelPoint, causal_pairs, dump_profile, load_profile, occupancy,
                                   profile_from_doc, profile_names)
from ringsim.units import InputError

SHIPPED = ["a100-80gb-fa2", "h100-sxm-cudnn", "h100-sxm-fa2", "h100-sxm-fa3", "h200-cudnn"]
SIZES = np.array([512, 1024, 2048, 4096, 8192, 16384])


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(argv))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def fa_tflops(prof, S, d, causal, phase):
    """TFLOP/s the model gives at the FA benchmark configuration (16K tokens, hidden 2048), counted
    as the FA papers count (causal = half of full)."""
    S = np.asarray(S, dtype=float)
    heads, batch = 2048 // d, 16384 / S
    t = prof.seconds(S, S, heads=heads, head_dim=d, causal=causal, phase=phase, batch=batch)
    factor = {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}[phase]
    flops = factor * 4 * batch * heads * d * S * S * (0.5 if causal else 1.0)
    return flops / t / 1e12


# ---- shipped profiles --------------------------------------------------------------------------------

def test_shipped_profiles_are_listed():
    assert profile_names() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_profile_reproduces_its_tables(name):
    prof = load_profile(name)
    rows = prof.check()
    assert rows and all(r["source"] in prof.sources for r in rows)
    for r in rows:
        tol = 1e-6 if r.get("role", "knot") == "knot" else 0.03
        assert abs(r["error"]) <= tol, r
    # every published (non-derived) table point of the reference is in the file: A100 Fig. 4 (24);
    # H100 FA2 Fig. 5 (24) + Fig. 6 (12) + Fig. 7 (24); FA3 Fig. 5 (36) + Fig. 6 (12); cuDNN 12 + 6; H200 20
    published = {"a100-80gb-fa2": 24, "h100-sxm-fa2": 60, "h100-sxm-fa3": 48, "h100-sxm-cudnn": 18, "h200-cudnn": 20}
    assert sum(1 for p in prof.points if not p.derived) == published[name]


def test_headline_numbers_through_the_public_api():
    # the reference's "numbers a model must reproduce", computed here from seconds() alone
    a100 = load_profile("a100-80gb-fa2")
    assert fa_tflops(a100, 8192, 128, True, "fwd+bwd") == pytest.approx(182, rel=0.03)
    assert fa_tflops(a100, 8192, 128, False, "fwd+bwd") == pytest.approx(201, rel=0.03)
    assert fa_tflops(a100, 2048, 128, True, "fwd+bwd") == pytest.approx(155, rel=0.03)
    assert fa_tflops(a100, 512, 128, True, "fwd+bwd") == pytest.approx(99, rel=0.03)
    fa3 = load_profile("h100-sxm-fa3")
    assert fa_tflops(fa3, 1024, 128, True, "fwd") == pytest.approx(423, rel=0.03)
    assert fa_tflops(fa3, 1024, 128, False, "fwd") == pytest.approx(565, rel=0.03)
    assert fa_tflops(fa3, 8192, 128, True, "fwd") == pytest.approx(602, rel=0.03)
    h200 = load_profile("h200-cudnn")  # exact pairs S(S+1)/2, 64 heads, batch 1
    S = 8192.0
    t = h200.seconds(S, S, heads=64, head_dim=128, causal=True, phase="bwd")
    assert 2.5 * 4 * 64 * 128 * S * (S + 1) / 2 / t / 1e12 == pytest.approx(541, rel=1e-6)


def test_flop_conventions_differ_by_the_diagonal():
    # FA papers count S²/2 for a causal square, cuDNN S(S+1)/2: the model must know which
    fa3 = load_profile("h100-sxm-fa3")
    assert fa3.sources["fa3-fig5-fa3"]["flop_convention"] == "causal-half"
    assert load_profile("h200-cudnn").sources["cudnn-h200-919"]["flop_convention"] == "exact-pairs"
    S = 512.0
    t = fa3.seconds(S, S, heads=16, head_dim=128, causal=True, phase="fwd", batch=32)
    exact = float(fa3.throughput_flops(S, S, heads=16, head_dim=128, causal=True, phase="fwd", batch=32))
    assert exact / 1e12 == pytest.approx(292 * (S + 1) / S, rel=1e-9)  # knot 292 in causal-half
    assert 4 * 32 * 16 * 128 * S * S / 2 / t / 1e12 == pytest.approx(292, rel=1e-9)


def test_derived_points_are_marked_and_cited():
    for name in SHIPPED:
        prof = load_profile(name)
        for p in prof.points:
            if p.derived:
                assert "derived" in prof.sources[p.source]["cite"]
    a100 = load_profile("a100-80gb-fa2")
    assert all(p.derived for p in a100.points if p.role == "knot")  # fwd and bwd split from fwd+bwd
    assert {p.phase for p in a100.points if not p.derived} == {"fwd+bwd"}
    fa3 = load_profile("h100-sxm-fa3")
    causal_bwd = [p for p in fa3.points if p.phase == "bwd" and p.causal]
    assert causal_bwd and all(p.derived for p in causal_bwd)
    assert not any(p.derived for p in load_profile("h200-cudnn").points)
    for name in SHIPPED:
        text = load_profile(name).notes
        assert "development set" in text and "Nothing from" in text


def test_shipped_files_match_their_generator():
    from ringsim.profiles.make_profiles import build_all, fit_wave_tail
    from importlib import resources

    for name, text in build_all().items():
        assert resources.files("ringsim.profiles").joinpath(name + ".yaml").read_text(encoding="utf-8") == text, \
            f"{name}.yaml is stale: run python profiles/make_profiles.py"
    c, _, err = fit_wave_tail()
    assert 1.0 < c < 1.5 and err < 0.02


def test_h100_fa2_sits_between_the_two_papers():
    # FA2 paper Fig. 7 runs up to 5.7 % above what the FA3 paper's Figs. 5-6 imply; the knots are
    # the geometric mean, so neither table is off by more than 2.9 %
    prof = load_profile("h100-sxm-fa2")
    errs = {src: max(abs(r["error"]) for r in prof.check() if r["source"] == src)
            for src in ("fa3-fig5-fa2", "fa3-fig6-fa2", "fa2-fig7")}
    assert all(0.01 < e < 0.029 for e in errs.values()), errs


# ---- the model -------------------------------------------------------------------------------------

def test_interpolation_is_monotone_where_the_data_is():
    fa3 = load_profile("h100-sxm-fa3")
    S = np.geomspace(512, 16384, 200)
    for causal in (False, True):
        y = fa_tflops(fa3, S, 128, causal, "fwd")  # data rise monotonically: 467…648 and 292…616
        assert np.all(np.diff(y) >= -1e-9)
    # between tabulated sizes the value lies between its neighbours
    y = fa_tflops(fa3, np.array([512, 724, 1024]), 128, False, "fwd")
    assert 467 < y[1] < 565
    # cuDNN on H200: full bwd falls from 612 (16K) to 572 (32K); the model follows the data down
    h200 = load_profile("h200-cudnn")
    S = np.geomspace(16384, 32768, 50)
    y = h200.throughput_flops(S, S, heads=64, head_dim=128, causal=False, phase="bwd")
    assert np.all(np.diff(y) <= 1e-6) and y[0] > y[-1]


@pytest.mark.parametrize("name", SHIPPED)
def test_extrapolation_never_exceeds_the_measured_maximum(name):
    prof = load_profile(name)
    rng = np.random.default_rng(0)
    n = 4000
    q = np.exp(rng.uniform(0, math.log(4e6), n)).round() + 1
    k = np.exp(rng.uniform(0, math.log(4e6), n)).round() + 1
    heads = rng.integers(1, 257, n)
    batch = rng.integers(1, 65, n)
    d = rng.choice([8, 32, 64, 80, 96, 128, 192, 256, 512], n)
    for phase in ("fwd", "bwd"):
        knots = [p for p in prof.points if p.role == "knot" and p.phase == phase]
        # every knot's rate in exact-pair FLOP/s (the highest thing the profile measured)
        top = max(float(prof.throughput_flops(p.q_rows, p.k_rows, heads=p.heads, head_dim=p.head_dim,
                                              causal=p.causal, phase=phase, batch=p.batch)) for p in knots)
        for causal in (False, True):
            y = prof.throughput_flops(q, k, heads=heads, head_dim=d, causal=causal, phase=phase, batch=batch)
            assert np.all(np.isfinite(y)) and np.all(y > 0)
            assert y.max() <= top * (1 + 1e-9)


@pytest.mark.parametrize("name", SHIPPED)
def test_below_the_smallest_size_throughput_keeps_falling(name):
    prof = load_profile(name)
    smallest = min(p.q_rows for p in prof.points if p.role == "knot")
    S = np.array([smallest / 8, smallest / 4, smallest / 2, smallest])
    for causal in (False, True):
        for phase in ("fwd", "bwd"):
            y = prof.throughput_flops(S, S, heads=2048 // 128, head_dim=128, causal=causal, phase=phase,
                                      batch=16384 / S)
            assert np.all(np.diff(y) > 0), (causal, phase, y)
            assert y[0] > 0.05 * y[-1]  # scaled down sensibly, not to nothing
    # above the largest size: held at the last measured value, never more
    big = load_profile("h100-sxm-fa3")
    y = fa_tflops(big, np.array([16384, 65536, 1 << 20]), 128, False, "fwd")
    assert y[1] == pytest.approx(y[0], rel=1e-9) and y[2] == pytest.approx(y[0], rel=1e-9)


def test_short_query_blocks_lose_occupancy_in_forward_only():
    # the A100 PCIe cuDNN sweep: 256 x 8192 runs at 114/204 = 0.56 of 2048 x 8192 (64 heads, batch 1)
    a100 = load_profile("a100-80gb-fa2")
    kw = dict(heads=64, head_dim=128, causal=False, batch=1)
    f = a100.throughput_flops(np.array([256, 512, 1024, 2048]), 8192, phase="fwd", **kw)
    assert f[0] / f[3] == pytest.approx(114 / 204, rel=0.03)
    assert f[1] / f[3] == pytest.approx(154 / 204, rel=0.03)
    assert np.all(np.diff(f) > 0)
    # backward parallelises over key tiles: 8192 keys keep the GPU full, only the loop gets shorter
    b = a100.throughput_flops(np.array([2048, 8192]), 8192, phase="bwd", **kw)
    assert b[0] / b[1] > 0.9
    # a call with more parallelism than the benchmark is not made faster than the benchmark
    h = a100.throughput_flops(8192, 8192, heads=np.array([16, 256]), head_dim=128, causal=False, phase="fwd",
                              batch=2)
    assert h[1] == pytest.approx(h[0], rel=1e-12)
    assert occupancy(np.array([1, 108, 1080]), 108, 1.23).tolist() == pytest.approx(
        [1 / 108 / (1 / 108 + 1.23), 1 / 2.23, 10 / 11.23])


def test_causal_calls_decompose_into_triangle_and_rectangle():
    prof = load_profile("h100-sxm-fa3")
    kw = dict(heads=32, head_dim=128, phase="fwd", batch=1)
    # a short query block at the end of a long prefix is nearly full: it runs near the full rate
    tc = prof.throughput_flops(256, 16384, causal=True, **kw)
    tf = prof.throughput_flops(256, 16384, causal=False, **kw)
    assert 0.97 < tc / tf <= 1.0
    # a causal square runs at the causal curve, below full
    sq_c = prof.throughput_flops(4096, 4096, causal=True, **kw)
    sq_f = prof.throughput_flops(4096, 4096, causal=False, **kw)
    assert sq_c / sq_f == pytest.approx(579 / 638, rel=1e-3)
    # default pairs: bottom-right alignment; explicit pairs override (e.g. top-left q < k: a triangle)
    assert causal_pairs(256, 1024).item() == 256 * 768 + 256 * 257 // 2
    assert causal_pairs(1024, 256, "top-left").item() == 768 * 256 + 256 * 257 // 2
    assert causal_pairs(5, 5, "top-left").item() == causal_pairs(5, 5).item() == 15
    default = prof.seconds(256, 1024, causal=True, **kw)
    assert float(prof.seconds(256, 1024, causal=True, pairs=causal_pairs(256, 1024), **kw)) == float(default)
    # the full part runs at the full rate of the call, the triangle at that rate × κ(256)
    t_rect = prof.seconds(256, 1024, causal=False, pairs=256 * 768, **kw)
    t_tri = prof.seconds(256, 1024, causal=True, pairs=256 * 257 / 2, **kw)
    assert float(t_rect + t_tri) == pytest.approx(float(default), rel=1e-12)
    kappa = prof.throughput_flops(256, 256, causal=True, **kw) / prof.throughput_flops(256, 256, causal=False, **kw)
    t_tri_full_rate = prof.seconds(256, 1024, causal=False, pairs=256 * 257 / 2, **kw)
    assert float(t_tri) == pytest.approx(float(t_tri_full_rate / kappa), rel=1e-9)


def test_seconds_flops_and_vectorisation():
    prof = load_profile("h100-sxm-fa2")
    q = np.array([[1024, 2048], [4096, 0]])
    kw = dict(heads=8, head_dim=128, causal=False, batch=2)
    f = prof.flops(q, 2048, phase="fwd", **kw)
    assert f.shape == (2, 2) and f[0, 0] == 4 * 2 * 8 * 128 * 1024 * 2048
    assert np.all(prof.flops(q, 2048, phase="bwd", **kw) == 2.5 * f)
    t = prof.seconds(q, 2048, phase="fwd", **kw)
    assert t.shape == (2, 2) and t[1, 1] == 0 and np.all(t[q > 0] > 0)
    tb = prof.seconds(q, 2048, phase="bwd", **kw)
    assert np.allclose(prof.seconds(q, 2048, phase="fwd+bwd", **kw), t + tb)
    assert np.allclose(prof.throughput_flops(q, 2048, phase="fwd", **kw)[q > 0], (f / np.where(t > 0, t, 1))[q > 0])
    # for a full call, time is linear in the pairs it computes
    t1 = prof.seconds(2048, 2048, phase="fwd", pairs=1e6, **kw)
    t2 = prof.seconds(2048, 2048, phase="fwd", pairs=2e6, **kw)
    assert float(t2) == pytest.approx(2 * float(t1))
    # causal may be an array
    both = prof.seconds(2048, 2048, heads=8, head_dim=128, causal=np.array([False, True]), phase="fwd")
    assert both[1] < both[0]
    with pytest.raises(ValueError):
        prof.seconds(1, 1, heads=1, head_dim=64, causal=False, phase="forward")


def test_head_dim_interpolation():
    fa3 = load_profile("h100-sxm-fa3")

    def at(d):
        return float(fa3.throughput_flops(8192, 8192, heads=16, head_dim=d, causal=False, phase="fwd", batch=2))

    t64, t128, t256 = at(64), at(128), at(256)
    assert t64 < at(96) < t128 < at(192) < t256
    assert at(96) == pytest.approx(t64 + (t128 - t64) * math.log(96 / 64) / math.log(2))
    assert at(512) == pytest.approx(t256)  # held above the largest tabulated head dim
    assert at(32) == pytest.approx(t64 * 0.5 ** 0.5)  # scaled down below the smallest
    # FA3 publishes no d256 backward: it is held at d128's
    b = [float(fa3.throughput_flops(8192, 8192, heads=16, head_dim=d, causal=False, phase="bwd", batch=2))
         for d in (128, 256)]
    assert b[1] == pytest.approx(b[0])
    assert fa3.head_dims("bwd", False) == [64, 128] and fa3.head_dims("fwd", True) == [64, 128, 256]


# ---- files -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SHIPPED)
def test_round_trip(name, tmp_path):
    prof = load_profile(name)
    path = tmp_path / f"{name}.yaml"
    prof.save(path)
    again = load_profile(str(path))
    assert again.to_doc() == prof.to_doc()
    S = np.array([300, 5000, 40000])
    for causal in (False, True):
        for phase in ("fwd", "bwd"):
            a = prof.seconds(S, S // 2, heads=32, head_dim=96, causal=causal, phase=phase)
            assert np.array_equal(a, again.seconds(S, S // 2, heads=32, head_dim=96, causal=causal, phase=phase))


def _minimal_doc():
    pts = []
    for phase in ("fwd", "bwd"):
        for causal in (False, True):
            for S, t in ((1024, 100.0), (4096, 200.0)):
                pts.append({"phase": phase, "causal": causal, "head_dim": 64, "q_rows": S, "k_rows": S,
                            "heads": 8, "batch": 2, "tflops": t * (0.8 if causal else 1.0), "source": "mine"})
    return {"format": FORMAT, "name": "mine", "device": {"name": "X", "peak_flops": "500 TFLOP/s", "sm_count": 100},
            "kernel": {"family": "fa2"}, "model": {"wave_tail": 1.0},
            "sources": {"mine": {"cite": "my benchmark", "flop_convention": "exact-pairs"}}, "points": pts}


def _write(tmp_path, doc, text=None):
    path = tmp_path / "prof.yaml"
    path.write_text(text if text is not None else dump_profile(doc))
    return str(path)


def test_a_minimal_user_profile_loads(tmp_path):
    prof = load_profile(_write(tmp_path, _minimal_doc()))
    assert prof.name == "mine" and prof.family == "fa2" and prof.alignment == "bottom-right"
    kw = dict(heads=8, head_dim=64, causal=False, phase="fwd", batch=2)
    # halfway in log size between the knots 1024 (100 TFLOP/s) and 4096 (200 TFLOP/s) ...
    assert float(prof.with_model(wave_tail=0).throughput_flops(2048, 2048, **kw)) / 1e12 == pytest.approx(150.0)
    # ... where the 4096 knot, measured with 512 units on 100 SMs, is scaled to this call's 256 units
    occ = occupancy(np.array([256, 512]), 100, 1.0)
    expected = 100 + 0.5 * (200 * occ[0] / occ[1] - 100)
    assert float(prof.throughput_flops(2048, 2048, **kw)) / 1e12 == pytest.approx(expected)


@pytest.mark.parametrize("mutate,key,fix", [
    (lambda d: d.update(format="ringsim-kernel-profile/2"), "format", "ringsim-kernel-profile/1"),
    (lambda d: d.pop("format"), "format", "add"),
    (lambda d: d.update(colour="red"), "colour", "allowed keys"),
    (lambda d: d["device"].update(sms=10), "device.sms", "allowed keys"),
    (lambda d: d["points"][3].update(speed=1), "points[3].speed", "allowed keys"),
    (lambda d: d["points"][2].update(tflops=float("nan")), "points[2].tflops", "finite positive"),
    (lambda d: d["points"][2].update(tflops=float("inf")), "points[2].tflops", "finite positive"),
    (lambda d: d["points"][1].update(tflops=-5), "points[1].tflops", "finite positive"),
    (lambda d: d["points"][1].update(tflops=900), "points[1].tflops", "exceeds device.peak_flops"),
    (lambda d: d["points"][0].update(heads=0), "points[0].heads", "positive integer"),
    (lambda d: d["points"][0].update(q_rows=1.5), "points[0].q_rows", "positive integer"),
    (lambda d: d["points"][0].update(causal="yes"), "points[0].causal", "true or false"),
    (lambda d: d["points"][0].update(phase="forward"), "points[0].phase", "fwd, bwd, fwd+bwd"),
    (lambda d: d["points"][0].update(source="paper"), "points[0].source", "add it under sources"),
    (lambda d: d["points"][0].update(phase="fwd+bwd"), "points[0].role", "role: reference"),
    (lambda d: d["points"][2].update(q_rows=512), "points[2].role", "square"),
    (lambda d: d["points"][1].update(k_rows=1024), "points[1]", "second knot"),
    (lambda d: d.update(points=[p for p in d["points"] if not (p["phase"] == "bwd" and p["causal"])]),
     "points", "no causal bwd knots"),
    (lambda d: d["model"].update(wave_tail=-1), "model.wave_tail", "≥ 0"),
    (lambda d: d["model"].update(parallel={"fwd": "rows"}), "model.parallel.fwd", "queries, keys, heads"),
    (lambda d: d["kernel"].update(family="fa4"), "kernel.family", "fa2, fa3, cudnn, cpu-sdpa"),
    (lambda d: d["sources"]["mine"].update(flop_convention="half"), "sources.mine.flop_convention", "causal-half"),
    (lambda d: d["sources"]["mine"].pop("cite"), "sources.mine.cite", "missing"),
    (lambda d: d["device"].update(peak_flops="lots"), "device.peak_flops", "TFLOP/s"),
    (lambda d: d["device"].update(sm_count=-3), "device.sm_count", "positive integer"),
])
def test_bad_files_give_one_line_errors(tmp_path, mutate, key, fix):
    doc = _minimal_doc()
    mutate(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(InputError) as e:
        load_profile(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(path + ": ") and f": {key}:" in msg and fix in msg, msg


def test_unreadable_files_and_names(tmp_path):
    with pytest.raises(InputError, match="YAML syntax error at line 3"):
        load_profile(_write(tmp_path, None, "name: a\nformat: [unclosed\n"))
    with pytest.raises(InputError, match="top level"):
        load_profile(_write(tmp_path, None, "- 1\n"))
    with pytest.raises(InputError, match="neither a shipped profile nor an existing file; shipped: a100-80gb-fa2"):
        load_profile("h100-fa9")
    bad = _write(tmp_path, None, "format: ringsim-kernel-profile/0\n")
    code, out, err = run_cli("profile-kernels", "--compare", bad)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "unknown version" in err
    assert "Traceback" not in err


def test_point_to_doc_omits_defaults():
    p = KernelPoint("fwd", False, 64, 8, 8, 1, 1, 1.0, "s")
    assert p.to_doc() == {"phase": "fwd", "causal": False, "head_dim": 64, "q_rows": 8, "k_rows": 8, "heads": 1,
                          "batch": 1, "tflops": 1.0, "source": "s"}
    text = dump_profile({"format": FORMAT, "notes": "a\nb", "points": [p.to_doc()]})
    assert yaml.safe_load(text)["points"][0] == p.to_doc()


# ---- measuring -------------------------------------------------------------------------------------------

def test_fit_wave_tail_recovers_a_known_tail():
    from ringsim.kernelmeasure import fit_wave_tail

    doc = _minimal_doc()
    truth = profile_from_doc(doc, "t").with_model(wave_tail=1.5)
    for q in (128, 256, 512, 2048):
        p = KernelPoint("fwd", False, 64, q, 4096, 8, 1, 1.0, "mine", role="reference")
        doc["points"].append({**p.to_doc(), "tflops": truth.predict_tflops(p)})
    c, err = fit_wave_tail(profile_from_doc(doc, "t"))
    assert c == pytest.approx(1.5, abs=0.02) and err < 0.005


def test_profile_kernels_cpu_tiny_grid(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "prof.yaml"
    code, stdout, err = run_cli("profile-kernels", "-o", str(out), "--sizes", "32,64", "--rect", "0.5",
                                "--heads", "2", "--head-dims", "16", "--repeats", "2", "--warmup", "0",
                                "--threads", "1", "--name", "tiny", "--compare", "h100-sxm-fa2")
    assert code == 0, err
    assert stdout == ""
    assert "16/16 calls" in err and "wrote" in err and "h100-sxm-fa2 vs measured" in err
    prof = load_profile(str(out))
    assert prof.name == "tiny" and prof.family == "cpu-sdpa" and prof.alignment == "top-left"
    assert prof.device["threads"] == 1 and prof.parallel("bwd") == "heads"
    for k in ("host", "cpu_model", "torch_version", "threads", "date", "timing", "grid", "command"):
        assert prof.measured.get(k) not in (None, ""), k
    assert "--sizes 32,64" in prof.measured["command"]
    knots = {(p.phase, p.causal, p.q_rows) for p in prof.points if p.role == "knot"}
    assert knots == {(ph, c, S) for ph in ("fwd", "bwd") for c in (False, True) for S in (32, 64)}
    rects = {(p.q_rows, p.k_rows) for p in prof.points if p.role == "reference"}
    assert rects == {(16, 32), (32, 16), (32, 64), (64, 32)}
    causal = [p for p in prof.points if p.causal]
    assert all(p.pairs == p.q_rows * (p.q_rows + 1) // 2 for p in causal)
    assert all(0 < p.tflops < 100 for p in prof.points)  # a CPU, in TFLOP/s
    assert all(abs(r["error"]) < 1e-6 for r in prof.check() if r.get("role", "knot") == "knot")
    assert 0 <= prof.wave_tail <= 4 and "fitted" in prof.model["wave_tail_source"]


def test_profile_kernels_to_stdout_is_yaml():
    pytest.importorskip("torch")
    code, stdout, err = run_cli("profile-kernels", "--sizes", "32,64", "--rect", "none", "--heads", "1",
                                "--head-dims", "8", "--repeats", "1", "--warmup", "0")
    assert code == 0, err
    doc = yaml.safe_load(stdout)
    assert doc["format"] == FORMAT and len(doc["points"]) == 8
    assert all(p.get("role", "knot") == "knot" for p in doc["points"])


@pytest.mark.parametrize("args,needle", [
    (("--sizes", "0"), "must be positive"),
    (("--sizes", "abc"), "not a token count"),
    (("--rect", "2"), "not in (0, 1]"),
    (("--rect", "half"), "not a number"),
    (("--repeats", "0"), "--repeats must be"),
    (("--heads", "0"), "--heads must be"),
    (("--threads", "0"), "--threads must be"),
    (("--head-dims", "x"), "--head-dims"),
    (("--device", "cpu", "--kernel", "flash"), "needs CUDA"),
    (("--compare", "nope"), "neither a shipped profile"),
])
def test_profile_kernels_bad_input(args, needle):
    pytest.importorskip("torch")
    code, out, err = run_cli("profile-kernels", "--sizes", "32", "--repeats", "1", *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err, err


@pytest.mark.gpu
def test_profile_kernels_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    out = tmp_path / "gpu.yaml"
    code, _, err = run_cli("profile-kernels", "--device", "cuda", "-o", str(out), "--sizes", "512,1024,2048",
                           "--head-dims", "128", "--repeats", "3", "--compare", "h100-sxm-fa2")
    assert code == 0, err
    prof = load_profile(str(out))
    assert prof.family == "fa2" and prof.device["sm_count"] > 0 and prof.measured["gpu"]
    assert all(1 < p.tflops < 2000 for p in prof.points)
    fwd = {p.q_rows: p.tflops for p in prof.points if p.phase == "fwd" and not p.causal and p.role == "knot"}
    assert fwd[2048] > fwd[512]  # efficiency rises with the key loop
