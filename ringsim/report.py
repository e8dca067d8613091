"""The validation report: one self-contained HTML file (plotly.js inlined, so it works offline).

Sections, each present when its input is:

1. **Validation table** — per measured run: measured and predicted makespan and the signed error
   (predicted − measured)/measured, worst per-rank compute/transfer errors.
2. **Schedule comparison** — per configuration: measured vs predicted makespan per schedule, the
   speedup over contiguous, and whether the ranking matches.
3. **Timelines** — measured and predicted Gantt charts side by side on one numeric time axis
   (milliseconds from the iteration start; horizontal bars with a base, not date axes), one lane
   per rank; compute, merge and wait on one half of the lane, send and recv on the other. A measured run
   with several timed iterations shows its median iteration.
4. **Per-rank utilisation** — compute busy time / makespan, measured vs predicted.
5. **Error per step** — the signed error of when each ring step ends.
6. **Calibration fits** — per phase and block kind, the per-size medians the fit saw and the
   chosen model (roofline line or table) over the range; per link class, message time vs size.
"""
from __future__ import annotations

import html
import math

import numpy as np

from .calibration import assign_iterations
from .timeline import Timeline
from .units import write_atomic

__all__ = ["render_report", "write_report", "gantt_rows"]

KIND_COLORS = {"compute": "#1f77b4", "merge": "#17becf", "wait": "#d62728", "send": "#2ca02c", "recv": "#ff7f0e"}
# (bar offset, bar width) inside a rank's lane: compute-like rows on one half, transfers on the other
_LANE = {"compute": (-0.45, 0.45), "merge": (-0.45, 0.45), "wait": (-0.45, 0.45), "send": (0.02, 0.2),
         "recv": (0.24, 0.2)}


def gantt_rows(tl: Timeline):
    """The rows of one iteration (the median-makespan one) with times in ms from its start."""
    df = tl.df.copy()
    if not len(df):
        return df
    df["kind"] = df["kind"].astype(str)
    df["phase"] = df["phase"].astype(str)
    df["iter"] = assign_iterations(df)
    spans = []
    for it, d in df.groupby("iter"):
        ring = d[d["kind"].isin(["compute", "send", "recv"])]
        start = float(ring["start_s"].min()) if len(ring) else float(d["start_s"].min())
        spans.append((float(d["end_s"].max()) - start, it, start))
    spans.sort()
    _, it, start = spans[len(spans) // 2]
    d = df[df["iter"] == it].copy()
    d["start_ms"] = (d["start_s"] - start) * 1e3
    d["dur_ms"] = (d["end_s"] - d["start_s"]) * 1e3
    return d


def _gantt_figure(title: str, measured: Timeline, predicted: Timeline | None):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    sides = [("measured", measured)] + ([("predicted", predicted)] if predicted is not None else [])
    fig = make_subplots(rows=1, cols=len(sides), shared_yaxes=True, shared_xaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[s for s, _ in sides])
    G = max(int(tl.df["rank"].max()) + 1 for _, tl in sides if len(tl.df))
    lanes = [f"rank {r}" for r in range(G)]
    for col, (side, tl) in enumerate(sides, start=1):
        d = gantt_rows(tl)
        for kind in ("compute", "merge", "wait", "send", "recv"):
            k = d[d["kind"] == kind] if len(d) else d
            if not len(k):
                continue
            off, width = _LANE[kind]
            text = [f"{kind} {ph} s{st} · {dur:.3g} ms" + (f" · {b / 1e6:.3g} MB" if b else "")
                    + (f" · {int(p)} pairs" if p else "")
                    for ph, st, dur, b, p in zip(k["phase"], k["step"], k["dur_ms"], k["bytes"], k["pairs"])]
            fig.add_trace(go.Bar(y=[f"rank {r}" for r in k["rank"]], x=k["dur_ms"].round(4).tolist(),
                                 base=k["start_ms"].round(4).tolist(), orientation="h", offset=off, width=width,
                                 marker_color=KIND_COLORS[kind], name=kind, legendgroup=kind,
                                 showlegend=(col == 1), hovertext=text, hoverinfo="text"), row=1, col=col)
    fig.update_yaxes(categoryorder="array", categoryarray=lanes[::-1], type="category")
    fig.update_xaxes(title_text="ms from iteration start", type="linear")
    fig.update_layout(title=title, barmode="overlay", height=120 + 55 * G, margin={"t": 70, "b": 40})
    return fig


def _fmt(v, pct=False, digits=4):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if pct:
        return f"{v * 100:+.1f}%"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def _table(header: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def _short(label: str) -> str:
    base = label.rsplit("/", 1)[-1]
    return base[:-5] if base.endswith(".json") else base


def _cases(validation: dict | None) -> list[dict]:
    if not validation:
        return []
    return validation.get("cases") or ([validation] if "makespan_error" in validation else [])


_KIND_COLORS = {"full": "#1f77b4", "diagonal": "#ff7f0e", "lower": "#2ca02c", "partial": "#9467bd", "*": "#7f7f7f"}


def _compute_fit_figure(fits: dict, title: str, points: str, ylabel: str):
    """Per phase, each kind's per-size points (``table``) and its chosen model as a line."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from .calibration.fits import entry_from_dict

    phases = [p for p in ("fwd", "bwd") if p in fits]
    if not phases:
        return None
    fig = make_subplots(rows=1, cols=len(phases), subplot_titles=[f"{p} compute per block" for p in phases])
    for col, phase in enumerate(phases, start=1):
        for kind, e in fits[phase].items():
            if kind == "empty" or "table" not in e:
                continue
            choice = entry_from_dict(e)
            xs = np.asarray(e["table"]["pairs"], float)
            ts = np.asarray(e["table"]["seconds"], float)
            color = _KIND_COLORS.get(kind, "#8c564b")
            fig.add_trace(go.Scatter(x=xs.tolist(), y=(ts * 1e3).tolist(), mode="markers", marker_color=color,
                                     name=f"{kind} {points}", legendgroup=kind, showlegend=(col == 1)), row=1, col=col)
            grid = np.linspace(0, max(xs.max() * 1.2, 1.0), 40)
            y = choice.predict(grid)  # the model the cost model uses, whichever was chosen
            scale = float(e.get("level_scale", 1.0))
            label = (f"{phase} {kind} fit ({e['chosen']}{f' × {scale:.3g}' if scale != 1.0 else ''}, "
                     f"MAPE {e['mape'] * 100:.1f}%)")
            fig.add_trace(go.Scatter(x=grid.tolist(), y=(y * 1e3).tolist(), mode="lines", line_color=color,
                                     name=label, legendgroup=kind, line_dash="dot" if kind == "*" else "solid"),
                          row=1, col=col)
    fig.update_xaxes(title_text="work (pairs at the reference workload)")
    fig.update_yaxes(title_text=ylabel)
    fig.update_layout(title=title, height=460)
    return fig


def _add_transfer_fit(fig, message_bytes, seconds, latency_s: float, bandwidth_Bps: float, points: str, fit: str,
                      dash: str = "solid") -> None:
    """Per-size points and the ``latency + bytes / bandwidth`` line through them, in MB and ms."""
    import plotly.graph_objects as go

    xs = np.asarray(message_bytes, float)
    fig.add_trace(go.Scatter(x=(xs / 1e6).tolist(), y=(np.asarray(seconds, float) * 1e3).tolist(), mode="markers",
                             name=points))
    grid = np.linspace(0, xs.max() * 1.2, 20)
    bw = float(bandwidth_Bps)
    fig.add_trace(go.Scatter(x=(grid / 1e6).tolist(), y=((latency_s + grid / bw) * 1e3).tolist(), mode="lines",
                             line_dash=dash, name=f"{fit}: {latency_s * 1e6:.3g} us + bytes / {bw / 1e9:.3g} GB/s"))


def _calibration_figures(calib: dict) -> list:
    import plotly.graph_objects as go

    figs = []
    fig = _compute_fit_figure(calib.get("compute", {}), "Calibration: measured vs fitted compute time per block kind",
                              "measured (median)", "block time (ms)")
    if fig is not None:
        figs.append(fig)
    for load, level in (calib.get("contention", {}).get("by_load") or {}).items():
        fig = _compute_fit_figure(level, f"Calibration: core-seconds per block kind at load {load} "
                                         "(ranks time-sharing the cores)",
                                  "per-size mean", "core time (ms)")
        if fig is not None:
            figs.append(fig)
    links = calib.get("links", {})
    if links:
        fig = go.Figure()
        for cls, l in links.items():
            _add_transfer_fit(fig, l["message_bytes"], l["median_s"], l["latency_s"], l["bandwidth_Bps"],
                              f"{cls} measured (median)", f"{cls} fit")
        for load, level in (calib.get("contention", {}).get("by_load") or {}).items():
            tf = level.get("transfer")
            if tf:
                _add_transfer_fit(fig, tf["message_bytes"], tf["mean_core_s"], tf["latency_s"], tf["bandwidth_Bps"],
                                  f"core-seconds at load {load} (mean)", f"core-seconds fit at load {load}", "dot")
        fig.update_layout(title="Calibration: transfer time per message", xaxis_title="message (MB)",
                          yaxis_title="ms", height=380)
        figs.append(fig)
    return figs


def render_report(measured: list[tuple[str, Timeline]], predicted: dict[str, Timeline] | None = None,
                  validation: dict | None = None, calibration: dict | None = None, max_gantt: int = 12,
                  note: str = "") -> str:
    """The report's HTML text (see the module docstring)."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    predicted = predicted or {}
    cases = _cases(validation)
    parts = []
    # 1. validation table
    if cases:
        rows = []
        for c in cases:
            worst_c = max((r["compute_error"] for r in c["per_rank"] if r["compute_error"] is not None),
                          key=abs, default=None)
            worst_t = max((r["transfer_error"] for r in c["per_rank"] if r["transfer_error"] is not None),
                          key=abs, default=None)
            rows.append([html.escape(_short(c["trace"])), c["schedule"], c["world_size"], c["seq_len"], c["phase"],
                         _fmt(c["measured_makespan_s"] * 1e3), _fmt(c["predicted_makespan_s"] * 1e3),
                         _fmt(c["makespan_error"], pct=True), _fmt(worst_c, pct=True), _fmt(worst_t, pct=True)])
        parts.append("<h2>Validation: predicted vs measured makespan</h2>"
                     "<p>error = (predicted − measured) / measured; measured = median over timed iterations.</p>"
                     + _table(["trace", "schedule", "G", "T", "phase", "measured (ms)", "predicted (ms)",
                               "makespan error", "worst rank compute error", "worst rank transfer error"],
                              rows, "errors"))
    # 2. schedule comparison
    ranking = (validation or {}).get("schedule_ranking") or []
    if ranking:
        rows = []
        for r in ranking:
            sp = r.get("speedup_vs_contiguous", {})
            spt = ", ".join(f"{s}: ×{v['measured']:.3g} / ×{v['predicted']:.3g}" for s, v in sp.items()
                            if s != "contiguous")
            rows.append([r["world_size"], r["seq_len"], r["phase"], " < ".join(r["measured_order"]),
                         " < ".join(r["predicted_order"]), "yes" if r["ranking_matches"] else "<b>NO</b>", spt or "—"])
        parts.append("<h2>Schedule comparison</h2>" + _table(
            ["G", "T", "phase", "measured order (fastest first)", "predicted order", "ranking matches",
             "speedup over contiguous (measured / predicted)"], rows, "ranking"))
        fig = go.Figure()
        labels = [f"G{c['world_size']} T{c['seq_len']} {c['phase']} {c['schedule']}" for c in cases]
        fig.add_trace(go.Bar(x=labels, y=[c["measured_makespan_s"] * 1e3 for c in cases], name="measured"))
        fig.add_trace(go.Bar(x=labels, y=[c["predicted_makespan_s"] * 1e3 for c in cases], name="predicted"))
        fig.update_layout(title="Makespan per schedule: measured vs predicted", barmode="group",
                          yaxis_title="ms", height=420)
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False))
    # 3. timelines
    shown = measured[:max_gantt]
    if shown:
        parts.append("<h2>Timelines (one lane per rank)</h2>")
        if len(measured) > len(shown):
            parts.append(f"<p>First {len(shown)} of {len(measured)} runs shown.</p>")
        for label, tl in shown:
            src = tl.meta.get("source", "measured")
            fig = _gantt_figure(f"{_short(label)} ({src})", tl, predicted.get(label))
            parts.append(fig.to_html(full_html=False, include_plotlyjs=False))
    # 4. utilisation
    if cases:
        fig = go.Figure()
        xl, mu, pu = [], [], []
        for c in cases:
            for r in c["per_rank"]:
                xl.append(f"G{c['world_size']} T{c['seq_len']} {c['phase']} {c['schedule']} r{r['rank']}")
                mu.append(r["measured_compute_s"] / c["measured_makespan_s"] if c["measured_makespan_s"] else None)
                pu.append(r["predicted_compute_s"] / c["predicted_makespan_s"] if c["predicted_makespan_s"] else None)
        fig.add_trace(go.Bar(x=xl, y=mu, name="measured"))
        fig.add_trace(go.Bar(x=xl, y=pu, name="predicted"))
        fig.update_layout(title="Per-rank utilisation (compute busy time / makespan, per iteration)",
                          barmode="group", yaxis_title="utilisation", height=440)
        parts.append("<h2>Per-rank utilisation</h2>" + fig.to_html(full_html=False, include_plotlyjs=False))
        # 5. error per step
        fig = go.Figure()
        for c in cases:
            steps = [s for s in c["per_step"] if s.get("end_error") is not None]
            fig.add_trace(go.Scatter(x=[f"{s['phase']} s{s['step']}" for s in steps],
                                     y=[s["end_error"] * 100 for s in steps], mode="lines+markers",
                                     name=_short(c["trace"])))
        fig.update_layout(title="Error per step: when the step's last block ends (predicted − measured, %)",
                          yaxis_title="% error", height=440)
        parts.append("<h2>Error per step</h2>" + fig.to_html(full_html=False, include_plotlyjs=False))
    # 6. calibration
    if calibration:
        figs = _calibration_figures(calibration)
        srcs = ", ".join(html.escape(_short(t["path"])) for t in calibration.get("traces", []))
        hw = html.escape(", ".join(f"{k}={v}" for k, v in calibration.get("hardware", {}).items()))
        c = calibration.get("contention", {})
        extra = (f" Core sharing: factor load^{c['gamma']:.3g} (ratio by load {c.get('ratio_by_load')})."
                 if c.get("applied") else "")
        parts.append(f"<h2>Calibration</h2><p>Fitted on: {srcs}. Hardware: {hw}. Compute MAPE "
                     f"{_fmt((calibration.get('compute_mape') or 0.0), pct=True)}.{html.escape(extra)}</p>")
        parts += [f.to_html(full_html=False, include_plotlyjs=False) for f in figs]
    if not parts:
        parts.append("<p>Nothing to show: give traces, a validation or a calibration.</p>")
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>ringsim validation report</title>
<script type="text/javascript">{get_plotlyjs()}</script>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}</style></head><body>
<h1>ringsim validation report</h1><p>{html.escape(note)}</p>
{''.join(parts)}</body></html>"""


def write_report(path: str, measured, predicted=None, validation=None, calibration=None, max_gantt: int = 12,
                 note: str = "") -> None:
    """Render and write atomically (readers see the old file or the whole new one)."""
    write_atomic(path, render_report(measured, predicted, validation, calibration, max_gantt, note))
