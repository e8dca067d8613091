"""`ringsim calibrate TRACE... -o calib.json`: fit the cost model to measured runs."""
from __future__ import annotations

import click

from ringsim.outputs import check_destination
from ringsim.units import InputError

from .common import emit, output_path, render_table, to_json


def _describe_fit(e: dict, profile: bool = False) -> str:
    """The chosen compute model of one block kind, in a few words (``profile``: the work is the
    kernel profile's seconds for the block's calls, not its pairs)."""
    chosen, m = e["chosen"], e.get(e["chosen"], {})
    if profile:
        if chosen == "roofline":
            return f"{m['overhead_s'] * 1e6:.4g} us + {m['seconds_per_pair']:.4g} x profile time"
        if chosen == "rows":
            return (f"{m['seconds_per_sqrt_pair']:.4g} x sqrt(profile s) + "
                    f"{m['seconds_per_pair']:.4g} x profile time")
        if chosen == "power":
            return f"{m['coefficient_s']:.4g} s x (profile s)^{m['exponent']:.3f}"
        if chosen == "table":
            return f"table of {len(m['pairs'])} profile times"
    if chosen == "roofline":
        return f"{m['overhead_s'] * 1e6:.4g} us + {m['seconds_per_pair'] * 1e9:.4g} ns/pair"
    if chosen == "rows":
        return f"{m['seconds_per_sqrt_pair'] * 1e9:.4g} ns x sqrt(pairs) + {m['seconds_per_pair'] * 1e9:.4g} ns/pair"
    if chosen == "power":
        return f"{m['coefficient_s']:.4g} s x pairs^{m['exponent']:.3f}"
    if chosen == "table":
        return f"table of {len(m['pairs'])} sizes"
    return chosen


def parse_kv(items) -> dict:
    """``KEY=VALUE`` pairs (integers become ints) for runs whose traces lack their configuration."""
    out = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"--run-config {item!r} is malformed; write KEY=VALUE, e.g. schedule=zigzag")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        v = v.strip()
        out[k] = int(v) if v.isdigit() else v
    return out


def warn_unmatched(runs) -> None:
    """One line on stderr per imported profiler run whose events did not all match its program."""
    for label, tl in runs:
        m = tl.meta.get("mapping") or {}
        if m.get("problems"):
            first = (m.get("first_problems") or [{}])[0]
            click.echo(f"ringsim: warning: {label}: {m['problems']} profiler event group(s) could not be matched to the "
                       f"program and were left out (first: rank {first.get('rank')}, {first.get('what')}: expected "
                       f"{first.get('expected')}, found {first.get('found')}); see `ringsim import-trace --mapping`",
                       err=True)


def summary_rows(doc: dict) -> list[dict]:
    rows = []
    prof = (doc.get("work_basis") or {}).get("kind") == "profile-seconds"
    _describe = lambda e: _describe_fit(e, prof)  # noqa: E731
    for phase, table in doc["compute"].items():
        for kind, e in table.items():
            if kind == "empty":
                rows.append({"component": f"compute {phase} {kind}", "model": "constant",
                             "fit": f"{e['seconds'] * 1e6:.4g} us", "mape": e.get("mape"), "n": e["n_samples"]})
                continue
            if kind in ("memory", "memory_ops"):  # steps of memory ops only / a block's memory ops, by bytes
                rows.append({"component": f"memory {'steps' if kind == 'memory' else 'ops in blocks'} {phase}",
                             "model": "latency + bytes",
                             "fit": f"{e['latency_s'] * 1e6:.4g} us + {e['seconds_per_byte'] * 1e12:.4g} ps/B",
                             "mape": e.get("mape"), "n": e["n_samples"]})
                continue
            rows.append({"component": f"compute {phase} {kind}", "model": e["chosen"], "fit": _describe(e),
                         "mape": e["mape"], "roofline_mape": e["roofline"]["mape_loo"],
                         "table_mape": e["table"]["mape_loo"], "n": e["n_samples"]})
    for cls, l in doc.get("links", {}).items():
        bw = float(l["bandwidth_Bps"])
        rows.append({"component": f"link {cls}", "model": "latency + bytes/bandwidth",
                     "fit": f"{l['latency_s'] * 1e6:.4g} us, {bw / 1e9:.4g} GB/s", "mape": l["mape"],
                     "n": l["n_samples"]})
        if l.get("contention"):
            rows.append({"component": f"link {cls} core sharing", "model": "load^gamma",
                         "fit": f"gamma {l['contention']['gamma']:.3g}", "mape": l["contention"]["mape"]})
    c = doc.get("contention", {})
    if c.get("n_samples"):
        rows.append({"component": "compute core sharing", "model": "load^gamma", "fit": f"gamma {c['gamma']:.3g}",
                     "mape": c.get("mape"), "n": c["n_samples"]})
    for load, level in (c.get("by_load") or {}).items():  # processor sharing at a measured load level
        for phase in ("fwd", "bwd"):
            for kind, e in (level.get(phase) or {}).items():
                if kind in ("empty", "*", "memory", "memory_ops") or "chosen" not in e:
                    continue
                rows.append({"component": f"load {load} {phase} {kind} (core-s)", "model": e["chosen"],
                             "fit": f"{_describe(e)}, x {float(e.get('level_scale', 1.0)):.3g}",
                             "mape": e["mape"], "n": e["n_samples"]})
        tf = level.get("transfer")
        if tf:
            bw = float(tf["bandwidth_Bps"])
            rows.append({"component": f"load {load} transfer (core-s)", "model": "latency + bytes/bandwidth",
                         "fit": f"{tf['latency_s'] * 1e6:.4g} us, {bw / 1e9:.4g} GB/s", "mape": tf["mape"],
                         "n": tf["n_samples"]})
        g = level.get("gap_s") or {}
        rows.append({"component": f"load {load} off-core gap", "model": "mean",
                     "fit": ", ".join(f"{k} {v * 1e3:.3g} ms" for k, v in g.items())})
    return rows


@click.command()
@click.argument("traces", nargs=-1, required=True, type=click.Path())
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), callback=output_path,
              help="calib.json to write (atomically).")
@click.option("--run-config", multiple=True, metavar="KEY=VALUE",
              help="For Kineto traces, which do not record it (ringsim run --profile embeds it): schedule, seq_len, "
                   "mask, heads, kv_heads, head_dim, batch, dtype, implementation, link_class, device, cpu_cores, "
                   "threads_per_rank (repeat the option).")
@click.option("--write-profile", "profile_out", type=click.Path(dir_okay=False), default=None, callback=output_path,
              help="Also write the runs' kernel calls as a kernel profile (YAML; `--kernels FILE` reads it): "
                   "median time per call shape, squares as knots. Needs fwd+bwd runs with a core or GPU per rank.")
@click.option("--profile-name", default="measured-calls", show_default=True, help="Name of that profile.")
@click.option("--profile", "start_profile", default=None, metavar="PROFILE",
              help="Start from a kernel profile (a shipped name or a YAML file, e.g. one `ringsim profile-kernels` "
                   "measured on this machine): a block's work is the profile's time for its calls, so the profile "
                   "gives how cost depends on call shape and the runs give the scale and overheads.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="How to print the fit summary on stdout.")
def calibrate(traces, output, run_config, profile_out, profile_name, start_profile, fmt):
    """Fit compute time per block kind and phase, link latency/bandwidth per link class and the
    core-sharing slowdown from measured traces (ringsim Chrome traces, or PyTorch-profiler traces:
    one file per rank, or the directory `ringsim run --profile` wrote); write them with their fit
    errors (MAPE) to OUTPUT. With --write-profile, also the kernel profile of the runs' attention
    calls (the same from CPU traces and GPU Kineto traces)."""
    from ringsim.calibration import calibrate as fit, load_measured, write_calibration

    check_destination(output, "--output")
    if profile_out:
        check_destination(profile_out, "--write-profile")
    start = None
    if start_profile:
        from ringsim.kernelprofile import load_profile

        start = load_profile(start_profile)
    runs = load_measured(list(traces), parse_kv(run_config) or None)
    warn_unmatched(runs)
    doc = fit(runs, profile=start)
    profile = None
    if profile_out:  # built before anything is written: a run that cannot give one leaves no output
        from ringsim.calibration.kernels import profile_from_runs

        profile = profile_from_runs(runs, profile_name, "ringsim calibrate " + " ".join(traces))
    write_calibration(doc, output)
    if profile is not None:
        profile.save(profile_out)
    rows = summary_rows(doc)
    if fmt == "json":
        emit(to_json({"output": output, "components": rows, "compute_mape": doc["compute_mape"],
                      **({"profile": profile_out, "profile_points": len(profile.points)} if profile else {})}), None)
    else:
        emit(f"calibrated from {len(runs)} run(s) → {output} (compute MAPE {doc['compute_mape']:.3g})\n"
             + (f"work of a block: kernel profile {start.name}'s seconds for its calls (fits are per profile-second)\n"
                if start is not None else "")
             + (f"kernel profile {profile.name} ({len(profile.points)} call shapes) → {profile_out}\n" if profile else "")
             + render_table(rows, ["component", "model", "fit", "mape", "roofline_mape", "table_mape", "n"]), None)
