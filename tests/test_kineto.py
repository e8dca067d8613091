"""Kineto (PyTorch profiler) import on a small synthetic 2-rank trace written here."""
import json

import numpy as np
import pytest

from ringsim.kineto import attention_phase, import_kineto, nccl_directions
from ringsim.schedules import Plan
from ringsim.units import InputError


def _kernel(name, ts, dur, **args):
    return {"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": 7, "ts": ts, "dur": dur,
            "args": {"device": 0, "stream": 7, **args}}


def _write_rank(tmp_path, rank, events, world=2, base_ns=None):
    doc = {"schemaVersion": 1, "distributedInfo": {"backend": "nccl", "rank": rank, "world_size": world},
           "traceEvents": events + [
               # CPU-side ops and collectives must be ignored
               {"ph": "X", "cat": "cpu_op", "name": "aten::_flash_attention_forward", "pid": 1, "tid": 1,
                "ts": 0.0, "dur": 5000.0},
               {"ph": "i", "cat": "kernel", "name": "flash_fwd_kernel", "pid": 0, "tid": 7, "ts": 1.0}]}
    if base_ns is not None:
        doc["baseTimeNanoseconds"] = base_ns
    p = tmp_path / f"rank{rank}.json"
    p.write_text(json.dumps(doc))
    return str(p)


def _two_rank_run(tmp_path):
    # rank 0 starts at 1000 µs, rank 1 at 1010 µs; one forward ring and one backward ring
    r0 = [
        _kernel("ncclDevKernel_SendRecv(ncclDevComm*, unsigned long, ncclWork*)", 1000.0, 200.0,
                **{"In msg nelems": 1024, "dtype": "BFloat16"}),
        _kernel("void flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>>(Flash_fwd_params)", 1002.0, 300.0),
        _kernel("void flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>>(Flash_fwd_params)", 1310.0, 500.0),
        _kernel("ncclKernel_AllReduce_RING_LL_Sum_float(ncclWorkElem)", 1900.0, 50.0),
        _kernel("void flash_bwd_dot_do_o_kernel<true>(Flash_bwd_params)", 2000.0, 10.0),
        _kernel("ncclDevKernel_SendRecv(ncclDevComm*, unsigned long, ncclWork*)", 2001.0, 400.0, bytes=4096),
        _kernel("void flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<...>(Flash_bwd_params)", 2012.0, 700.0),
        _kernel("void flash_bwd_convert_dq_kernel<...>(Flash_bwd_params)", 2712.0, 8.0),
        _kernel("void flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<...>(Flash_bwd_params)", 2730.0, 1200.0),
        _kernel("void at::native::vectorized_elementwise_kernel<4>(...)", 3000.0, 5.0),
    ]
    r1 = [
        _kernel("ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t(ncclWorkElem)", 1010.0, 190.0),
        _kernel("fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel)", 1011.0, 600.0),
        _kernel("fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel)", 1620.0, 400.0),
    ]
    return [_write_rank(tmp_path, 1, r1), _write_rank(tmp_path, 0, r0)]


def test_name_rules():
    assert attention_phase("void flash_fwd_splitkv_kernel<...>") == "fwd"
    assert attention_phase("fmha_cutlassB_f16_aligned_64x64_k64_sm80") == "bwd"
    assert attention_phase("sdpa_backward_kernel") == "bwd"
    assert attention_phase("ampere_sgemm_128x64_nn") is None
    assert nccl_directions("ncclDevKernel_SendRecv(ncclDevComm*, unsigned long, ncclWork*)") == ("send", "recv")
    assert nccl_directions("ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t") == ("send", "recv")
    assert nccl_directions("ncclKernel_Send_RING") == ("send",)
    assert nccl_directions("ncclKernel_AllReduce_RING_LL_Sum_float") == ()


def test_import_two_ranks(tmp_path):
    paths = _two_rank_run(tmp_path)
    cfg = {"schedule": "zigzag", "seq_len": 256, "mask": "causal", "heads": 8, "head_dim": 64}
    tl = import_kineto(paths, cfg)
    df = tl.df
    assert tl.meta["world_size"] == 2 and tl.meta["backend"] == "nccl" and tl.meta["source"] == "measured"
    assert tl.meta["skipped_collective_kernels"] == 1
    assert tl.meta["phase"] == "fwd+bwd"
    comp = df[df["kind"] == "compute"]
    # origin = the earliest kernel of all ranks (rank 0's SendRecv at 1000 µs)
    r0 = comp[comp["rank"] == 0].sort_values("start_s")
    assert list(zip(r0["phase"], r0["step"])) == [("fwd", 0), ("fwd", 1), ("bwd", 0), ("bwd", 1)]
    np.testing.assert_allclose(r0["start_s"].to_numpy(), np.array([2.0, 310.0, 1000.0, 1730.0]) * 1e-6)
    # the bwd block folds dot_do_o (before) and convert_dq (after) into the main kernel
    np.testing.assert_allclose(r0["end_s"].to_numpy(), np.array([302.0, 810.0, 1720.0, 2930.0]) * 1e-6)
    r1 = comp[comp["rank"] == 1].sort_values("start_s")
    np.testing.assert_allclose(r1["start_s"].to_numpy(), np.array([11.0, 620.0]) * 1e-6)
    # pairs come from the program: zigzag causal, 128 tokens per rank
    pairs = Plan("zigzag", 2, 256, "causal").pairs
    assert r0["pairs"].tolist() == [pairs[0, 0], pairs[0, 1], pairs[0, 0], pairs[0, 1]]
    assert r1["pairs"].tolist() == [pairs[1, 0], pairs[1, 1]]
    assert r1["flops"].tolist() == [pairs[1, 0] * 4 * 8 * 64, pairs[1, 1] * 4 * 8 * 64]
    # one fused SendRecv → a send to r+1 and a recv from r-1 with the same interval
    s0 = df[(df["rank"] == 0) & (df["kind"] == "send")].sort_values("start_s")
    assert list(zip(s0["phase"], s0["step"], s0["peer"])) == [("fwd", 0, 1), ("bwd", 0, 1)]
    assert s0["bytes"].tolist() == [2048.0, 4096.0]  # 1024 bf16 elements; explicit bytes
    np.testing.assert_allclose(s0["end_s"].to_numpy() - s0["start_s"].to_numpy(), [200e-6, 400e-6])
    rv1 = df[(df["rank"] == 1) & (df["kind"] == "recv")]
    assert len(rv1) == 1 and int(rv1["peer"].iloc[0]) == 0 and rv1["bytes"].iloc[0] == 0.0
    assert tl.meta["workload"]["heads"] == 8 and tl.meta["schedule"] == "zigzag"
    # a contiguous ring: rank 0 has no kernel at step 1 (its block after its own shard is empty), so
    # its two forward kernels are step 0 of two iterations, not steps 0 and 1
    tl = import_kineto(paths, dict(cfg, schedule="contiguous"))
    c0 = tl.df[(tl.df["rank"] == 0) & (tl.df["kind"] == "compute")].sort_values("start_s")
    assert list(zip(c0["phase"], c0["step"])) == [("fwd", 0), ("fwd", 0), ("bwd", 0), ("bwd", 0)]
    c1 = tl.df[(tl.df["rank"] == 1) & (tl.df["kind"] == "compute")].sort_values("start_s")
    assert list(zip(c1["phase"], c1["step"])) == [("fwd", 0), ("fwd", 1)]
    assert "program" in tl.meta["step_mapping"]


def test_base_time_is_added(tmp_path):
    ev = [_kernel("flash_fwd_kernel", 10.0, 5.0)]
    a = _write_rank(tmp_path, 0, ev, world=2, base_ns=1_000_000)  # +1000 µs
    b = _write_rank(tmp_path, 1, [_kernel("flash_fwd_kernel", 10.0, 5.0)], world=2)
    tl = import_kineto([a, b])
    comp = tl.df.sort_values("rank")
    np.testing.assert_allclose(comp["start_s"].to_numpy(), [1000e-6, 0.0])


def test_bad_inputs(tmp_path):
    paths = _two_rank_run(tmp_path)
    with pytest.raises(InputError, match="lacks the files of ranks"):
        import_kineto(paths[:1])
    with pytest.raises(InputError, match="given twice"):
        import_kineto([paths[0], paths[0]])
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"traceEvents": []}))
    with pytest.raises(InputError, match="distributedInfo"):
        import_kineto([str(plain)])
    with pytest.raises(InputError, match="does not exist"):
        import_kineto([str(tmp_path / "nope.json")])
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    with pytest.raises(InputError, match="not JSON"):
        import_kineto([str(junk)])
    empty = [_write_rank(tmp_path, r, [_kernel("ncclDevKernel_SendRecv", 1.0, 1.0)]) for r in (0, 1)]
    with pytest.raises(InputError, match="no attention kernels"):
        import_kineto(empty)


def test_kineto_runs_feed_calibrate_and_validate(tmp_path, capsys):
    """Two Kineto runs (one file per rank each) → `ringsim calibrate --run-config` → a calibration
    whose forward fit passes through the kernels' durations; then `ringsim validate` runs on them."""
    from ringsim.cli import main

    paths = []
    for run, scale in ((0, 1.0), (1, 2.0)):
        d = tmp_path / f"run{run}"
        d.mkdir()
        for rank in (0, 1):
            # contiguous causal, 2 ranks: rank 0 step 1 is empty (no kernel), every other block runs
            ev = [_kernel("ncclDevKernel_SendRecv(ncclDevComm*, unsigned long, ncclWork*)", 100.0, 50.0,
                          bytes=65536 * scale)]
            ev.append(_kernel("flash_fwd_kernel", 100.0, 1000.0 * scale))
            if rank == 1:
                ev.append(_kernel("flash_fwd_kernel", 1200.0 * scale, 1500.0 * scale))
            paths.append(_write_rank(d, rank, ev))
    # both runs: same configuration but a different seq_len cannot be given per run, so use one
    cfg = ["--run-config", "schedule=contiguous", "--run-config", "seq_len=256", "--run-config", "heads=8",
           "--run-config", "head_dim=64", "--run-config", "dtype=bf16"]
    out = tmp_path / "calib.json"
    with pytest.raises(SystemExit) as e:
        main(["calibrate", *paths, "-o", str(out), *cfg])
    assert e.value.code == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert len(doc["traces"]) == 2 and doc["traces"][0]["path"] == f"{paths[0]} + {paths[1]}"
    assert doc["trace_link_class"] == "link"  # GPU/NCCL traces: the default class
    assert set(doc["compute"]["fwd"]) >= {"diagonal", "full"}
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["validate", *paths[:2], "--calibration", str(out), "--topology", "dgx-h100-8", "--format", "json", *cfg])
    assert e.value.code == 0
    v = json.loads(capsys.readouterr().out)
    assert v["world_size"] == 2 and v["schedule"] == "contiguous" and v["makespan_error"] is not None
