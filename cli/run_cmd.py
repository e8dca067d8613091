"""`ringsim run`: a real ring-attention run with per-step traces (torch.distributed)."""
from __future__ import annotations

import click

from ringsim.schedules import SCHEDULES
from ringsim.units import InputError, parse_seq_len

from .common import render_table, to_json


@click.command()
@click.option("--world-size", type=int, default=2, show_default=True, help="Ranks (local processes).")
@click.option("--schedule", default="zigzag", show_default=True,
              help=f"{', '.join(SCHEDULES)}; with --documents also zigzag-doc or balanced[:K].")
@click.option("--seq-len", default="4096", show_default=True, help="Tokens; K/M are binary.")
@click.option("--heads", type=int, default=4, show_default=True)
@click.option("--kv-heads", type=int, default=None, help="Key/value heads (GQA); default = --heads.")
@click.option("--head-dim", type=int, default=64, show_default=True)
@click.option("--batch", type=int, default=1, show_default=True)
@click.option("--mask", default="causal", show_default=True, help="full, causal or sliding:W.")
@click.option("--phase", type=click.Choice(["fwd", "fwd+bwd"]), default="fwd", show_default=True)
@click.option("--dtype", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@click.option("--repeat", type=int, default=3, show_default=True, help="Timed iterations (all recorded).")
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed iterations first.")
@click.option("--check", is_flag=True, help="Compare out, lse (and dq, dk, dv) with single-process attention.")
@click.option("--trace", type=click.Path(dir_okay=False), default=None,
              help="Write the measured timeline (Chrome trace JSON; .csv/.parquet by extension).")
@click.option("--profile", "profile_dir", type=click.Path(file_okay=False), default=None,
              help="Also record the timed iterations with torch.profiler: DIR/rank{r}.pt.trace.json per rank "
                   "(Kineto Chrome traces, CPU activities plus CUDA on GPUs) and ringsim's own timeline as "
                   "DIR/ringsim.json, so the same run exists in both forms (see `ringsim import-trace`).")
@click.option("--timeout-s", type=float, default=120.0, show_default=True,
              help="Watchdog: a rank with no ring-step progress for this long fails the run.")
@click.option("--threads-per-rank", type=int, default=None, help="Torch threads per rank [cores // world size].")
@click.option("--kernel", type=click.Choice(["auto", "fused", "plain"]), default="auto", show_default=True,
              help="Block kernel: fused SDPA op where it applies, or plain torch.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--documents", default=None, metavar="SPEC",
              help="Packed documents (lengths such as 1000,2000,1096, a cu_seqlens list or a file; they set "
                   "--seq-len): each token attends only within its document.")
@click.option("--no-instrument", is_flag=True, help="Record nothing (for overhead comparisons).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def run(world_size, schedule, seq_len, heads, kv_heads, head_dim, batch, mask, phase, dtype, repeat, warmup,
        check, trace, profile_dir, timeout_s, threads_per_rank, kernel, seed, documents, no_instrument, fmt):
    """Run ring attention for real on WORLD_SIZE local processes (gloo on CPU), or as one rank
    under an external torchrun (NCCL when CUDA is available), and record every rank's compute,
    transfers, waits and merges per step in the simulator's timeline schema."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError("ringsim run needs torch; install it with: pip install 'ringsim[torch]'") from None
    import os

    from ringsim.runtime.launch import RankFailure, launch_local, run_under_torchrun, under_torchrun
    from ringsim.runtime.runner import RunConfig, assemble, check_outputs

    docs = None
    if documents:
        from ringsim.documents import parse_documents

        spec = parse_documents(documents, None)
        if spec.is_distribution:
            raise InputError("ringsim run takes an explicit pack for --documents (lengths, cu_seqlens or a file), "
                             "not a distribution")
        docs = [int(x) for x in spec.lengths]
        seq_len = str(sum(docs))
    if profile_dir:
        parent = os.path.dirname(os.path.abspath(profile_dir))
        if not os.path.isdir(parent):
            raise InputError(f"cannot write --profile {profile_dir}: directory {parent} does not exist; create it first")
        os.makedirs(profile_dir, exist_ok=True)
    cfg = RunConfig(world_size=world_size, schedule=schedule.strip().lower(), seq_len=parse_seq_len(seq_len),
                    documents=docs, heads=heads, kv_heads=kv_heads, head_dim=head_dim, batch=batch, mask=mask,
                    phase=phase, dtype=dtype, repeat=repeat, warmup=warmup, check=check, seed=seed, threads_per_rank=threads_per_rank,
                    kernel=kernel, timeout_s=timeout_s, instrument=not no_instrument, profile=profile_dir or None,
                    fault=os.environ.get("RINGSIM_TEST_FAULT") or None).validate()
    if trace:
        d = os.path.dirname(os.path.abspath(trace))
        if not os.path.isdir(d):
            raise InputError(f"cannot write --trace {trace}: directory {d} does not exist; create it first")
    if under_torchrun():
        results, backend, device = run_under_torchrun(cfg)
        if results is None:  # not rank 0: rank 0 reports
            return 0
    else:
        click.echo(f"ringsim run: {world_size} local rank(s), gloo, {cfg.threads_per_rank} thread(s) per rank",
                   err=True)
        try:
            results = launch_local(cfg)
        except RankFailure as e:
            click.echo(f"ringsim run: error: {e}", err=True)
            return 1
        backend, device = "gloo", "cpu"
    tl, summary = assemble(cfg, results, backend, device)
    checked = check_outputs(cfg, results) if check else None
    if trace:
        tl.write(trace)
    if profile_dir:
        tl.write(os.path.join(profile_dir, "ringsim.json"))
    if fmt == "json":
        doc = {k: v for k, v in summary.items()}
        if checked is not None:
            doc["check"] = checked
        doc["trace"] = trace
        doc["profile"] = profile_dir
        click.echo(to_json(doc), nl=False)
    else:
        m = summary["meta"]
        lines = [f"run: {schedule}, G={world_size}, T={cfg.seq_len}, mask={cfg.mask}, {phase}, {dtype}, "
                 f"heads {heads}/{cfg.kv_heads} x {head_dim}, {backend} on {m['cpu_model'] if device == 'cpu' else m['gpu_model']}",
                 f"threads per rank: {cfg.threads_per_rank} ({m['oversubscription']} oversubscription)"
                 if m["oversubscribed"] else f"threads per rank: {cfg.threads_per_rank}",
                 "iteration wall time: median {:.4g} s, min {:.4g} s over {} timed iteration(s) ({} warm-up)".format(
                     summary["median_wall_s"], summary["min_wall_s"], repeat, warmup),
                 "per rank, per iteration:",
                 render_table(summary["per_rank"])]
        if checked is not None:
            lines.append(f"check vs single-process attention (atol {checked['atol']:g}, rtol {checked['rtol']:g}): "
                         + ("PASS" if checked["ok"] else "FAIL"))
            lines.append(render_table(checked["errors"]))
        if trace:
            lines.append(f"trace: {trace} ({len(tl)} intervals)")
        if profile_dir:
            lines.append(f"profile: {profile_dir} (torch.profiler traces rank0..rank{world_size - 1}.pt.trace.json "
                         f"and ringsim.json; summarise with `ringsim import-trace {profile_dir}`)")
        click.echo("\n".join(lines))
    if checked is not None and not checked["ok"]:
        click.echo("ringsim run: error: --check found errors above tolerance", err=True)
        return 1
    return 0
