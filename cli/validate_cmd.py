"""`ringsim validate TRACE... --calibration calib.json`: predicted vs measured, step by step."""
from __future__ import annotations

import click

from ringsim.outputs import check_destination

from .calibrate_cmd import parse_kv, warn_unmatched
from .common import emit, output_path, render_table, to_json


def _pct(v):
    return "-" if v is None else f"{v * 100:+.1f}%"


def render_validation(doc: dict) -> str:
    cases = doc.get("cases") or [doc]
    lines = []
    rows = [{"trace": c["trace"], "schedule": c["schedule"], "G": c["world_size"], "T": c["seq_len"],
             "phase": c["phase"], "measured_ms": c["measured_makespan_s"] * 1e3,
             "predicted_ms": c["predicted_makespan_s"] * 1e3, "error": _pct(c["makespan_error"])} for c in cases]
    lines.append(render_table(rows, ["trace", "schedule", "G", "T", "phase", "measured_ms", "predicted_ms", "error"]))
    if len(cases) == 1:
        c = cases[0]
        lines.append(f"cost model: {c['cost_model'].get('name')}; topology {c['topology']}; "
                     f"{c['iterations']} measured iteration(s)\n")
        lines.append("per rank (mean per iteration):\n" + render_table(
            [{"rank": r["rank"], "compute_ms": r["measured_compute_s"] * 1e3,
              "pred_compute_ms": r["predicted_compute_s"] * 1e3, "compute_err": _pct(r["compute_error"]),
              "transfer_ms": r["measured_transfer_s"] * 1e3, "pred_transfer_ms": r["predicted_transfer_s"] * 1e3,
              "transfer_err": _pct(r["transfer_error"]), "wait_ms": r["measured_wait_s"] * 1e3,
              "pred_wait_ms": r["predicted_wait_s"] * 1e3} for r in c["per_rank"]]))
        lines.append("per step:\n" + render_table(
            [{"phase": s["phase"], "step": s["step"], "compute_err": _pct(s["compute_error"]),
              "transfer_err": _pct(s["transfer_error"]),
              "wait_ms": None if s["measured_wait_s"] is None else s["measured_wait_s"] * 1e3,
              "pred_wait_ms": None if s["predicted_wait_s"] is None else s["predicted_wait_s"] * 1e3,
              "end_err": _pct(s["end_error"])} for s in c["per_step"]]))
    for r in doc.get("schedule_ranking", []):
        sp = r.get("speedup_vs_contiguous", {})
        extra = "; ".join(f"{s} ×{v['measured']:.3g} measured / ×{v['predicted']:.3g} predicted"
                          for s, v in sp.items() if s != "contiguous")
        lines.append(f"G={r['world_size']} T={r['seq_len']} {r['phase']}: measured order {','.join(r['measured_order'])}, "
                     f"predicted {','.join(r['predicted_order'])} → {'MATCH' if r['ranking_matches'] else 'MISMATCH'}"
                     + (f" ({extra})" if extra else "") + "\n")
    return "".join(lines)


@click.command()
@click.argument("traces", nargs=-1, required=True, type=click.Path())
@click.option("--calibration", type=click.Path(dir_okay=False), default=None,
              help="calib.json from `ringsim calibrate` (default: the roofline cost model).")
@click.option("--topology", default=None, help="Preset or YAML of the machine the run used (default: localhost-cpu, as many processes as the run had).")
@click.option("--engine", type=click.Choice(["auto", "des", "fast"]), default="auto", show_default=True)
@click.option("--run-config", multiple=True, metavar="KEY=VALUE",
              help="For Kineto traces: schedule, seq_len, mask, heads, kv_heads, head_dim, batch, dtype.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, callback=output_path,
              help="Write to this file (atomically) instead of stdout.")
def validate(traces, calibration, topology, engine, run_config, fmt, output):
    """Simulate exactly each measured configuration and report the signed makespan error
    ((predicted − measured)/measured), per-rank and per-step errors, and whether the schedule
    ranking matches when several traces of one configuration are given."""
    from ringsim.calibration import load_calibration, load_measured
    from ringsim.validate import validate_runs

    check_destination(output, "--output")
    cost = load_calibration(calibration) if calibration else None
    topo = None
    if topology:
        from ringsim.topoload import load_topology

        topo = load_topology(topology)
    runs = load_measured(list(traces), parse_kv(run_config) or None)
    warn_unmatched(runs)
    doc, _ = validate_runs(runs, cost, topo, engine)
    emit(to_json(doc) if fmt == "json" else render_validation(doc), output)
