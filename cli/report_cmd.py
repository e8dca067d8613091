"""`ringsim report [TRACES...] [--calibration calib.json] [--validation v.json] -o out.html`."""
from __future__ import annotations


import click

from ringsim.outputs import check_destination
from ringsim.units import InputError, read_json

from .calibrate_cmd import parse_kv
from .common import output_path


def _read_json(path: str, what: str, hint: str) -> dict:
    doc = read_json(path, f"{what} file", hint)
    if not isinstance(doc, dict):
        raise InputError(f"{path} is not a {what} JSON document; {hint}")
    return doc


@click.command()
@click.argument("traces", nargs=-1, type=click.Path())
@click.option("--calibration", type=click.Path(dir_okay=False), default=None,
              help="calib.json: used for the predictions and shown as fit plots.")
@click.option("--validation", type=click.Path(dir_okay=False), default=None,
              help="JSON from `ringsim validate --format json` to tabulate (default: validate the TRACES here).")
@click.option("--topology", default=None, help="Machine the runs used (default: localhost-cpu for CPU runs).")
@click.option("--run-config", multiple=True, metavar="KEY=VALUE", help="Configuration of Kineto traces.")
@click.option("--max-gantt", type=int, default=12, show_default=True, help="Most timelines drawn.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), callback=output_path,
              help="HTML file to write (atomically).")
def report(traces, calibration, validation, topology, run_config, max_gantt, output):
    """Write ONE self-contained HTML report (works offline): measured and predicted timelines side
    by side, per-rank utilisation, error per step, the schedule comparison and the calibration fits."""
    from ringsim.calibration import load_calibration, load_measured
    from ringsim.report import write_report
    from ringsim.validate import validate_runs

    if not traces and not calibration and not validation:
        raise InputError("nothing to report; give traces, --calibration or --validation")
    if not 0 <= max_gantt <= 1000:
        raise InputError(f"--max-gantt must be in [0, 1000], got {max_gantt}")
    check_destination(output, "--output")
    runs = load_measured(list(traces), parse_kv(run_config) or None) if traces else []
    calib_doc = cost = None
    if calibration:
        cost = load_calibration(calibration)
        calib_doc = cost.doc
    topo = None
    if topology:
        from ringsim.topoload import load_topology

        topo = load_topology(topology)
    from ringsim.validate import measured_config

    predicted, vdoc, skipped = {}, None, []
    measured_runs = []
    for label, tl in runs:
        if tl.meta.get("source") == "simulated":
            continue
        try:
            measured_config(tl.meta, label)
            measured_runs.append((label, tl))
        except InputError as e:  # drawn, but without a prediction
            skipped.append(f"{label}: {e}")
    if measured_runs:
        vdoc, pairs = validate_runs(measured_runs, cost, topo)
        predicted = {label: pred for label, _, pred in pairs}
    if validation:
        vdoc = _read_json(validation, "validation", "write one with `ringsim validate ... --format json -o v.json`")
    note = (f"{len(runs)} trace(s); cost model: {'calibrated (' + calibration + ')' if calibration else 'roofline'}"
            + (f"; validation from {validation}" if validation else "")
            + (f"; not predicted (no configuration): {'; '.join(skipped)}" if skipped else ""))
    for line in skipped:
        click.echo(f"ringsim report: warning: {line}", err=True)
    write_report(output, runs, predicted, vdoc, calib_doc, max_gantt, note)
    click.echo(f"wrote {output}", err=True)
