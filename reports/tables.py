"""Markdown tables from `ringsim validate --format json` outputs (used by reports/regenerate.sh).

    python reports/tables.py reports/README.md "NAME|TITLE|validation.json" ...
    python reports/tables.py --compact README.md validation.json   (the main README's table)

For every validation file: one row per case (G, schedule, phase, T, measured, predicted, error),
the zigzag-over-contiguous speedup per configuration (measured, predicted, difference), and a
summary line checked against issue 5's targets (|error| ≤ 10 % at G = 2, ≤ 15 % at G = 4,
|speedup difference| ≤ 0.1). The tables replace the text between ``<!-- tables:begin -->`` and
``<!-- tables:end -->`` in the README given first; they are also written to reports/tables.md.
"""
from __future__ import annotations

import json
import os
import sys

TARGET = {2: 0.10, 4: 0.15}
SPEEDUP_TARGET = 0.1
BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"


def section(title: str, doc: dict) -> tuple[str, dict]:
    cases = doc.get("cases") or [doc]
    order = {"contiguous": 0, "striped": 1, "zigzag": 2}
    cases = sorted(cases, key=lambda c: (c["world_size"], c["phase"], c["seq_len"], order.get(c["schedule"], 9)))
    out = [f"### {title}\n", "| G | schedule | phase | T | measured (ms) | predicted (ms) | error |",
           "|---|---|---|---|---|---|---|"]
    worst: dict[int, float] = {}
    for c in cases:
        e = c["makespan_error"]
        G = c["world_size"]
        worst[G] = max(worst.get(G, 0.0), abs(e))
        flag = "" if abs(e) <= TARGET.get(G, 0.15) else " ✗"
        out.append(f"| {G} | {c['schedule']} | {c['phase']} | {c['seq_len']} | {c['measured_makespan_s'] * 1e3:.1f} "
                   f"| {c['predicted_makespan_s'] * 1e3:.1f} | {e * 100:+.1f}%{flag} |")
    out += ["", "| G | phase | T | zigzag speedup measured | predicted | difference | ranking |",
            "|---|---|---|---|---|---|---|"]
    sp_worst, matches, n_rank = 0.0, 0, 0
    for r in sorted(doc.get("schedule_ranking", []), key=lambda r: (r["world_size"], r["phase"], r["seq_len"])):
        n_rank += 1
        matches += bool(r["ranking_matches"])
        z = r.get("speedup_vs_contiguous", {}).get("zigzag")
        if not z:
            continue
        d = z["predicted"] - z["measured"]
        sp_worst = max(sp_worst, abs(d))
        flag = "" if abs(d) <= SPEEDUP_TARGET else " ✗"
        out.append(f"| {r['world_size']} | {r['phase']} | {r['seq_len']} | {z['measured']:.3f} | {z['predicted']:.3f} "
                   f"| {d:+.3f}{flag} | {'match' if r['ranking_matches'] else 'differs'} "
                   f"({','.join(r['predicted_order'])} vs {','.join(r['measured_order'])}) |")
    n_bad = sum(abs(c["makespan_error"]) > TARGET.get(c["world_size"], 0.15) for c in cases)
    summ = {"max_abs_error": worst, "max_speedup_diff": sp_worst, "n_cases": len(cases), "n_outside": n_bad,
            "ranking_matches": f"{matches}/{n_rank}"}
    out += ["", "Summary: " + "; ".join(f"max |error| at G={G}: {v * 100:.1f}% (target {TARGET.get(G, 0.15) * 100:.0f}%)"
                                        for G, v in sorted(worst.items()))
            + f"; max |zigzag speedup difference|: {sp_worst:.3f} (target {SPEEDUP_TARGET}); "
              f"{n_bad} of {len(cases)} cases outside the makespan target; ranking matches {matches}/{n_rank}.", ""]
    return "\n".join(out) + "\n", summ


COMPACT_BEGIN, COMPACT_END = "<!-- validation:begin -->", "<!-- validation:end -->"


def compact(doc: dict) -> str:
    """One row per (G, phase, T): measured → predicted ms and the error for each schedule, and the
    zigzag-over-contiguous speedup measured → predicted (the main README's table)."""
    by = {(c["world_size"], c["phase"], c["seq_len"], c["schedule"]): c for c in doc.get("cases") or [doc]}
    sp = {(r["world_size"], r["phase"], r["seq_len"]): r.get("speedup_vs_contiguous", {}).get("zigzag")
          for r in doc.get("schedule_ranking", [])}
    keys = sorted({k[:3] for k in by}, key=lambda k: (k[0], k[1] != "fwd", k[2]))
    out = ["| G | phase | T | contiguous ms (error) | striped ms (error) | zigzag ms (error) | zigzag speedup |",
           "|---|---|---|---|---|---|---|"]
    for G, phase, T in keys:
        cells = []
        for s in ("contiguous", "striped", "zigzag"):
            c = by.get((G, phase, T, s))
            cells.append("—" if c is None else f"{c['measured_makespan_s'] * 1e3:.1f} → "
                         f"{c['predicted_makespan_s'] * 1e3:.1f} ({c['makespan_error'] * 100:+.1f}%)")
        z = sp.get((G, phase, T))
        cells.append("—" if not z else f"{z['measured']:.3f} → {z['predicted']:.3f} ({z['predicted'] - z['measured']:+.3f})")
        out.append(f"| {G} | {phase} | {T} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _splice(path: str, begin: str, end: str, body: str) -> None:
    with open(path) as f:
        text = f.read()
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        with open(path, "w") as f:
            f.write(head + begin + "\n" + body + end + tail)


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--compact":  # --compact README validation.json
        with open(argv[2]) as f:
            _splice(argv[1], COMPACT_BEGIN, COMPACT_END, compact(json.load(f)))
        return
    readme, specs = argv[0], argv[1:]
    parts = []
    for spec in specs:
        name, title, path = spec.split("|", 2)
        with open(path) as f:
            text, summ = section(title, json.load(f))
        parts.append(text)
        print(f"{name}: {json.dumps(summ)}")
    body = "\n".join(parts)
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "tables.md"), "w") as f:
        f.write(body)
    _splice(readme, BEGIN, END, body)


if __name__ == "__main__":
    main(sys.argv[1:])
