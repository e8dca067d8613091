"""The packed-documents report: imbalance over sampled packs, per layout (self-contained HTML).

One box plot per layout of max/mean per-rank work over every drawn pack (the distribution
`ringsim plan --documents DIST --samples N` summarises as mean, p50, p95, max), and the summary
table. plotly.js is inlined, so the file opens offline.
"""
from __future__ import annotations

import html

from .units import write_atomic

__all__ = ["write_documents_report"]


def write_documents_report(dist: dict, spec: dict, path: str) -> None:
    """``dist``: :func:`ringsim.documents.imbalance_distribution`'s result; ``spec``: the documents'
    description (what was drawn)."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    fig = go.Figure()
    for name, values in dist["per_pack"].items():
        fig.add_trace(go.Box(y=[float(v) for v in values], name=name, boxpoints="outliers"))
    fig.update_layout(title=f"max/mean per-rank work over {dist['packs']} packs of {dist['seq_len']} tokens, "
                            f"G={dist['world_size']}, mask {dist['mask']} within each document",
                      yaxis_title="imbalance (1 = balanced)", height=520)
    head = ["layout", "mean", "p50", "p95", "max", "min", "padded length (mean)"]
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
        r["layout"], f"{r['mean']:.4f}", f"{r['p50']:.4f}", f"{r['p95']:.4f}", f"{r['max']:.4f}", f"{r['min']:.4f}",
        f"{r['padded_len_mean']:.0f}")) + "</tr>" for r in dist["layouts"])
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>ringsim: packed-document imbalance</title>
<script type="text/javascript">{get_plotlyjs()}</script>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head><body>
<h1>Load imbalance of packed documents</h1>
<p>Documents: {html.escape(str(spec))}</p>
<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{rows}</table>
{fig.to_html(full_html=False, include_plotlyjs=False)}
</body></html>
"""
    write_atomic(path, page)
