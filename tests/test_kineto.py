"""Kineto (PyTorch profiler) import on GPU-style traces written here: kernels launched in program
order (cuda_runtime launches with correlation ids), NCCL SendRecv kernels with message sizes,
FA2 helper kernels, elementwise merges, several iterations, ranks idle at some steps, a call in
two kernels, a kernel missing — and traces that are not ring-attention runs.

The real torch.profiler traces of CPU/gloo runs are tested in test_kineto_profile.py."""
import gzip
import json

import numpy as np
import pytest

from ringsim.kineto import attention_phase, attention_role, import_kineto, nccl_directions, summarize
from ringsim.schedules import Plan
from ringsim.units import InputError

FWD = "void flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>>(Flash_fwd_params)"
BWD_PRE = "void flash_bwd_dot_do_o_kernel<true>(Flash_bwd_params)"
BWD = "void flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<Flash_bwd_kernel_traits<128>>(Flash_bwd_params)"
BWD_POST = "void flash_bwd_convert_dq_kernel<Flash_bwd_kernel_traits<128>>(Flash_bwd_params)"
SENDRECV = "ncclDevKernel_SendRecv(ncclDevComm*, unsigned long, ncclWork*)"
MERGE = "void at::native::vectorized_elementwise_kernel<4, at::native::sigmoid_kernel_cuda>(int, ...)"
EXPAND = "void at::native::index_elementwise_kernel<128, 4, at::native::gpu_index_kernel<...>>(long, ...)"
REDUCE = "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::func_wrapper_t<...>>>(...)"


class Rank:
    """One rank's trace: kernels appended in launch order (a cudaLaunchKernel per kernel on the
    CPU thread, 10 µs apart); each kernel's device start is given, so device order may differ."""

    def __init__(self, rank, world=2, backend="nccl"):
        self.rank, self.world, self.backend = rank, world, backend
        self.events = []
        self.cpu = 100.0
        self.gpu = 1000.0
        self.corr = 0

    def launch(self, name, dur, start=None, cat="kernel", stream=7, cpu_ops=(), **args):
        self.corr += 1
        self.events.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1,
                            "ts": self.cpu, "dur": 4.0, "args": {"correlation": self.corr}})
        for op_name, op_args in cpu_ops:  # CPU ops around the launch (e.g. the collective that made it)
            self.events.append({"ph": "X", "cat": "cpu_op", "name": op_name, "pid": 1, "tid": 1,
                                "ts": self.cpu - 2.0, "dur": 8.0, "args": dict(op_args)})
        self.cpu += 10.0
        start = self.gpu if start is None else start
        self.events.append({"ph": "X", "cat": cat, "name": name, "pid": 0, "tid": stream, "ts": start, "dur": dur,
                            "args": {"correlation": self.corr, "stream": stream, "device": 0, **args}})
        self.gpu = max(self.gpu, start + dur + 2.0)
        return start

    def write(self, path, **extra):
        doc = {"schemaVersion": 1, "deviceProperties": [{"name": "NVIDIA H100 80GB HBM3"}],
               "distributedInfo": {"backend": self.backend, "rank": self.rank, "world_size": self.world},
               "traceEvents": self.events + [  # an instant event is no interval
                   {"ph": "i", "cat": "kernel", "name": "flash_fwd_kernel", "pid": 0, "tid": 7, "ts": 1.0}], **extra}
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "wt") as f:
            json.dump(doc, f)
        return str(path)


def _program_rank(r: Rank, cfg: dict, iterations=2, kernels_per_call=1, fa2_helpers=True, skip=None,
                  gqa=False):
    """Emit what a GPU ring-attention rank launches for ``cfg``'s program: per step one SendRecv
    kernel per batched post (bytes in its args), the call's attention kernel(s) — FA2 backward
    with its dot_do_o / convert_dq helpers; with ``gqa`` K/V expanded to every query head before
    it and dK/dV summed back after it — and an elementwise merge kernel after each call.
    ``skip``: (iteration, phase, step) whose main kernel is left out."""
    from ringsim.kineto import _program, _workload, expected_steps

    G = r.world
    prog = _program(cfg, G, "fwd+bwd" if cfg.get("phase", "fwd+bwd") == "fwd+bwd" else "fwd")
    steps = expected_steps(prog, r.rank)
    for it in range(iterations):
        for phase, lst in steps.items():
            for es in lst:
                if es.start_posts:
                    nbytes = sum(p.bytes for side, p in es.start_posts if side == "send")
                    # the NCCL kernel runs on its own stream: its device start may follow the
                    # attention kernel's even though it was launched first
                    r.launch(SENDRECV, 300.0, start=r.gpu + 40.0, stream=20, **{"In msg nelems": nbytes / 2,
                                                                               "dtype": "BFloat16"})
                if es.active:
                    if skip == (it, phase, es.step):
                        continue
                    main = FWD if phase == "fwd" else BWD
                    if phase == "bwd" and fa2_helpers:
                        r.launch(BWD_PRE, 10.0)
                    if gqa:
                        r.launch(EXPAND, 6.0)
                    for k in range(kernels_per_call):
                        r.launch(main, 200.0 + 100.0 * es.step)
                    if phase == "bwd" and fa2_helpers:
                        r.launch(BWD_POST, 8.0)
                    if phase == "bwd" and gqa:
                        r.launch(REDUCE, 12.0)
                    r.launch(MERGE, 20.0)
                if es.end_posts:
                    nbytes = sum(p.bytes for side, p in es.end_posts if side == "send")
                    r.launch(SENDRECV, 300.0, stream=20, **{"In msg nelems": nbytes / 2, "dtype": "BFloat16"})
    return prog


CFG = {"seq_len": 256, "mask": "causal", "heads": 8, "kv_heads": 8, "head_dim": 64, "dtype": "bf16"}


def _run(tmp_path, schedule, G, **kw):
    cfg = dict(CFG, schedule=schedule, **kw.pop("extra", {}))
    paths = []
    for rank in range(G):
        r = Rank(rank, G)
        _program_rank(r, cfg, **kw)
        paths.append(r.write(tmp_path / f"rank{rank}.json"))
    return paths, cfg


def test_name_rules():
    assert attention_phase("void flash_fwd_splitkv_kernel<...>") == "fwd"
    assert attention_phase("fmha_cutlassB_f16_aligned_64x64_k64_sm80") == "bwd"
    assert attention_phase("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_3") == "bwd"
    assert attention_phase("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7") == "fwd"
    assert attention_phase("void flash::FlashAttnBwdSm90<...>") == "bwd"
    assert attention_phase("fmhaSm100aKernel_QkvE4m3OBfloat16H64PagedKvCausalP16VarSeqQ128Kv128") == "fwd"
    assert attention_phase("attn_fwd") == "fwd" and attention_phase("sage_fwd") == "fwd"
    # cache, quantisation, rotary and GEMM kernels are not attention, whatever their names hold
    assert attention_phase("void vllm::reshape_and_cache_flash_kernel<__nv_bfloat16>(...)") is None
    assert attention_phase("void tensorrt_llm::kernels::quantize_with_block_size<...>(flashinfer::QuantizationSFLayout)") is None
    assert attention_phase("sage_quant_kernel") is None and attention_phase("ampere_sgemm_128x64_nn") is None
    assert attention_role(BWD_PRE) == "pre" and attention_role(BWD_POST) == "post" and attention_role(BWD) == "main"
    assert attention_role("void flash_fwd_splitkv_combine_kernel<...>") == "post"
    assert nccl_directions(SENDRECV) == ("send", "recv")
    assert nccl_directions("ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t(ncclWorkElem)") == ("send", "recv")
    assert nccl_directions("ncclKernel_Send_RING") == ("send",)
    assert nccl_directions("ncclKernel_AllReduce_RING_LL_Sum_float(ncclWorkElem)") == ()


def test_zigzag_gpu_two_iterations_map_onto_the_program(tmp_path):
    """zigzag, G=2, fwd+bwd, 2 iterations, ring-flash-attn's backward protocol (dK/dV posted at
    the end of a step): every kernel lands on its step, FA2's helpers fold into their call; the
    CPU-side attention op that launched a kernel is not a second call."""
    cfg = dict(CFG, schedule="zigzag", implementation="ring-flash-attn")
    paths = []
    for rank in (0, 1):
        r = Rank(rank)
        r.events.append({"ph": "X", "cat": "cpu_op", "name": "aten::_flash_attention_forward", "pid": 1, "tid": 1,
                         "ts": 0.0, "dur": 5.0})
        _program_rank(r, cfg)
        paths.append(r.write(tmp_path / f"rank{rank}.json"))
    det = {}
    tl = import_kineto(paths, cfg, details=det)
    assert det["problems"] == [] and det["stats"]["calls_mapped"] == 2 * 2 * 2 * 2
    assert tl.meta["kineto_level"] == "gpu" and tl.meta["device"] == "gpu" and tl.meta["link_class"] == "link"
    df = tl.df
    comp = df[df["kind"] == "compute"].sort_values(["rank", "start_s"])
    pairs = Plan("zigzag", 2, 256, "causal").pairs
    for rank in (0, 1):
        c = comp[comp["rank"] == rank]
        assert list(zip(c["phase"], c["step"])) == [("fwd", 0), ("fwd", 1), ("bwd", 0), ("bwd", 1)] * 2
        assert c["pairs"].tolist() == [pairs[rank, 0], pairs[rank, 1]] * 4
        assert c["peer"].tolist() == [rank, 1 - rank] * 4  # the K/V owner
    # a backward call spans dot_do_o .. convert_dq: 10 + 200(+100·step) + 8 µs plus the gaps
    b0 = comp[(comp["rank"] == 0) & (comp["phase"] == "bwd") & (comp["step"] == 0)]
    np.testing.assert_allclose((b0["end_s"] - b0["start_s"]).to_numpy(), [(10 + 2 + 200 + 2 + 8) * 1e-6] * 2)
    # transfers: the program's messages with the bytes the kernels recorded
    s0 = df[(df["rank"] == 0) & (df["kind"] == "send")].sort_values("start_s")
    assert list(zip(s0["phase"], s0["step"], s0["peer"])) == [("fwd", 0, 1), ("bwd", 0, 1), ("bwd", 0, 1),
                                                             ("bwd", 1, 1)] * 2
    kv = 2 * 128 * 8 * 64 * 2
    assert s0["bytes"].tolist()[:4] == [kv, kv, 2 * kv, 2 * kv]  # dK/dV in fp32
    assert len(df[(df["kind"] == "recv") & (df["rank"] == 1)]) == 8
    assert (df[df["kind"] == "merge"]["end_s"] > df[df["kind"] == "merge"]["start_s"]).all()


def test_contiguous_idle_steps_and_several_iterations(tmp_path):
    """contiguous, G=4: rank r has calls only at steps ≤ r, so rank 0 runs one forward and one
    backward kernel per iteration; the others steps get zero-length rows, never a kernel."""
    paths, cfg = _run(tmp_path, "contiguous", 4, iterations=3)
    det = {}
    tl = import_kineto(paths, cfg, details=det)
    assert det["problems"] == []
    df = tl.df
    comp = df[df["kind"] == "compute"]
    for rank in range(4):
        c = comp[(comp["rank"] == rank) & (comp["phase"] == "fwd")].sort_values("start_s")
        assert list(c["step"]) == [0, 1, 2, 3] * 3
        live = c[c["pairs"] > 0]
        assert sorted(set(live["step"])) == list(range(rank + 1))
        assert ((c["end_s"] == c["start_s"]) == (c["pairs"] == 0)).all()
    # every step's transfers are there: forward steps 0..2, backward 0..4 (the return)
    for rank in range(4):
        s = df[(df["rank"] == rank) & (df["kind"] == "send")]
        assert sorted(set(zip(s["phase"], s["step"]))) == [("bwd", k) for k in range(5)] + [("fwd", k) for k in range(3)]
        assert len(s) == 3 * 8


def test_gqa_backward_expand_and_sum_around_the_fa2_helpers(tmp_path):
    """GQA: K/V expanded to every query head before the kernel (between FA2's dot_do_o and the
    main kernel) and dK/dV summed back after it: still one call per step, the sum part of its
    merge, and every step mapped."""
    cfg = dict(CFG, schedule="contiguous", seq_len=192, heads=8, kv_heads=2)
    paths = []
    for rank in range(3):
        r = Rank(rank, 3)
        _program_rank(r, cfg, gqa=True)
        paths.append(r.write(tmp_path / f"rank{rank}.json"))
    det = {}
    tl = import_kineto(paths, cfg, details=det)
    assert det["problems"] == []
    calls = [a for a in det["assignments"] if a["kind"] == "call"]
    assert all("(+" in a["name"] for a in calls if a["phase"] == "bwd")  # dot_do_o + main + convert_dq
    comp = tl.df[(tl.df["kind"] == "compute") & (tl.df["pairs"] > 0)]
    for rank in range(3):
        c = comp[comp["rank"] == rank]
        assert sorted(set(zip(c["phase"], c["step"]))) == sorted({(ph, s) for ph in ("fwd", "bwd") for s in range(rank + 1)})
    merges = tl.df[(tl.df["kind"] == "merge") & (tl.df["phase"] == "bwd")]
    assert ((merges["end_s"] - merges["start_s"]) > 30e-6).all()  # the sum (12 µs) and the merge (20 µs)


def test_a_profile_that_starts_mid_iteration(tmp_path):
    """The profiler started while rank 0's first forward call ran: the trace holds iteration 0
    from its backward on; what it holds maps, nothing is reported missing before it began."""
    cfg = dict(CFG, schedule="zigzag")
    paths = []
    for rank in (0, 1):
        r = Rank(rank)
        _program_rank(r, cfg, iterations=3)
        first_bwd = min(e["ts"] for e in r.events if e["name"] == BWD_PRE)
        launches = {e["args"]["correlation"] for e in r.events if e["cat"] == "cuda_runtime"}
        cut = {e["args"]["correlation"] for e in r.events if e["cat"] != "cuda_runtime" and e["ts"] < first_bwd - 45}
        r.events = [e for e in r.events if e["args"].get("correlation") not in cut]
        assert launches - cut
        paths.append(r.write(tmp_path / f"rank{rank}.json"))
    det = {}
    tl = import_kineto(paths, cfg, details=det)
    # the partial iteration's backward is mapped, then left out so that iterations stay whole
    assert [p["what"] for p in det["problems"]] == ["occurrences", "occurrences"]
    assert det["stats"]["occurrences_dropped"] == 2 and det["stats"]["calls_mapped"] == 2 * (2 + 2 * 4)
    c0 = tl.df[(tl.df["rank"] == 0) & (tl.df["kind"] == "compute")].sort_values("start_s")
    assert list(zip(c0["phase"], c0["step"])) == [("fwd", 0), ("fwd", 1), ("bwd", 0), ("bwd", 1)] * 2
    from ringsim.calibration import assign_iterations

    assert sorted(set(assign_iterations(tl.df))) == [0, 1]


def test_a_call_in_two_kernels_is_one_call(tmp_path):
    paths, cfg = _run(tmp_path, "striped", 2, kernels_per_call=2, fa2_helpers=False)
    det = {}
    tl = import_kineto(paths, cfg, details=det)
    assert det["problems"] == [] and det["stats"]["calls_mapped"] == 2 * 2 * 2 * 2
    names = [a["name"] for a in det["assignments"] if a["kind"] == "call"]
    assert all(n.endswith("(+1)") for n in names)


def test_a_missing_kernel_is_reported_not_guessed(tmp_path):
    cfg = dict(CFG, schedule="zigzag")
    r0, r1 = Rank(0), Rank(1)
    _program_rank(r0, cfg)
    _program_rank(r1, cfg, skip=(1, "fwd", 1))  # iteration 1 lacks rank 1's forward kernel of step 1
    paths = [r0.write(tmp_path / "a.json"), r1.write(tmp_path / "b.json")]
    det = {}
    tl = import_kineto(paths, cfg, details=det)
    calls = [p for p in det["problems"] if p["what"] == "calls"]
    assert len(calls) == 1 and calls[0]["rank"] == 1 and calls[0]["phase"] == "fwd"
    assert "a run of 1 fwd call" in calls[0]["found"] and "multiple of 2" in calls[0]["expected"]
    # nothing of that run is in the timeline, and iterations stay whole: iteration 0 on both ranks
    c1 = tl.df[(tl.df["rank"] == 1) & (tl.df["kind"] == "compute") & (tl.df["phase"] == "fwd")]
    assert len(c1) == 2
    assert {p["what"] for p in det["problems"]} == {"calls", "transfers", "occurrences"}
    from ringsim.calibration import assign_iterations

    assert set(assign_iterations(tl.df)) == {0} and len(tl.df[tl.df["kind"] == "compute"]) == 2 * 4
    assert tl.meta["mapping"]["problems"] == len(det["problems"]) >= 1
    doc = summarize(paths, cfg)
    assert not doc["validatable"] and any("could not be matched" in r for r in doc["reasons"])


def test_wrong_bytes_and_counts_are_reported(tmp_path):
    cfg = dict(CFG, schedule="zigzag")
    paths = []
    for rank in (0, 1):
        r = Rank(rank)
        _program_rank(r, dict(cfg, heads=4, kv_heads=4), iterations=1)  # half the bytes
        paths.append(r.write(tmp_path / f"r{rank}.json.gz"))  # gzip too
    det = {}
    import_kineto(paths, cfg, details=det)
    assert {p["what"] for p in det["problems"]} == {"bytes"}
    assert len(det["problems"]) == 2 * 4  # every batched post of both ranks: fwd 0, bwd 0, 1 and 2 (the return)
    import re

    for p in det["problems"]:
        want, got = (float(re.search(r"(\d+) bytes", p[k]).group(1)) for k in ("expected", "found"))
        assert got == want / 2, p


def test_collective_sendrecv_kernels_are_not_transfers(tmp_path):
    """An all-to-all made of SendRecv kernels (a recommender model's embeddings) and all-reduces:
    the summary counts them as collectives and says why this is no ring to validate."""
    paths = []
    for rank in (0, 1):
        r = Rank(rank, world=4)
        for _ in range(3):
            r.launch(SENDRECV, 50.0, cpu_ops=[("c10d::alltoall_base_", {}), ("record_param_comms", {})])
            r.launch("ampere_sgemm_128x64_nn", 100.0)
            r.launch("ncclKernel_AllReduce_RING_LL_Sum_float(ncclWorkElem)", 30.0)
        paths.append(r.write(tmp_path / f"rank{rank}.json"))
    doc = summarize(paths)
    assert doc["transfers"] == 0 and doc["calls"] == 0
    assert doc["collectives"] == {"alltoallbase": 6, "allreduce": 6}
    assert not doc["validatable"]
    text = " ".join(doc["reasons"])
    assert "2 of 4 ranks" in text and "no attention calls" in text and "only by collectives" in text
    with pytest.raises(InputError, match="lacks the files of ranks"):
        import_kineto(paths)


def test_summary_of_a_ring_run_and_without_configuration(tmp_path):
    paths, cfg = _run(tmp_path, "zigzag", 2)
    doc = summarize(paths, cfg)
    assert doc["validatable"] and doc["reasons"] == [] and doc["mapping"]["problems"] == 0
    assert doc["ranks"] == [0, 1] and doc["calls"] == 16 and doc["transfers"] == 2 * 2 * 4
    bare = summarize(paths)
    assert not bare["validatable"] and any("no run configuration" in r for r in bare["reasons"])
    # imported without a configuration: nothing is mapped onto steps (no k mod G guess)
    tl = import_kineto(paths)
    assert set(tl.df["step"]) == {-1} and "no run configuration" in tl.meta["step_mapping"]


def test_base_time_is_added(tmp_path):
    a, b = Rank(0), Rank(1)
    a.launch(FWD, 5.0, start=10.0)
    b.launch(FWD, 5.0, start=10.0)
    pa = a.write(tmp_path / "a.json", baseTimeNanoseconds=1_000_000)  # +1000 µs
    pb = b.write(tmp_path / "b.json")
    tl = import_kineto([pa, pb])
    comp = tl.df.sort_values("rank")
    np.testing.assert_allclose(comp["start_s"].to_numpy(), [1000e-6, 0.0])


def test_bad_inputs(tmp_path):
    paths, cfg = _run(tmp_path, "zigzag", 2)
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
    with pytest.raises(InputError, match="not a readable trace"):
        import_kineto([str(junk)])
    fake_gz = tmp_path / "fake.json.gz"
    fake_gz.write_text("{}")
    with pytest.raises(InputError, match="not a readable trace"):
        import_kineto([str(fake_gz)])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no trace files"):
        import_kineto([str(empty)])
    comm_only = []
    for rank in (0, 1):
        r = Rank(rank)
        r.launch(SENDRECV, 5.0)
        comm_only.append(r.write(tmp_path / f"c{rank}.json"))
    with pytest.raises(InputError, match="no attention calls"):
        import_kineto(comm_only)


def test_import_trace_command(tmp_path, capsys):
    from ringsim.cli import main

    paths, cfg = _run(tmp_path, "zigzag", 2)
    rc = ["--run-config", "schedule=zigzag", "--run-config", "seq_len=256", "--run-config", "heads=8",
          "--run-config", "head_dim=64", "--run-config", "dtype=bf16"]
    out = tmp_path / "tl.json"
    with pytest.raises(SystemExit) as e:
        main(["import-trace", *paths, *rc, "--timeline", str(out)])
    assert e.value.code == 0
    text = capsys.readouterr().out
    # 2 ranks x 2 iterations: 4 calls and 4 batched posts (8 messages: a send and a receive each)
    assert "a run ringsim can validate" in text and "16 call(s) and 32 transfer(s) mapped" in text
    assert len(text.splitlines()) <= 24  # one screen
    from ringsim.timeline import read_timeline

    assert set(read_timeline(out).df["kind"]) == {"compute", "merge", "send", "recv", "wait"}
    with pytest.raises(SystemExit) as e:
        main(["import-trace", *paths, *rc, "--mapping", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert e.value.code == 0 and doc["problems"] == [] and len(doc["assignments"]) == 16 + 32
    with pytest.raises(SystemExit) as e:
        main(["import-trace", *paths])
    assert e.value.code == 0 and "no run configuration" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["import-trace", str(tmp_path / "missing.json")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "does not exist" in err


def test_kineto_runs_feed_calibrate_and_validate(tmp_path, capsys):
    """Two profiled runs (one file per rank each) → `ringsim calibrate --run-config` → a
    calibration whose forward fit follows the kernels' durations; then `ringsim validate` on them."""
    from ringsim.cli import main

    paths = []
    for run in (0, 1):
        d = tmp_path / f"run{run}"
        d.mkdir()
        ps, cfg = _run(d, "contiguous", 2, iterations=2 + run)
        paths += ps
    cfg_args = ["--run-config", "schedule=contiguous", "--run-config", "seq_len=256", "--run-config", "heads=8",
                "--run-config", "head_dim=64", "--run-config", "dtype=bf16"]
    out = tmp_path / "calib.json"
    with pytest.raises(SystemExit) as e:
        main(["calibrate", *paths, "-o", str(out), *cfg_args])
    assert e.value.code == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert len(doc["traces"]) == 2 and doc["traces"][0]["path"] == f"{paths[0]} + {paths[1]}"
    assert doc["trace_link_class"] == "link"  # GPU/NCCL traces: the default class
    assert set(doc["compute"]["fwd"]) >= {"diagonal", "full"}
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["validate", str(tmp_path / "run0"), "--calibration", str(out), "--topology", "dgx-h100-8",
              "--format", "json", *cfg_args])
    assert e.value.code == 0
    v = json.loads(capsys.readouterr().out)
    assert v["world_size"] == 2 and v["schedule"] == "contiguous" and v["makespan_error"] is not None
    assert [(s["phase"], s["step"]) for s in v["per_step"]] == [("fwd", 0), ("fwd", 1), ("bwd", 0), ("bwd", 1),
                                                               ("bwd", 2)]
