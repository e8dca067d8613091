"""`ringsim sweep`: a grid of what-if points with a progress bar, kept when interrupted."""
from __future__ import annotations

import os
import sys
import time

import click

from ringsim.units import InputError, parse_int_list, write_atomic

from .common import positive_float, render_csv, to_json


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
@click.option("--schedules", default=None, help="Comma list (default contiguous,striped,zigzag).")
@click.option("--mask", default=None,
              help="Comma list of masks (default: each model's own — its sliding window, else causal).")
@click.option("--model", default=None, help="Comma list of model presets (default llama3-8b).")
@click.option("--phase", default=None, help="Comma list: fwd, fwd+bwd (default fwd).")
@click.option("--batch", type=int, default=None)
@click.option("--dtype", default=None)
@click.option("--engine", type=click.Choice(["auto", "des", "fast"]), default=None)
@click.option("--calibration", type=click.Path(dir_okay=False), default=None,
              help="calib.json from `ringsim calibrate`, replacing the roofline defaults.")
@click.option("--jobs", "-j", type=int, default=None, help="Parallel local processes (default: all cores).")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="dask: run points on a dask.distributed cluster (pip install 'ringsim[dask]').")
@click.option("--scheduler", default=None, help="Dask scheduler address (default: a local cluster).")
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "parquet"]), default="csv", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write results here (atomically; rewritten as points finish, so an interrupt keeps them).")
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Also write an HTML sweep report.")
def sweep(study, seq_len, world_size, topology, bw_scale, bw_class, schedules, mask, model, phase, batch, dtype,
          engine, calibration, jobs, executor, scheduler, fmt, output, report):
    """Run a grid of what-if points (the cartesian product of the option lists).

    \b
    Example: ringsim sweep --topology dgx-h100-8 --model llama3-8b --seq-len 16K,64K,256K,1M \\
                           --schedules contiguous,zigzag --format csv --report sweep.html
    """
    from ringsim.schedules import SCHEDULES
    from ringsim.sweep import Interrupted, Study, run_study

    load = {}
    if study:
        from ringsim.sweep import load_study

        load = load_study(study)
    opt = lambda name, val, default: val if val is not None else load.get(name, default)
    scheds = _names(opt("schedules", schedules, "contiguous,striped,zigzag"))
    bad = [s for s in scheds if s not in SCHEDULES]
    if bad:
        raise InputError(f"unknown schedule(s) {', '.join(bad)}; use a comma list of {', '.join(SCHEDULES)}")
    phases = _names(opt("phase", phase, "fwd"))
    if any(p not in ("fwd", "fwd+bwd") for p in phases):
        raise InputError(f"--phase takes fwd and/or fwd+bwd, got {','.join(phases)}")
    ws = opt("world_size", world_size, None)
    st = Study(
        seq_lens=parse_int_list(opt("seq_len", seq_len, "128K"), "--seq-len"),
        world_sizes=parse_int_list(ws, "--world-size") if ws else [None],
        topologies=_names(opt("topology", topology, "dgx-h100-8")),
        bw_scales=_floats(opt("bw_scale", bw_scale, "1"), "--bw-scale"),
        bw_class=opt("bw_class", bw_class, None),
        schedules=scheds,
        masks=_names(opt("mask", mask, "")) or [None],
        models=_names(opt("model", model, "llama3-8b")),
        phases=phases,
        batch=int(opt("batch", batch, 1)),
        dtype=str(opt("dtype", dtype, "bf16")),
        engine=str(opt("engine", engine, "auto")),
        calibration=opt("calibration", calibration, None),
    )
    if st.calibration:
        from ringsim.calibration import load_calibration

        load_calibration(st.calibration)  # fail fast on a bad file
    # fail fast on names that would fail every point
    from ringsim.topoload import load_topology
    from ringsim.workload import get_model

    for t in st.topologies:
        load_topology(t)
    for m in st.models:
        get_model(m)
    if fmt == "parquet" and not output:
        raise InputError("--format parquet writes binary; give --output FILE.parquet")
    points = st.points()
    progress = _Progress(len(points))
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
        rows = run_study(points, n_jobs, on_done, executor, scheduler)
    except Interrupted as e:
        rows = e.rows
        data = _serialise(rows, fmt, output)
        if output:
            write_atomic(output, data)
        else:
            click.echo(data, nl=False)
        click.echo(f"ringsim sweep: interrupted; kept {len(rows)} of {len(points)} finished points", err=True)
        sys.exit(130)
    data = _serialise(rows, fmt, output)
    if output:
        write_atomic(output, data)
    else:
        click.echo(data, nl=False)
    errors = [r for r in rows if r.get("error")]
    if errors:
        click.echo(f"ringsim sweep: {len(errors)} of {len(rows)} points could not run (see the error column); "
                   f"first: {errors[0]['error']}", err=True)
    if report:
        from ringsim.sweepreport import write_sweep_report

        write_sweep_report(rows, report)
        click.echo(f"ringsim sweep: report written to {report}", err=True)
