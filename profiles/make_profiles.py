"""Build the shipped kernel profiles (``ringsim.profiles``) from the published kernel tables.

    python profiles/make_profiles.py            # rewrite the *.yaml files next to this script
    python profiles/make_profiles.py --check    # print each profile's max error against its tables

Every number below is transcribed from ``../shared/reference/gpu-attention-kernels.md`` of the
project workspace, §1–§2 (kernel-level tables), which names the original source of each table.
Nothing from its §4 (the ring-flash-attention development set, including its "implied
single-GPU kernel rates") is used here.

What is measured and what is derived, per profile:

- ``h100-sxm-fa2``: FA2 forward (FA3 paper Fig. 5, FA2 rows), FA2 full backward (FA3 paper
  Fig. 6) and FA2 forward+backward (FA2 paper Fig. 7) are two papers' runs of the same kernel on
  the same GPU. On the full mask, where all three exist, Fig. 7 is ρ = 0.988–1.057 × what Figs.
  5–6 imply. The knots sit at the geometric mean of the two runs (forward and backward = Figs.
  5–6 × √ρ), so every published point is reproduced within |√ρ − 1| ≤ 2.8 %. The causal backward
  (unpublished) is Fig. 7's causal forward+backward (÷ √ρ) minus Fig. 5's causal forward (× √ρ).
- ``a100-80gb-fa2``: only forward+backward is published (FA2 paper Fig. 4). Forward and backward
  are split with FA2's forward/backward throughput ratio on H100 at the same size, head dim and
  mask (the h100-sxm-fa2 knots): T_f = T_fb·(1 + 2.5 s)/3.5, T_b = T_f / s, s = T_f/T_b, which
  keeps T_fb exactly.
- ``h100-sxm-fa3`` and ``h100-sxm-cudnn``: forward (Fig. 5) and full backward (Fig. 6) as
  published; causal backward = full backward × (causal forward / full forward) at the same size
  and head dim. FA3 has no published d256 backward: the model holds d256 backward at d128's
  values (its rule above the largest tabulated head dim).
- ``h200-cudnn``: all four curves published (cudnn-frontend's H200 training benchmark); nothing
  derived.
- Occupancy (all GPU profiles): ``wave_tail`` is fitted to cuDNN's rectangular causal prefill
  sweep on an A100 PCIe (2048/1024/512/256 × 8192, 64 heads, batch 1 assumed): throughput ∝
  w/(w + wave_tail), w = ceil(q/128)·64/108, one free scale. These calls are 87–98 % full
  (bottom-right causal), treated here as uniform work.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REF = "gpu-attention-kernels.md (project reference, §2)"
SIZES = (512, 1024, 2048, 4096, 8192, 16384)
TOKENS, HIDDEN = 16384, 2048  # FA benchmark configuration: batch × seqlen = 16K, hidden 2048
FA_CONFIG = "batch × seqlen = 16K tokens, hidden 2048 (head_dim 64: 32 heads, 128: 16, 256: 8); square q = k"

# ---- transcribed tables (TFLOP/s), columns = SIZES ----------------------------------------------------
# FA2 paper Fig. 4: A100 80GB SXM4, forward+backward
A100_FA2_FWDBWD = {(64, False): (132, 153, 162, 171, 175, 176), (128, False): (151, 173, 187, 196, 201, 203),
                   (64, True): (88, 119, 140, 156, 165, 171), (128, True): (99, 133, 155, 173, 182, 189)}
# FA2 paper Fig. 7: H100 SXM5, forward+backward
H100_FA2_FWDBWD = {(64, False): (215, 254, 274, 288, 294, 296), (128, False): (248, 294, 320, 326, 335, 338),
                   (64, True): (141, 192, 232, 257, 273, 284), (128, True): (163, 221, 265, 294, 308, 328)}
# FA3 paper Fig. 5: H100 SXM5 forward, per kernel
H100_FWD = {
    "fa2": {(64, False): (282, 306, 318, 321, 322, 324), (64, True): (180, 229, 262, 284, 295, 299),
            (128, False): (309, 350, 362, 368, 370, 370), (128, True): (191, 260, 298, 319, 333, 335)},
    "fa3": {(64, False): (333, 392, 460, 476, 496, 497), (64, True): (197, 265, 371, 420, 460, 473),
            (128, False): (467, 565, 625, 638, 646, 648), (128, True): (292, 423, 521, 579, 602, 616),
            (256, False): (482, 627, 707, 736, 746, 756), (256, True): (286, 427, 537, 612, 628, 642)},
    "cudnn": {(128, False): (497, 574, 617, 609, 600, 595), (128, True): (315, 410, 484, 518, 529, 539)},
}
# FA3 paper Fig. 6: H100 SXM5 backward, full mask only
H100_BWD_FULL = {
    "fa2": {64: (198, 238, 264, 279, 287, 291), 128: (214, 260, 291, 310, 318, 322)},
    "fa3": {64: (272, 363, 422, 453, 472, 474), 128: (316, 424, 501, 542, 559, 561)},
    "cudnn": {128: (305, 408, 465, 499, 518, 516)},
}
# cudnn-frontend benchmark/sdpa_benchmark_training/results/h200_919_only_cudnn (llama3.1 csv):
# 64 q / 8 kv heads, d128, batch 1; causal counted with the diagonal
H200_SIZES = (2048, 4096, 8192, 16384, 32768)
H200_CUDNN = {("fwd", True): (484, 591, 644, 673, 688), ("bwd", True): (370, 474, 541, 579, 581),
              ("fwd", False): (633, 671, 691, 702, 693), ("bwd", False): (504, 560, 594, 612, 572)}
# cudnn-frontend benchmark/attention_inference/results/prefill_sweep/a100: A100 PCIe, cuDNN 9.27, causal
# prefill, 64 q / 8 kv heads, d128: q rows × 8192 keys → TFLOP/s
A100_PCIE_PREFILL_RECT = {2048: 204, 1024: 188, 512: 154, 256: 114}
A100_PCIE_SMS = 108

DEVICES = {
    "a100": {"name": "A100 SXM4 80GB", "peak_flops": "312 TFLOP/s", "sm_count": 108},
    "h100": {"name": "H100 SXM5 80GB", "peak_flops": "989 TFLOP/s", "sm_count": 132},
    "h200": {"name": "H200 SXM 141GB", "peak_flops": "989 TFLOP/s", "sm_count": 132},
}
DEVICE_CITE = ("peak: NVIDIA A100/H100/H200 datasheets (dense bf16, as in hardware.md of the project reference); "
               "SMs: NVIDIA A100 (108) and H100 SXM5 (132) architecture whitepapers")



def src_fa3_fig5(rows):
    return (f"FlashAttention-3 paper (Shah et al. 2024), Fig. 5 ({rows} rows): H100 SXM5 attention forward, "
            f"TFLOP/s, at a fixed 1830 MHz clock, 100 repetitions; via {REF}")


def src_fa3_fig6(rows):
    return (f"FlashAttention-3 paper (Shah et al. 2024), Fig. 6 ({rows} rows): H100 SXM5 attention backward, full "
            f"mask only (no causal backward published); via {REF}")


# ---- helpers --------------------------------------------------------------------------------------------

def fa_point(phase, causal, d, S, tflops, source, **extra):
    """A point at the FA benchmark configuration (batch × seqlen = 16K, hidden 2048)."""
    p = {"phase": phase, "causal": causal, "head_dim": d, "q_rows": S, "k_rows": S, "heads": HIDDEN // d,
         "batch": TOKENS // S, "tflops": tflops, "source": source}
    p.update(extra)
    return p


def fwdbwd(t_f, t_b):
    """Forward+backward TFLOP/s from forward and backward TFLOP/s (same FLOP convention)."""
    return 3.5 / (1.0 / t_f + 2.5 / t_b)


def r1(x):
    return round(float(x), 1)


def fit_wave_tail():
    """(wave_tail, scale, max |error|) of throughput = scale · w/(w + c) on the A100 PCIe prefill sweep."""
    qs = sorted(A100_PCIE_PREFILL_RECT)
    ws = [math.ceil(q / 128) * 64 / A100_PCIE_SMS for q in qs]
    logT = [math.log(A100_PCIE_PREFILL_RECT[q]) for q in qs]
    best = None
    for i in range(1, 5001):  # c in (0, 5], step 0.001; the scale has a closed form in log space
        c = i / 1000
        lo = [math.log(w / (w + c)) for w in ws]
        logA = sum(t - o for t, o in zip(logT, lo)) / len(qs)
        sse = sum((logA + o - t) ** 2 for t, o in zip(logT, lo))
        if best is None or sse < best[0]:
            best = (sse, c, math.exp(logA))
    _, c, A = best
    err = max(abs(A * w / (w + c) / A100_PCIE_PREFILL_RECT[q] - 1) for q, w in zip(qs, ws))
    return c, A, err


def base_doc(name, description, device, family, dtype, sources, notes):
    c, A, err = fit_wave_tail()
    model = {
        "tile_rows": 128,
        "parallel": {"fwd": "queries", "bwd": "keys"},
        "wave_tail": round(c, 2),
        "wave_tail_source": (
            f"fitted ({c:.3f} waves, max error {100 * err:.1f} %) to cuDNN 9.27 causal prefill on an A100 PCIe "
            "(cudnn-frontend benchmark/attention_inference/results/prefill_sweep/a100: q × 8192 keys, q = 2048, "
            "1024, 512, 256 → 204, 188, 154, 114 TFLOP/s; 64 heads, batch 1 assumed; 108 SMs, 128-row tiles) "
            "with one free scale; another device and kernel, used for the shape of the occupancy loss only"),
        "head_dim_exponent": 0.5,
    }
    return {"format": "ringsim-kernel-profile/1", "name": name, "description": description,
            "device": dict(DEVICES[device]),
            "kernel": {"family": family, "dtype": dtype, "causal_alignment": "bottom-right"},
            "model": model, "sources": sources, "notes": notes + "\n" + DEVICE_CITE + ".", "points": []}


# ---- H100 FA2 ---------------------------------------------------------------------------------------------

def h100_fa2_knots():
    """{(phase, d, causal, S): TFLOP/s (causal-half)} of the H100 FA2 model, plus the run factors ρ."""
    knots, rho = {}, {}
    for d in (64, 128):
        for i, S in enumerate(SIZES):
            ff, fc = H100_FWD["fa2"][(d, False)][i], H100_FWD["fa2"][(d, True)][i]
            bf = H100_BWD_FULL["fa2"][d][i]
            fbf, fbc = H100_FA2_FWDBWD[(d, False)][i], H100_FA2_FWDBWD[(d, True)][i]
            r = fbf / fwdbwd(ff, bf)
            g = math.sqrt(r)
            rho[(d, S)] = r
            knots[("fwd", d, False, S)] = ff * g
            knots[("bwd", d, False, S)] = bf * g
            knots[("fwd", d, True, S)] = fc * g
            # causal backward: forward+backward (run-corrected) minus forward, in time per unit FLOP
            knots[("bwd", d, True, S)] = 2.5 / (3.5 / (fbc / g) - 1.0 / (fc * g))
    return {k: r1(v) for k, v in knots.items()}, rho


def h100_fa2():
    sources = {
        "fa3-fig5-fa2": {"cite": src_fa3_fig5("FA2"), "flop_convention": "causal-half",
                         "config": FA_CONFIG},
        "fa3-fig6-fa2": {"cite": src_fa3_fig6("FA2"), "flop_convention": "causal-half",
                         "config": FA_CONFIG},
        "fa2-fig7": {"cite": "FlashAttention-2 paper (Dao 2023), Fig. 7: H100 SXM5 forward+backward, TFLOP/s; via "
                     + REF, "flop_convention": "causal-half", "config": FA_CONFIG},
        "fa2-h100-joint": {"cite": "derived in profiles/make_profiles.py from fa3-fig5-fa2, fa3-fig6-fa2 and "
                           "fa2-fig7 (geometric mean of the two papers' runs; causal backward by difference)",
                           "flop_convention": "causal-half", "config": FA_CONFIG},
    }
    knots, rho = h100_fa2_knots()
    notes = (
        "FlashAttention-2 on H100 SXM5. Two papers measured this kernel: the FA3 paper (forward, Fig. 5; full\n"
        "backward, Fig. 6) and the FA2 paper (forward+backward, Fig. 7). Where both cover a shape (full mask), Fig. 7\n"
        f"is {min(rho.values()):.3f}-{max(rho.values()):.3f} x what Figs. 5-6 imply. The knots are their geometric "
        "mean: forward\nand backward = Figs. 5-6 x sqrt(rho) (rho per size and head dim, applied to causal forward "
        "too), so every\npublished point is reproduced within |sqrt(rho) - 1|. No causal backward is published: it "
        "is derived as\nFig. 7 causal fwd+bwd / sqrt(rho) minus Fig. 5 causal forward x sqrt(rho) (time per FLOP). "
        "Knots are\nmarked derived; the published figures are the role: reference points.\n"
        "Nothing from the development set (reference section 4) is used.")
    doc = base_doc("h100-sxm-fa2", "FlashAttention-2 on H100 SXM5 (bf16/fp16), FA2 and FA3 papers' benchmarks",
                   "h100", "fa2", "bf16/fp16", sources, notes)
    pts = doc["points"]
    for d in (64, 128):
        for i, S in enumerate(SIZES):
            g = f"x sqrt(rho), rho = {rho[(d, S)]:.4f} (fa2-fig7 / fa3 figs 5-6 on the full mask)"
            pts.append(fa_point("fwd", False, d, S, knots[("fwd", d, False, S)], "fa2-h100-joint",
                                derived=f"fa3-fig5-fa2 {H100_FWD['fa2'][(d, False)][i]} {g}"))
            pts.append(fa_point("fwd", True, d, S, knots[("fwd", d, True, S)], "fa2-h100-joint",
                                derived=f"fa3-fig5-fa2 {H100_FWD['fa2'][(d, True)][i]} {g}"))
            pts.append(fa_point("bwd", False, d, S, knots[("bwd", d, False, S)], "fa2-h100-joint",
                                derived=f"fa3-fig6-fa2 {H100_BWD_FULL['fa2'][d][i]} {g}"))
            pts.append(fa_point("bwd", True, d, S, knots[("bwd", d, True, S)], "fa2-h100-joint",
                                derived=f"fa2-fig7 causal {H100_FA2_FWDBWD[(d, True)][i]} / sqrt(rho) minus "
                                f"fa3-fig5-fa2 causal {H100_FWD['fa2'][(d, True)][i]} x sqrt(rho), "
                                f"rho = {rho[(d, S)]:.4f}"))
    for d in (64, 128):
        for causal in (False, True):
            for i, S in enumerate(SIZES):
                pts.append(fa_point("fwd", causal, d, S, H100_FWD["fa2"][(d, causal)][i], "fa3-fig5-fa2",
                                    role="reference"))
    for d in (64, 128):
        for i, S in enumerate(SIZES):
            pts.append(fa_point("bwd", False, d, S, H100_BWD_FULL["fa2"][d][i], "fa3-fig6-fa2", role="reference"))
    for d in (64, 128):
        for causal in (False, True):
            for i, S in enumerate(SIZES):
                pts.append(fa_point("fwd+bwd", causal, d, S, H100_FA2_FWDBWD[(d, causal)][i], "fa2-fig7",
                                    role="reference"))
    return doc


# ---- A100 FA2 ---------------------------------------------------------------------------------------------

def a100_fa2():
    sources = {
        "fa2-fig4": {"cite": "FlashAttention-2 paper (Dao 2023), Fig. 4 (repo asset flash2_a100_fwd_bwd_benchmark): "
                     "A100 80GB SXM4 forward+backward, TFLOP/s; via " + REF,
                     "flop_convention": "causal-half", "config": FA_CONFIG},
        "fa2-a100-split": {"cite": "derived in profiles/make_profiles.py: fa2-fig4 split into forward and "
                           "backward with FA2's forward/backward throughput ratio on H100 (h100-sxm-fa2 knots)",
                           "flop_convention": "causal-half", "config": FA_CONFIG},
    }
    h100, _ = h100_fa2_knots()
    notes = (
        "FlashAttention-2 on A100 80GB SXM4. Only forward+backward is published here (FA2 paper Fig. 4, the\n"
        "role: reference points). Forward and backward knots are derived: with s = T_fwd / T_bwd of FA2 on H100 at\n"
        "the same size, head dim and mask (the h100-sxm-fa2 knots, from the FA3 paper's Figs. 5-6 and the FA2\n"
        "paper's Fig. 7), T_fwd = T_fb (1 + 2.5 s) / 3.5 and T_bwd = T_fwd / s, which reproduces T_fb exactly.\n"
        "The forward/backward balance of FA2 is assumed to be the same on A100 as on H100.\n"
        "Nothing from the development set (reference section 4) is used.")
    doc = base_doc("a100-80gb-fa2", "FlashAttention-2 on A100 80GB SXM4 (bf16/fp16), FA2 paper Fig. 4",
                   "a100", "fa2", "bf16/fp16", sources, notes)
    pts = doc["points"]
    for d in (64, 128):
        for causal in (False, True):
            for i, S in enumerate(SIZES):
                fb = A100_FA2_FWDBWD[(d, causal)][i]
                s = h100[("fwd", d, causal, S)] / h100[("bwd", d, causal, S)]
                tf = fb * (1 + 2.5 * s) / 3.5
                how = f"fa2-fig4 fwd+bwd {fb} split with H100 FA2 fwd/bwd ratio s = {s:.4f}"
                pts.append(fa_point("fwd", causal, d, S, r1(tf), "fa2-a100-split", derived=how))
                pts.append(fa_point("bwd", causal, d, S, r1(tf / s), "fa2-a100-split", derived=how))
    for d in (64, 128):
        for causal in (False, True):
            for i, S in enumerate(SIZES):
                pts.append(fa_point("fwd+bwd", causal, d, S, A100_FA2_FWDBWD[(d, causal)][i], "fa2-fig4",
                                    role="reference"))
    return doc


# ---- H100 FA3 and cuDNN -----------------------------------------------------------------------------------

def h100_kernel(kernel):
    label = {"fa3": "FA3", "cudnn": "cuDNN"}[kernel]
    derived_id = f"{kernel}-causal-bwd"
    sources = {
        f"fa3-fig5-{kernel}": {"cite": src_fa3_fig5(label), "flop_convention": "causal-half",
                               "config": FA_CONFIG},
        f"fa3-fig6-{kernel}": {"cite": src_fa3_fig6(label), "flop_convention": "causal-half",
                               "config": FA_CONFIG},
        derived_id: {"cite": f"derived in profiles/make_profiles.py: causal backward = fa3-fig6-{kernel} "
                     f"full backward x (fa3-fig5-{kernel} causal forward / full forward) at the same size and head dim",
                     "flop_convention": "causal-half", "config": FA_CONFIG},
    }
    fwd, bwd = H100_FWD[kernel], H100_BWD_FULL[kernel]
    dims = sorted({d for d, _ in fwd})
    missing = [d for d in dims if d not in bwd]
    notes = (
        f"{label} on H100 SXM5. Forward (full and causal) and full backward as published in the FA3 paper's\n"
        f"Figs. 5-6. No causal backward is published: it is derived as full backward x the forward causal/full\n"
        f"ratio at the same size and head dim (marked derived). Check of that rule where both are known: on FA2\n"
        f"H100 (causal backward by difference, see h100-sxm-fa2) the backward causal/full ratio is 1-10 % above\n"
        f"the forward one; on cuDNN H200 (measured) 1-4 % below at 2K-16K.\n")
    if missing:
        notes += (f"No {label} backward is published for head dim {', '.join(map(str, missing))}: the model "
                  f"holds it at head dim {max(bwd)}'s values (its rule above the largest tabulated head dim).\n")
    notes += "Nothing from the development set (reference section 4) is used."
    desc = {"fa3": "FlashAttention-3 on H100 SXM5 (bf16), FA3 paper Figs. 5-6",
            "cudnn": "cuDNN fused attention on H100 SXM5 (bf16), FA3 paper Figs. 5-6"}[kernel]
    doc = base_doc(f"h100-sxm-{kernel}", desc, "h100", kernel, "bf16", sources, notes)
    pts = doc["points"]
    for d in dims:
        for causal in (False, True):
            for i, S in enumerate(SIZES):
                pts.append(fa_point("fwd", causal, d, S, fwd[(d, causal)][i], f"fa3-fig5-{kernel}"))
    for d in sorted(bwd):
        for i, S in enumerate(SIZES):
            pts.append(fa_point("bwd", False, d, S, bwd[d][i], f"fa3-fig6-{kernel}"))
        for i, S in enumerate(SIZES):
            k = fwd[(d, True)][i] / fwd[(d, False)][i]
            pts.append(fa_point("bwd", True, d, S, r1(bwd[d][i] * k), derived_id,
                                derived=f"fa3-fig6-{kernel} full bwd {bwd[d][i]} x fwd causal/full "
                                f"{fwd[(d, True)][i]}/{fwd[(d, False)][i]}"))
    return doc


# ---- H200 cuDNN -------------------------------------------------------------------------------------------

def h200_cudnn():
    sources = {
        "cudnn-h200-919": {
            "cite": "NVIDIA cudnn-frontend, benchmark/sdpa_benchmark_training/results/h200_919_only_cudnn (llama3.1 "
                    "csv), cuDNN 9.19 on H200, TFLOP/s; via " + REF,
            "flop_convention": "exact-pairs",
            "config": "64 query heads / 8 kv heads (GQA), head_dim 128, batch 1; causal counted as S(S+1)/2 pairs"},
    }
    notes = (
        "cuDNN 9.19 fused attention on H200 (llama3.1 shapes: 64 query / 8 KV heads, d128, batch 1). Every\n"
        "point is published; nothing is derived. Only head dim 128 and sizes 2K-32K are tabulated: other head dims\n"
        "follow the model's rules (held above, scaled down below), sizes below 2K the prologue-amortisation\n"
        "extrapolation. GQA (8 KV heads) is not modelled separately: the figures are used as they are.\n"
        "Nothing from the development set (reference section 4) is used.")
    doc = base_doc("h200-cudnn", "cuDNN 9.19 fused attention on H200 (bf16), cudnn-frontend training benchmark",
                   "h200", "cudnn", "bf16", sources, notes)
    for (phase, causal), row in H200_CUDNN.items():
        for S, t in zip(H200_SIZES, row):
            doc["points"].append({"phase": phase, "causal": causal, "head_dim": 128, "q_rows": S, "k_rows": S,
                                  "heads": 64, "batch": 1, "tflops": t, "source": "cudnn-h200-919"})
    return doc


BUILDERS = {"a100-80gb-fa2": a100_fa2, "h100-sxm-fa2": h100_fa2, "h100-sxm-fa3": lambda: h100_kernel("fa3"),
            "h100-sxm-cudnn": lambda: h100_kernel("cudnn"), "h200-cudnn": h200_cudnn}


def build_all() -> dict[str, str]:
    """{profile name: YAML text} of every shipped profile."""
    from ringsim.kernelprofile import dump_profile, profile_from_doc

    out = {}
    for name, build in BUILDERS.items():
        doc = build()
        header = (f"# {name}: generated by profiles/make_profiles.py from the kernel tables of the project\n"
                  f"# reference (../shared/reference/gpu-attention-kernels.md of the project workspace); do not edit\n"
                  f"# by hand, edit the script and rerun it.\n")
        text = header + dump_profile(doc)
        profile_from_doc(doc, name)  # validates
        out[name] = text
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="print each shipped profile's max error, write nothing")
    ap.add_argument("--out-dir", default=HERE)
    a = ap.parse_args(argv)
    from ringsim.kernelprofile import load_profile

    if not a.check:
        from ringsim.units import write_atomic

        for name, text in build_all().items():
            write_atomic(os.path.join(a.out_dir, name + ".yaml"), text)
            print(f"wrote {name}.yaml", file=sys.stderr)
    c, A, err = fit_wave_tail()
    print(f"wave_tail {c:.3f} waves, scale {A:.1f} TFLOP/s, max error {100 * err:.2f} % on the A100 PCIe sweep")
    for name in BUILDERS:
        prof = load_profile(os.path.join(a.out_dir, name + ".yaml"))
        rows = prof.check()
        for role in ("knot", "reference"):
            errs = [abs(r["error"]) for r in rows if r.get("role", "knot") == role]
            if errs:
                print(f"{name:16s} {role:9s} {len(errs):3d} points, max |error| {100 * max(errs):.3f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
