"""KV-cache memory: the long-context cost table and the attention variants."""
import pytest

from ringsim.memory import memory_row, parse_device_memory
from ringsim.units import InputError
from ringsim.workload import Workload, build_model, get_model


@pytest.mark.parametrize("T,expected", [(8_000, 2_621_440_000), (32_000, 10_485_760_000),
                                        (128_000, 41_943_040_000), (1_000_000, 327_680_000_000)])
def test_llama3_70b_table(T, expected):
    w = Workload(get_model("llama3-70b"), T)
    assert w.kv_bytes_per_token() == 327_680
    assert w.kv_cache_bytes() == expected


def test_1m_does_not_fit_4x80gb():
    row = memory_row(Workload(get_model("llama3-70b"), 1_000_000), 4, parse_device_memory("80GB"))
    assert row["kv_shard_per_gpu_bytes"] == 81_920_000_000
    assert row["fits"] is False
    assert memory_row(Workload(get_model("llama3-70b"), 1_000_000), 8, 80e9)["fits"] is True


def test_variants():
    T = 131072
    # GQA vs MHA: llama2-7b caches 4x llama3-8b's per token (32 vs 8 kv heads)
    assert Workload(get_model("llama2-7b"), T).kv_bytes_per_token() == 4 * Workload(get_model("llama3-8b"), T).kv_bytes_per_token()
    # MLA: (512 + 64) values per token per layer, 61 layers, bf16
    assert Workload(get_model("deepseek-v3"), T).kv_bytes_per_token() == 61 * 576 * 2
    # sliding window: the sequence's K/V grows with T, the decode cache stops at the window
    sw = Workload(get_model("mistral-7b"), T)
    assert sw.kv_cache_bytes() == T * 32 * 2 * 8 * 128 * 2
    assert sw.decode_cache_bytes() == 4096 * 32 * 2 * 8 * 128 * 2
    assert Workload(get_model("mistral-7b"), 1000).decode_cache_bytes() == 1000 * 32 * 2 * 8 * 128 * 2
    # hybrid: only 4 of 32 layers are attention; Jamba paper: 4 GB of KV at 256K tokens in 16-bit
    hy = Workload(get_model("jamba-v0.1"), 256 * 1024)
    assert hy.kv_cache_bytes() == 256 * 1024 * 4 * 2 * 8 * 128 * 2
    assert 4.0e9 < hy.kv_cache_bytes() < 4.4e9
    assert hy.state_bytes() == 28 * 8192 * 19 * 2
    assert Workload(get_model("jamba-v0.1"), 1024).state_bytes() == hy.state_bytes()  # fixed size


def test_dtype_and_batch():
    m = get_model("llama3-8b")
    assert Workload(m, 1000, batch=2, dtype="fp32").kv_cache_bytes() == 4 * Workload(m, 1000, dtype="fp8").kv_cache_bytes() * 2
    with pytest.raises(InputError, match="unknown dtype"):
        Workload(m, 10, dtype="int3")


def test_custom_dims_and_flops():
    m = build_model(None, layers=2, heads=4, head_dim=16)
    assert m.kv_heads == 4
    w = Workload(m, 100)
    assert w.flops_per_pair() == 4 * 4 * 16  # 4·H·d per pair per layer
    with pytest.raises(InputError, match="multiple of kv-heads"):
        build_model(None, layers=2, heads=6, kv_heads=4, head_dim=16)
    with pytest.raises(InputError, match="missing --layers"):
        build_model(None, heads=4, head_dim=16)


@pytest.mark.parametrize("name", sorted(__import__("ringsim.workload", fromlist=["MODEL_PRESETS"]).MODEL_PRESETS))
def test_memory_and_simulate_print_the_same_kv_shard(name):
    """A key means one thing everywhere: at 128K on 8 GPUs `ringsim memory` and `ringsim simulate`
    print the same kv_shard_per_gpu_bytes (the K/V of a rank's own T/G tokens, all attention
    layers); the decode cache (a sliding window's rolling buffer) has its own key."""
    import json

    from click.testing import CliRunner

    from ringsim.cli import app

    runner = CliRunner()
    mem = runner.invoke(app, ["memory", "--model", name, "--seq-len", "128K", "--world-size", "8", "--format", "json"])
    sim = runner.invoke(app, ["simulate", "--model", name, "--seq-len", "128K", "--topology", "dgx-h100-8",
                              "--format", "json"])
    assert mem.exit_code == 0 and sim.exit_code == 0, (mem.output, sim.output)
    m, r = json.loads(mem.output), json.loads(sim.output)["results"][0]
    w = Workload(get_model(name), 128 * 1024)
    expected = 16 * 1024 * w.kv_bytes_per_token()
    assert m["kv_shard_per_gpu_bytes"] == r["kv_shard_per_gpu_bytes"] == expected
    assert "kv_cache_per_gpu_bytes" not in m and "kv_cache_per_gpu_bytes" not in r
    assert m["decode_cache_per_gpu_bytes"] == -(-w.decode_cache_bytes() // 8)
    if name == "mistral-7b":  # its own sliding mask unless the user overrides it
        assert r["mask"] == "sliding:4096" and m["decode_cache_per_gpu_bytes"] < m["kv_shard_per_gpu_bytes"]
