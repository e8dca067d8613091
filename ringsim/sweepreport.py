"""The sweep report: one self-contained HTML file (plotly inlined, works offline).

It shows, per configuration group (topology, model, world size, mask, phase, bandwidth scale):
makespan and efficiency against sequence length per schedule; the **crossovers** — the shortest
length at which every ring transfer hides behind compute (below it the ring is
communication-bound), and the longest length at which striped/zigzag still pay off (speedup over
contiguous ≥ 1.05; at short lengths, communication dominates and balancing compute buys little);
and a heatmap of the speedup over contiguous across (world size, sequence length).
"""
from __future__ import annotations

import html
import math
from collections import defaultdict

from .units import write_atomic

__all__ = ["crossovers", "write_sweep_report", "PAYOFF_SPEEDUP"]

PAYOFF_SPEEDUP = 1.05
_COLORS = {"contiguous": "#d62728", "striped": "#1f77b4", "zigzag": "#2ca02c"}
_GROUP = ("topology", "model", "world_size", "mask", "phase", "bw_scale")


def _group_name(key) -> str:
    t, m, g, k, p, b = key
    return f"{t} · {m} · G={g} · {k} · {p}" + (f" · bw×{b:g}" if b != 1.0 else "")


def crossovers(rows: list[dict]) -> list[dict]:
    """Per group and schedule: where transfers start to hide, and the longest length that still pays off."""
    groups = defaultdict(list)
    for r in rows:
        if not r.get("error"):
            groups[(tuple(r[k] for k in _GROUP), r["schedule"])].append(r)
    out = []
    for (key, sched), rs in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        rs.sort(key=lambda r: r["seq_len"])
        hidden = [r["seq_len"] for r in rs if r["transfers_hidden"]]
        pays = [r["seq_len"] for r in rs if (r.get("speedup_vs_contiguous") or 0) >= PAYOFF_SPEEDUP]
        out.append({
            "group": _group_name(key), "schedule": sched,
            "hidden_from_seq_len": min(hidden) if hidden else None,
            "pays_off_from_seq_len": min(pays) if pays and sched != "contiguous" else None,
            "hide_block_tokens": rs[0]["hide_block_tokens"],
        })
    return out


def write_sweep_report(rows: list[dict], path: str) -> None:
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs
    from plotly.subplots import make_subplots

    ok = [r for r in rows if not r.get("error")]
    groups = defaultdict(list)
    for r in ok:
        groups[tuple(r[k] for k in _GROUP)].append(r)
    parts = []
    for key, rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        fig = make_subplots(rows=1, cols=2, subplot_titles=("makespan (all attention layers)", "efficiency vs ideal bound"))
        for sched in sorted({r["schedule"] for r in rs}):
            pts = sorted((r for r in rs if r["schedule"] == sched), key=lambda r: r["seq_len"])
            x = [r["seq_len"] for r in pts]
            line = {"color": _COLORS.get(sched)}
            fig.add_trace(go.Scatter(x=x, y=[r["makespan_s"] for r in pts], mode="lines+markers", name=sched,
                                     legendgroup=sched, line=line), row=1, col=1)
            fig.add_trace(go.Scatter(x=x, y=[r["efficiency"] for r in pts], mode="lines+markers", name=sched,
                                     legendgroup=sched, showlegend=False, line=line), row=1, col=2)
        hide = rs[0]["hide_block_tokens"] * (rs[0]["world_size"] or 1)
        for col in (1, 2):
            fig.add_vline(x=hide, line_dash="dot", row=1, col=col)
        fig.add_annotation(x=math.log10(hide), y=1.0, yref="paper", xref="x", text="transfers hide →",
                           showarrow=False, xanchor="left", yanchor="bottom")
        fig.update_xaxes(type="log", title_text="sequence length (tokens)")
        fig.update_yaxes(type="log", title_text="seconds", row=1, col=1)
        fig.update_yaxes(title_text="efficiency", row=1, col=2, range=[0, 1.05])
        fig.update_layout(title=_group_name(key), height=420)
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False))
    # speedup heatmaps over (world size, seq len) per schedule and (topology, model, mask, phase, bw)
    heat = defaultdict(dict)
    for r in ok:
        if r["schedule"] != "contiguous" and r.get("speedup_vs_contiguous"):
            k = (r["topology"], r["model"], r["mask"], r["phase"], r["bw_scale"], r["schedule"])
            heat[k][(r["world_size"], r["seq_len"])] = r["speedup_vs_contiguous"]
    for k, cells in sorted(heat.items(), key=lambda kv: str(kv[0])):
        gs = sorted({g for g, _ in cells})
        ts = sorted({t for _, t in cells})
        z = [[cells.get((g, t)) for t in ts] for g in gs]
        top = max(max((v for row in z for v in row if v is not None), default=2.0), 2.0)
        fig = go.Figure(go.Heatmap(z=z, x=[str(t) for t in ts], y=[str(g) for g in gs], colorscale="Viridis",
                                   zmin=1.0, zmax=top,
                                   colorbar={"title": "speedup"}, texttemplate="%{z:.2f}"))
        fig.update_layout(title=f"speedup of {k[5]} over contiguous · {k[0]} · {k[1]} · {k[2]} · {k[3]}",
                          xaxis_title="sequence length (tokens)", yaxis_title="world size", height=380)
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False))
    cross = crossovers(rows)
    table = "".join(
        f"<tr><td>{html.escape(c['group'])}</td><td>{c['schedule']}</td><td>{c['hidden_from_seq_len'] or '—'}</td>"
        f"<td>{c['pays_off_from_seq_len'] or '—'}</td><td>{c['hide_block_tokens']}</td></tr>" for c in cross)
    errors = [r for r in rows if r.get("error")]
    err_html = ("<h2>Points that could not run</h2><ul>" + "".join(
        f"<li>{html.escape(r['schedule'])} T={r['seq_len']} G={r['world_size']}: {html.escape(r['error'])}</li>"
        for r in errors) + "</ul>") if errors else ""
    doc = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>ringsim sweep report</title>
<script type="text/javascript">{get_plotlyjs()}</script>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}}</style></head><body>
<h1>ringsim sweep report</h1><p>{len(ok)} points simulated{f', {len(errors)} could not run' if errors else ''}.</p>
<h2>Crossovers</h2>
<p>“hidden from”: the shortest simulated length at which every ring transfer hides behind a full block's
compute (below it the ring waits on links). “pays off from”: the shortest length at which the schedule beats
contiguous by at least {PAYOFF_SPEEDUP}×.</p>
<table><tr><th>group</th><th>schedule</th><th>hidden from (tokens)</th><th>pays off from (tokens)</th>
<th>hide block (tokens/rank)</th></tr>{table}</table>
{''.join(parts)}{err_html}</body></html>"""
    write_atomic(path, doc)
