"""`ringsim import-trace FILE|DIR...`: what ringsim finds in PyTorch-profiler (Kineto) traces."""
from __future__ import annotations

import click

from .calibrate_cmd import parse_kv
from .common import emit, output_path, render_table, to_json


def _fmt_counts(pairs, limit: int = 3, width: int = 70) -> str:
    out = []
    for name, n in list(pairs)[:limit]:
        name = str(name)
        out.append(f"{name if len(name) <= width else name[:width - 1] + '…'} x{n}")
    return "; ".join(out) if out else "none"


def _problem_line(p: dict) -> str:
    where = [f"rank {p.get('rank')}"]
    if p.get("phase") is not None:
        where.append(f"{p['phase']}" + (f" step {p['step']}" if p.get("step") is not None else ""))
    elif p.get("steps"):
        where.append(str(p["steps"]))
    return f"  - {p['what']}: {', '.join(where)}: expected {p.get('expected')}, found {p.get('found')}"


def render_summary(doc: dict, paths) -> str:
    """One screen: the files, what each rank holds, and the verdict."""
    lines = []
    ws = doc["world_size"]
    lines.append(f"{doc['files']} trace file(s); world size {ws if ws is not None else 'unknown'}; "
                 f"backend {', '.join(doc['backends']) or 'unknown'}; read at the "
                 f"{'/'.join(doc['levels'])} level; devices: {', '.join(doc['devices'][:2]) or 'none recorded'}")
    rows = [dict(r, file=(r["file"] if len(str(r["file"])) <= 28 else "…" + str(r["file"])[-27:]))
            for r in doc["per_rank"]]
    if len(rows) > 12:  # one screen: the first and last ranks
        rows = rows[:6] + [{"file": f"… {len(rows) - 12} more"}] + rows[-6:]
    lines.append(render_table(rows, ["rank", "file", "level", "span_ms", "attn_fwd", "attn_bwd", "p2p", "p2p_MB",
                                     "collectives", "markers", "events"]).rstrip("\n"))
    lines.append(f"attention calls: {doc['calls']} ({_fmt_counts(doc['attention_kernels'], 2)})")
    unk = doc.get("transfers_launch_unknown", 0)
    lines.append(f"point-to-point transfers: {doc['transfers']} ({_fmt_counts(doc['p2p_kernels'], 2)})"
                 + (f"; {unk} launched before the trace began (a collective's or not: unknown)" if unk else ""))
    lines.append(f"collectives: {_fmt_counts(doc['collectives'].items(), 6, 30)}")
    lines.append(f"time span over all files: {doc['time_span_ms']:.4g} ms")
    if doc["config"]:
        cfg = " ".join(f"{k}={v}" for k, v in doc["config"].items())
        lines.append(f"run configuration ({doc['config_source']}): {cfg}")
    m = doc.get("mapping")
    if m:
        lines.append(f"mapping onto the program ({m.get('schedule')}, {m.get('phase')}): "
                     f"{m.get('calls_mapped', 0)} call(s) and {m.get('transfers_mapped', 0)} transfer(s) mapped in "
                     f"{m.get('occurrences', 0)} occurrence(s); unmapped: {m.get('calls_unmapped', 0)} call(s), "
                     f"{m.get('transfers_unmapped', 0)} transfer(s); step markers agree "
                     f"{m.get('marker_agree', 0)}/{m.get('marker_agree', 0) + m.get('marker_disagree', 0)}")
        for p in m.get("first_problems", []):
            lines.append(_problem_line(p))
        if m.get("problems", 0) > len(m.get("first_problems", [])):
            lines.append(f"  … {m['problems'] - len(m['first_problems'])} more (ringsim import-trace --mapping)")
    if doc["validatable"]:
        what = " ".join(str(p) for p in paths)
        lines.append(f"=> a run ringsim can validate: ringsim calibrate {what} -o calib.json; "
                     f"ringsim validate {what} --calibration calib.json")
    else:
        lines.append("=> cannot validate these traces:")
        lines += [f"  - {r}" for r in doc["reasons"]]
    return "\n".join(lines) + "\n"


@click.command(name="import-trace")
@click.argument("traces", nargs=-1, required=True, type=click.Path())
@click.option("--run-config", multiple=True, metavar="KEY=VALUE",
              help="The run configuration the profiler does not record (ringsim run --profile embeds it): schedule, "
                   "seq_len, mask, heads, kv_heads, head_dim, batch, dtype, implementation, link_class, device, "
                   "cpu_cores, threads_per_rank (repeat the option).")
@click.option("--summary", "view", flag_value="summary", default=True,
              help="Print what was found and whether it can be validated (the default).")
@click.option("--mapping", "view", flag_value="mapping",
              help="Print every mapped call and transfer with its phase and step, and every problem.")
@click.option("--timeline", type=click.Path(dir_okay=False), default=None, callback=output_path,
              help="Also write the mapped ringsim timeline (Chrome JSON; .csv/.parquet by extension), atomically.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, callback=output_path,
              help="Write to this file (atomically) instead of stdout.")
def import_trace(traces, run_config, view, timeline, fmt, output):
    """Read PyTorch-profiler (Kineto) traces — one file per rank, or the directory `ringsim run
    --profile` wrote — and say what ringsim finds: ranks, attention calls, point-to-point and
    collective transfers, time spans; for a ring-attention run with its configuration, how every
    call and transfer maps onto the program's steps; otherwise why it cannot be validated."""
    from ringsim.kineto import import_kineto, summarize
    from ringsim.outputs import check_destinations

    check_destinations([(timeline, "--timeline"), (output, "--output")])
    config = parse_kv(run_config) or None
    if view == "mapping" or timeline:
        det: dict = {}
        tl = import_kineto(list(traces), config, details=det)
        if timeline:
            tl.write(timeline)
    if view == "mapping":
        doc = {"stats": det["stats"], "problems": det["problems"], "assignments": det["assignments"]}
        if fmt == "json":
            emit(to_json(doc), output)
            return
        rows = [{**a, "start_us": a["start_us"] - min(x["start_us"] for x in det["assignments"]),
                 "dur_us": a["end_us"] - a["start_us"]} for a in det["assignments"]]
        rows.sort(key=lambda a: (a["rank"], a["start_us"]))
        text = render_table(rows, ["rank", "occurrence", "phase", "step", "kind", "start_us", "dur_us", "name"])
        text += "".join(_problem_line(p) + "\n" for p in det["problems"]) or "no problems\n"
        emit(text, output)
        return
    doc = summarize(list(traces), config)
    emit(to_json(doc) if fmt == "json" else render_summary(doc, traces), output)
