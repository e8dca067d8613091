"""`ringsim sweep`: a grid of what-if points with a progress bar, kept when interrupted."""
from __future__ import annotations

import os
import sys
import time

import click

from ringsim.units import InputError, parse_int_list, parse_seq_len, write_atomic

from .common import output_path, positive_float, render_csv, to_json


def _floats(text: str, what: str) -> list[float]:
    out = [positive_float(p.strip(), f"{what} value") for p in str(text).split(",") if p.strip()]
    if not out:
        raise InputError(f"{what} is empty; give a comma list such as 0.5,1,2")
    return out


def _names(text: str) -> list[str]:
    return [p.strip() for p in str(text).split(",") if p.strip()]


class _Progress:
    """A one-line progress bar on stderr (a plain line per point when stderr is not a terminal;
    past 200 points, at most two lines a second and the last)."""

    def __init__(self, total: int):
        self.total, self.t0 = total, time.monotonic()
        self.tty = sys.stderr.isatty()
        self.last = -1.0

    def __call__(self, row: dict, done: int) -> None:
        now = time.monotonic()
        if self.total > 200 and done != self.total and now - self.last < 0.5:
            return
        self.last = now
        width = 30
        fill = int(width * done / max(self.total, 1))
        bar = "#" * fill + "-" * (width - fill)
        what = (f"{row['schedule']} T={row['seq_len']} G={row['world_size']}" +
                (" (error)" if row.get("error") else ""))
        line = f"[{bar}] {done}/{self.total} points {time.monotonic() - self.t0:.1f}s  {what}"
        if self.tty:
            sys.stderr.write("\r" + line[:120].ljust(120) + ("\n" if done == self.total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _serialise(rows, fmt, output):
    from ringsim.sweep import ROW_COLUMNS

    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise InputError("--format parquet needs pyarrow; pip install 'ringsim[parquet]' (or use csv/json)") from None
        if not output:
            raise InputError("--format parquet writes binary; give --output FILE.parquet")
        import io

        import pandas as pd

        buf = io.BytesIO()
        pd.DataFrame(rows, columns=ROW_COLUMNS).to_parquet(buf, index=False)
        return buf.getvalue()
    if fmt == "json":
        return to_json({"results": rows})
    return render_csv(rows, ROW_COLUMNS)


@click.command()
@click.option("--study", type=click.Path(dir_okay=False), default=None,
              help="YAML study file with the same keys as these options (they override it).")
@click.option("--seq-len", default=None, help="Comma list, K/M binary (default 128K).")
@click.option("--world-size", default=None, help="Comma list (default: every GPU of the topology).")
@click.option("--topology", default=None, help="Comma list of presets or YAML paths (default dgx-h100-8).")
@click.option("--bw-scale", default=None, help="Comma list of link-bandwidth factors (default 1).")
@click.option("--bw-class", default=None, help="Link class --bw-scale applies to (default: all links).")
@click.option("--strategies", default=None,
              help="Comma list of strategy specs (zigzag, allgather, ulysses, usp:4x2, double-ring:8x4, …).")
@click.option("--schedules", default=None,
              help="Comma list of ring layouts, the older name of --strategies (default contiguous,striped,zigzag).")
@click.option("--cached-tokens", default=None, help="Cached prefix for pass-kv / pass-q (K/M binary).")
@click.option("--device-memory", default=None,
              help="Memory per GPU; points needing more are error rows (default: the topology's device).")
@click.option("--mask", default=None,
              help="Comma list of masks (default: each model's own — its sliding window, else causal).")
@click.option("--model", default=None, help="Comma list of model presets (default llama3-8b).")
@click.option("--phase", default=None, help="Comma list: fwd, fwd+bwd (default fwd).")
@click.option("--batch", type=int, default=None)
@click.option("--dtype", default=None)
@click.option("--engine", type=click.Choice(["auto", "des", "fast"]), default=None)
@click.option("--kernels", default=None, metavar="fa2|fa3|cudnn|roofline|FILE",
              help="Attention kernel costs (default: each device's own; see `ringsim simulate --help`).")
@click.option("--documents", default=None, metavar="SPEC",
              help="Packed documents: a distribution to draw one pack per point at its --seq-len "
                   "(lognormal:mean=8K,sigma=1.2), or one explicit pack (its length must be the --seq-len).")
@click.option("--seed", type=int, default=None, help="Seed for drawing packs (default 0).")
@click.option("--implementation", type=click.Choice(["ringsim", "ring-flash-attn"]), default=None,
              help="Memory work between kernels (default ringsim).")
@click.option("--calibration", type=click.Path(dir_okay=False), default=None,
              help="calib.json from `ringsim calibrate`, replacing the roofline defaults.")
@click.option("--jobs", "-j", type=int, default=None, help="Parallel local processes (default: all cores).")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="dask: run points on a dask.distributed cluster (pip install 'ringsim[dask]').")
@click.option("--scheduler", default=None, help="Dask scheduler address (default: a local cluster).")
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "parquet"]), default="csv", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, callback=output_path,
              help="Write results here (atomically; rewritten as points finish, so an interrupt keeps them).")
@click.option("--report", type=click.Path(dir_okay=False), default=None, callback=output_path,
              help="Also write an HTML sweep report.")
def sweep(study, seq_len, world_size, topology, bw_scale, bw_class, strategies, schedules, cached_tokens,
          device_memory, mask, model, phase, batch, dtype, engine, kernels, documents, seed, implementation,
          calibration, jobs, executor, scheduler, fmt, output,
          report):
    """Run a grid of what-if points (the cartesian product of the option lists).

    \b
    Example: ringsim sweep --topology dgx-h100-8 --model llama3-8b --seq-len 16K,64K,256K,1M \\
                           --schedules contiguous,zigzag --format csv --report sweep.html
    """
    from ringsim import limits
    from ringsim.limits import check_int
    from ringsim.outputs import check_destinations
    from ringsim.procguard import signals_as_exceptions
    from ringsim.schedules import parse_mask
    from ringsim.sweep import Interrupted, Study, check_point, run_study
    from ringsim.workload import normalize_dtype

    # every destination and the output format first: nothing is computed for a result that cannot be kept
    check_destinations([(output, "--output"), (report, "--report")])
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise InputError("--format parquet needs pyarrow; pip install 'ringsim[parquet]' (or use csv/json)") from None
        if not output:
            raise InputError("--format parquet writes binary; give --output FILE.parquet")
    if jobs is not None:
        check_int(jobs, "--jobs", 1, 1024)

    from .simulate_cmd import parse_specs

    load = {}
    if study:
        from ringsim.sweep import load_study

        load = load_study(study)

    def opt(name, val, default):
        return val if val is not None else load.get(name, default)

    def what(name, val):  # the flag, or the study file's key, that a value came from
        return f"--{name.replace('_', '-')}" if val is not None or name not in load else f"{study}: {name}"

    if strategies and schedules:
        raise InputError("give --strategies or --schedules, not both (--schedules is the older name)")
    cached = opt("cached_tokens", cached_tokens, None)
    key = "strategies" if (strategies or ("strategies" in load and not schedules)) else "schedules"
    listed = opt(key, strategies if key == "strategies" else schedules, "contiguous,striped,zigzag")
    try:
        scheds = parse_specs(listed, f"--{key}", cached, opt("documents", documents, None))
    except InputError as e:
        raise InputError(f"{study}: {e}" if what(key, strategies or schedules).startswith(str(study)) else str(e)) \
            from None
    if device_memory or load.get("device_memory"):
        from ringsim.memory import parse_device_memory

        parse_device_memory(opt("device_memory", device_memory, None))  # fail fast on a bad size
    phases = _names(opt("phase", phase, "fwd"))
    if not phases or any(p not in ("fwd", "fwd+bwd") for p in phases):
        raise InputError(f"--phase takes fwd and/or fwd+bwd, got {','.join(phases)}"
                         + (f" (from {study})" if phase is None and "phase" in load else ""))
    masks = _names(opt("mask", mask, ""))  # none given: each model's own default mask
    if not masks and (mask is not None or "mask" in load):
        raise InputError(f"{what('mask', mask)} is empty; give full, causal or sliding:W")
    for m in masks:
        try:
            parse_mask(m)
        except InputError as e:
            raise InputError(f"{what('mask', mask)}: {e}") from None
    batch_text = str(opt("batch", batch, 1))
    try:
        batch_value = int(batch_text)
    except ValueError:
        raise InputError(f"{what('batch', batch)} {batch_text!r} is not an integer; give e.g. 1") from None
    check_int(batch_value, what("batch", batch), 1, 1 << 16)
    dtype_value = str(opt("dtype", dtype, "bf16"))
    try:
        dtype_value = normalize_dtype(dtype_value)
    except InputError as e:
        raise InputError(f"{what('dtype', dtype)}: {e}") from None
    engine_value = str(opt("engine", engine, "auto"))
    if engine_value not in ("auto", "des", "fast"):
        raise InputError(f"{what('engine', engine)}: unknown engine {engine_value!r}; use auto, des or fast")
    ws = opt("world_size", world_size, None)
    st = Study(
        seq_lens=parse_int_list(opt("seq_len", seq_len, "128K"), what("seq_len", seq_len)),
        world_sizes=(parse_int_list(ws, what("world_size", world_size), limits.RANKS.value,
                                    f" ranks (or raise the limit with {limits.RANKS.env}=N)") if ws else [None]),
        topologies=_names(opt("topology", topology, "dgx-h100-8")),
        bw_scales=_floats(opt("bw_scale", bw_scale, "1"), what("bw_scale", bw_scale)),
        bw_class=opt("bw_class", bw_class, None),
        schedules=scheds,
        masks=masks or [None],
        models=_names(opt("model", model, "llama3-8b")),
        phases=phases,
        batch=batch_value,
        dtype=dtype_value,
        engine=engine_value,
        calibration=opt("calibration", calibration, None),
        kernels=opt("kernels", kernels, None),
        implementation=str(opt("implementation", implementation, "ringsim")),
        documents=opt("documents", documents, None),
        seed=int(opt("seed", seed, 0)),
        cached_tokens=parse_seq_len(cached, "--cached-tokens") if cached else None,
        device_memory=opt("device_memory", device_memory, None),
    )
    if st.documents:
        from ringsim.documents import parse_documents

        parse_documents(st.documents, None)  # fail fast on a bad spec
    if st.calibration and st.kernels:
        raise InputError("give --calibration or --kernels, not both (a calibration is its own cost model)")
    if not st.topologies or not st.models:
        raise InputError("--topology and --model need at least one name each")
    if st.calibration:
        from ringsim.calibration import load_calibration

        load_calibration(st.calibration)  # fail fast on a bad file
    # fail fast on names that would fail every point
    from ringsim.topoload import load_topology
    from ringsim.workload import get_model

    from ringsim.costs import resolve_kernels

    topos = {}
    for t in st.topologies:
        topos[t] = topo = load_topology(t)
        if not st.calibration:
            resolve_kernels(st.kernels, topo)  # a family the device has no profile of fails here, once
    for m in st.models:
        get_model(m)
    points = st.points()
    errors = [check_point(p, topos) for p in points]
    if points and all(errors):
        raise InputError(f"no point of this sweep can run ({len(points)} of {len(points)} invalid); "
                         f"first: {errors[0]}")
    valid = sum(1 for e in errors if not e)
    progress = _Progress(valid)
    finished: list[dict] = []
    written = [time.monotonic()]

    def on_done(row, n):
        progress(row, n)
        finished.append(row)
        # the partial output is rewritten at most once a second (every point would make a
        # 10,000-point sweep quadratic); the final rows are written below either way
        if output and fmt != "parquet" and time.monotonic() - written[0] >= 1.0:
            from ringsim.sweep import add_speedups

            write_atomic(output, _serialise(add_speedups([dict(r) for r in finished]), fmt, output))
            written[0] = time.monotonic()

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n_jobs = jobs or cores or 1
    try:
        with signals_as_exceptions():  # SIGTERM/SIGHUP stop the workers and keep the finished points, as Ctrl-C
            rows = run_study(points, n_jobs, on_done, executor, scheduler, errors)
    except Interrupted as e:
        import signal

        rows = e.rows
        how = f"stopped by {signal.Signals(e.signum).name}" if e.signum else "interrupted"
        if not rows:
            click.echo(f"ringsim sweep: {how} before any point finished; nothing written", err=True)
            sys.exit(128 + (e.signum or signal.SIGINT))
        data = _serialise(rows, fmt, output)
        if output:
            write_atomic(output, data)
        else:
            click.echo(data, nl=False)
        click.echo(f"ringsim sweep: {how}; kept {len(rows)} of {len(points)} finished points", err=True)
        sys.exit(128 + (e.signum or signal.SIGINT))
    data = _serialise(rows, fmt, output)
    if output:
        write_atomic(output, data)
    else:
        click.echo(data, nl=False)
    failed = [r for r in rows if r.get("error")]
    if failed:
        click.echo(f"ringsim sweep: {len(failed)} of {len(rows)} points could not run (see the error column); "
                   f"first: {failed[0]['error']}", err=True)
    if report:
        from ringsim.sweepreport import write_sweep_report

        write_sweep_report(rows, report)
        click.echo(f"ringsim sweep: report written to {report}", err=True)
