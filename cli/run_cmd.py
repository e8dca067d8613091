"""`ringsim run`: a real context-parallel attention run with per-step traces (torch.distributed)."""
from __future__ import annotations

import click

from ringsim.schedules import SCHEDULES
from ringsim.units import InputError, parse_seq_len

from .common import output_path, render_table, to_json


def check_run_memory(cfg) -> None:
    """Every local rank draws the global q, k, v, dout (fp32) and, with --check, the reference
    needs T×T scores: refuse a run that cannot fit this host's memory before starting ranks."""
    import os

    try:
        host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    T, B = cfg.seq_len, cfg.batch
    per_rank = 4 * B * T * cfg.head_dim * (2 * cfg.heads + 2 * cfg.kv_heads)
    need = per_rank * cfg.world_size + (8 * B * T * T * 3 if cfg.check else 0)
    if need > host:
        raise InputError(f"this run needs about {need / 1e9:.3g} GB (each of {cfg.world_size} ranks holds the global "
                         f"inputs{', and --check a T×T reference' if cfg.check else ''}) but the host has "
                         f"{host / 1e9:.3g} GB; lower --seq-len, --batch or --heads")


@click.command()
@click.option("--world-size", type=int, default=2, show_default=True, help="Ranks (local processes).")
@click.option("--strategy", default=None,
              help="Strategy spec: a ring layout (contiguous, striped, zigzag; with --documents also zigzag-doc "
                   "or balanced[:K]), allgather[:tree], ulysses, usp:UxR [default: zigzag].")
@click.option("--schedule", default=None,
              help=f"The ring layout (the older name of --strategy for the ring): {', '.join(SCHEDULES)}; with "
                   "--documents also zigzag-doc or balanced[:K].")
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
@click.option("--trace", type=click.Path(dir_okay=False), default=None, callback=output_path,
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
def run(world_size, strategy, schedule, seq_len, heads, kv_heads, head_dim, batch, mask, phase, dtype, repeat, warmup,
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

    from ringsim.limits import check_float, check_int
    from ringsim.outputs import check_destination
    from ringsim.procguard import Terminated, signals_as_exceptions

    if strategy and schedule and strategy != schedule:
        raise InputError(f"give --strategy or --schedule, not both ({strategy} vs {schedule})")
    schedule = strategy or schedule or "zigzag"
    docs = None
    if documents:
        from ringsim.documents import parse_documents

        spec = parse_documents(documents, None)
        if spec.is_distribution:
            raise InputError("ringsim run takes an explicit pack for --documents (lengths, cu_seqlens or a file), "
                             "not a distribution")
        docs = [int(x) for x in spec.lengths]
        seq_len = str(sum(docs))
    cfg = RunConfig(world_size=world_size, schedule=schedule.strip().lower(), seq_len=parse_seq_len(seq_len),
                    documents=docs, heads=heads, kv_heads=kv_heads, head_dim=head_dim, batch=batch, mask=mask,
                    phase=phase, dtype=dtype, repeat=repeat, warmup=warmup, check=check, seed=seed, threads_per_rank=threads_per_rank,
                    kernel=kernel, timeout_s=timeout_s, instrument=not no_instrument, profile=profile_dir or None,
                    fault=os.environ.get("RINGSIM_TEST_FAULT") or None).validate()
    # after validate(): its messages for values below range stay; here the upper ends and finiteness
    check_float(timeout_s, "--timeout-s", "timeout", "e.g. 120")
    for name, value, lo, hi in (("--world-size", world_size, 1, 1 << 12), ("--heads", heads, 1, 1 << 12),
                                ("--kv-heads", kv_heads, 1, 1 << 12), ("--head-dim", head_dim, 1, 1 << 14),
                                ("--batch", batch, 1, 1 << 16), ("--repeat", repeat, 1, 1_000_000),
                                ("--warmup", warmup, 0, 1_000_000), ("--threads-per-rank", threads_per_rank, 1, 4096),
                                ("--seed", seed, 0, (1 << 63) - 1)):
        if value is not None:
            check_int(value, name, lo, hi)
    check_destination(trace, "--trace")
    check_run_memory(cfg)
    if profile_dir:  # the last check, so that nothing is created for a run refused above
        from ringsim.outputs import check_destinations

        if os.path.exists(profile_dir) and not os.path.isdir(profile_dir):
            raise InputError(f"--profile {profile_dir} is a file; give a directory (it is created if missing)")
        os.makedirs(profile_dir, exist_ok=True)
        check_destinations([(trace, "--trace"), (os.path.join(profile_dir, "ringsim.json"), "--profile's ringsim.json")])
    if under_torchrun():
        results, backend, device = run_under_torchrun(cfg)
        if results is None:  # not rank 0: rank 0 reports
            return 0
    else:
        click.echo(f"ringsim run: {world_size} local rank(s), gloo, {cfg.threads_per_rank} thread(s) per rank",
                   err=True)
        try:
            with signals_as_exceptions():  # SIGTERM/SIGHUP: stop the ranks and clean up as for Ctrl-C
                results = launch_local(cfg)
        except RankFailure as e:
            click.echo(f"ringsim run: error: {e}", err=True)
            return 1
        except Terminated as e:
            click.echo(f"ringsim run: {e}; ranks stopped, temporary files removed", err=True)
            return 128 + e.signum
        except KeyboardInterrupt:
            click.echo("ringsim run: interrupted; ranks stopped, temporary files removed", err=True)
            return 130
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
