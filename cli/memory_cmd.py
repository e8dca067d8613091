"""`ringsim memory`: KV-cache bytes per sequence and per GPU, and whether they fit."""
from __future__ import annotations

import click

from ringsim.memory import memory_row, parse_device_memory
from ringsim.outputs import check_destination
from ringsim.units import MAX_COUNT, InputError, format_bytes, parse_int_list

from .common import build_workloads, emit, format_option, render_csv, render_table, to_json, workload_options


@click.command()
@workload_options(default_model="llama3-70b", seq_len_default="128000", multi_model=True)
@click.option("--world-size", type=int, default=1, show_default=True, help="GPUs the sequence is sharded over.")
@click.option("--device-memory", default=None,
              help="Device to fit: a size (80GB, 96GB, 141GB) or a name (a100, h100, gh200, h200, b200).")
@format_option
def memory(model, layers, heads, kv_heads, head_dim, hidden, ffn, seq_len, batch, dtype, world_size,
           device_memory, fmt, output):
    """KV-cache memory per sequence and per GPU.

    --model and --seq-len take comma lists, so architectures (MHA/GQA, MLA, sliding window,
    hybrid SSM) and lengths compare in one table.

    \b
    Example: ringsim memory --model llama3-70b,deepseek-v3,mistral-7b,jamba-v0.1 --seq-len 128K
    """
    if world_size > MAX_COUNT:
        raise InputError(f"--world-size must be at most {MAX_COUNT:,}, got {world_size:,}")
    check_destination(output, "--output")
    dev = parse_device_memory(device_memory)
    rows = []
    for T in parse_int_list(seq_len, "--seq-len"):
        for w in build_workloads(model, layers, heads, kv_heads, head_dim, hidden, ffn, seq_len, batch, dtype,
                                 seq_len_override=T):
            rows.append(memory_row(w, world_size, dev))
    if fmt == "json":
        doc = rows[0] if len(rows) == 1 else {"rows": rows}
        if len(rows) == 1:
            doc = dict(doc, rows=rows)
        emit(to_json(doc), output)
    elif fmt == "csv":
        emit(render_csv(rows), output)
    else:
        cols = ["model", "attention", "seq_len", "world_size", "kv_bytes_per_token", "kv_cache", "per_gpu"]
        if dev is not None:
            cols += ["device", "fits"]
        pretty = [dict(r, kv_cache=format_bytes(r["kv_cache_bytes"]) + (" +state" if r["state_bytes"] else ""),
                       per_gpu=format_bytes(r["total_per_gpu_bytes"]),
                       device=format_bytes(dev) if dev else None,
                       fits="yes" if r["fits"] else ("no" if r["fits"] is False else None)) for r in rows]
        emit(render_table(pretty, cols), output)
