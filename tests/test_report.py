"""The HTML report: one self-contained file with the plotly bundle, one lane per rank, the error table."""
import json
import os
import re

import pytest

from optional import require
from ringsim.calibration import calibrate
from ringsim.report import gantt_rows, write_report
from ringsim.validate import validate_runs

from test_validate import measured_like


@pytest.fixture(scope="module")
def material():
    runs = [(f"traces/run_{s}.json", measured_like(s, 4, 4096, "fwd+bwd", scale=1.1, iters=3)[0])
            for s in ("contiguous", "zigzag")]
    doc, pairs = validate_runs(runs)
    predicted = {label: pred for label, _, pred in pairs}
    calib = calibrate([(f"c{T}", measured_like("zigzag", 2, T, "fwd+bwd")[0]) for T in (2048, 4096)])
    return runs, predicted, doc, calib


def _figures(text):
    """The plotly figures embedded in the page: (div id, data list, layout) per Plotly.newPlot call."""
    out = []
    for m in re.finditer(r'Plotly\.newPlot\(\s*"([^"]+)",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{"responsive"', text, re.S):
        out.append((m.group(1), json.loads(m.group(2)), json.loads(m.group(3))))
    return out


def test_report_content(material, tmp_path):
    runs, predicted, doc, calib = material
    path = tmp_path / "out.html"
    write_report(str(path), runs, predicted, doc, calib)
    assert [p.name for p in tmp_path.iterdir()] == ["out.html"]  # no temporary left behind
    text = path.read_text()
    from plotly.offline import get_plotlyjs

    assert get_plotlyjs()[:2000] in text  # the plotly bundle is inline: works offline
    assert "<script src=" not in text and text.count("<html") == 1
    assert "run_contiguous" in text and "run_zigzag" in text
    figs = _figures(text)
    gantts = [f for f in figs if any(t.get("orientation") == "h" for t in f[1])]
    assert len(gantts) == 2
    for _, data, layout in gantts:
        bars = [t for t in data if t["type"] == "bar"]
        lanes = {y for t in bars for y in t["y"]}
        assert lanes == {"rank 0", "rank 1", "rank 2", "rank 3"}  # one lane per rank
        assert all("base" in t for t in bars)  # bars with a base on a numeric axis, not dates
        assert layout["xaxis"].get("type") == "linear" and "date" not in json.dumps(layout)
        assert {t["xaxis"] for t in bars} == {"x", "x2"}  # measured and predicted side by side
    # the error table carries each run's signed makespan error (measured 1.1× predicted → −9.1 %)
    table = text[text.index('<table class="errors">'):]
    table = table[:table.index("</table>")]
    # makespan, worst compute and worst transfer error of both runs
    assert table.count("<tr>") == 3 and table.count("<td>-9.1%</td>") == 6
    assert "Schedule comparison" in text and "Error per step" in text and "Per-rank utilisation" in text
    titles = " ".join(json.dumps(f[2].get("title", "")) for f in figs)
    assert "Calibration: measured vs fitted compute time per block kind" in titles
    assert "Calibration: transfer time per message" in titles


def _iterations_of_spans(scales):
    """One measured-like iteration repeated with its times stretched by each scale, in that order."""
    import pandas as pd

    from ringsim.timeline import Timeline

    base, _ = measured_like("zigzag", 2, 2048, "fwd", iters=1)
    d0 = base.df
    origin, span = float(d0["start_s"].min()), float(d0["end_s"].max() - d0["start_s"].min())
    parts, t = [], 0.5
    for s in scales:
        d = d0.copy()
        d["start_s"] = (d0["start_s"] - origin) * s + t
        d["end_s"] = (d0["end_s"] - origin) * s + t
        parts.append(d)
        t = float(d["end_s"].max()) + 0.01
    return Timeline(pd.concat(parts, ignore_index=True), dict(base.meta)), span


def test_gantt_uses_the_median_iteration():
    # iterations 1.0x, 1.3x and 1.1x as long: the median is the third, neither the fastest nor the first
    tl, span = _iterations_of_spans([1.0, 1.3, 1.1])
    rows = gantt_rows(tl)
    assert set(rows["iter"]) == {2}
    assert rows["start_ms"].min() == pytest.approx(0.0, abs=1e-9)
    drawn = float((rows["start_ms"] + rows["dur_ms"]).max())
    assert drawn == pytest.approx(1.1 * span * 1e3, rel=1e-9)
    # and in another order: the median of 1.3x, 1.0x, 1.2x is the last again, of 1.2x, 1.3x, 1.0x the first
    assert set(gantt_rows(_iterations_of_spans([1.3, 1.0, 1.2])[0])["iter"]) == {2}
    assert set(gantt_rows(_iterations_of_spans([1.2, 1.3, 1.0])[0])["iter"]) == {0}


def test_write_is_atomic(material, tmp_path, monkeypatch):
    runs, predicted, doc, calib = material
    path = tmp_path / "r.html"
    path.write_text("old report")
    import ringsim.report as rep

    def boom(*a, **k):
        raise RuntimeError("render failed")

    monkeypatch.setattr(rep, "render_report", boom)
    with pytest.raises(RuntimeError):
        rep.write_report(str(path), runs, predicted, doc, calib)
    assert path.read_text() == "old report"
    monkeypatch.undo()
    # a crash while writing leaves the old file and no temporary
    import ringsim.units as units

    real_replace = os.replace

    def fail_replace(a, b):
        raise OSError("disk full")

    monkeypatch.setattr(units.os, "replace", fail_replace)
    with pytest.raises(units.InputError, match="cannot write .*r.html: disk full"):  # one line, not a traceback
        write_report(str(path), runs, predicted, doc, calib)
    monkeypatch.setattr(units.os, "replace", real_replace)
    assert path.read_text() == "old report" and sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


def test_cli_report_and_bad_inputs(tmp_path, capsys):
    from ringsim.cli import main

    tl, _ = measured_like("striped", 2, 2048, "fwd")
    trace = tmp_path / "m.json"
    tl.write(trace)
    out = tmp_path / "rep.html"
    with pytest.raises(SystemExit) as e:
        main(["report", str(trace), "-o", str(out)])
    assert e.value.code == 0 and out.exists()
    assert "m.json" in out.read_text() or "m</td>" in out.read_text()
    capsys.readouterr()
    for args in (["report", "-o", str(out)],
                 ["report", str(tmp_path / "missing.json"), "-o", str(out)],
                 ["report", str(trace), "--validation", str(tmp_path / "nov.json"), "-o", str(out)],
                 ["report", str(trace), "-o", str(tmp_path / "no" / "dir.html")]):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("ringsim: error:"), (args, err)


def test_report_renders_in_headless_chromium_without_console_errors(material, tmp_path):
    import subprocess

    exe = require("chromium")
    runs, predicted, doc, calib = material
    path = tmp_path / "r.html"
    write_report(str(path), runs, predicted, doc, calib)
    n_figs = len(_figures(path.read_text()))
    proc = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--no-first-run", "--enable-logging=stderr",
                           "--log-level=0", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000",
                           "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    console = [l for l in proc.stderr.splitlines() if ":CONSOLE" in l]
    assert console == []
    # every figure was drawn by plotly.js (each plot renders its SVG layers)
    assert proc.stdout.count('class="plot-container plotly"') == n_figs
    assert n_figs >= 7


def test_cli_report_draws_runs_it_cannot_predict(tmp_path, capsys):
    from ringsim.cli import main

    tl, _ = measured_like("zigzag", 2, 2048, "fwd")
    tl.meta.pop("workload")  # e.g. a Kineto run imported without --run-config
    trace = tmp_path / "noconf.json"
    tl.write(trace)
    out = tmp_path / "rep.html"
    with pytest.raises(SystemExit) as e:
        main(["report", str(trace), "-o", str(out)])
    assert e.value.code == 0
    assert "lacks workload" in capsys.readouterr().err
    figs = _figures(out.read_text())
    gantt = [f for f in figs if any(t.get("orientation") == "h" for t in f[1])]
    assert len(gantt) == 1 and {t["xaxis"] for t in gantt[0][1]} == {"x"}  # measured only


def test_calibration_plots_draw_the_chosen_models_and_the_sharing_level(tmp_path):
    """Every fit line is the model the cost model uses (rows, power, table or roofline, × its level
    scale), and a calibration with an oversubscribed load level shows that level's core-second fits
    and its transfer core-seconds."""
    import numpy as np

    from ringsim.calibration.fits import entry_from_dict
    from test_calibrate import _oversubscribed_calibration

    calib = _oversubscribed_calibration()
    path = tmp_path / "calib.html"
    write_report(str(path), [], None, None, calib)
    figs = _figures(path.read_text())
    by_title = {json.dumps(f[2].get("title", "")): f for f in figs}
    base = next(f for t, f in by_title.items() if "measured vs fitted compute time" in t)
    level = next(f for t, f in by_title.items() if "core-seconds per block kind at load 2" in t)
    checked = set()
    for fig, fits in ((base, calib["compute"]), (level, calib["contention"]["by_load"]["2"])):
        for tr in fig[1]:
            if tr.get("mode") != "lines":
                continue
            phase, kind = tr["name"].split(" fit (")[0].split(" ", 1)
            assert (phase == "fwd") == (tr.get("xaxis", "x") == "x")  # each phase in its own panel
            want = entry_from_dict(fits[phase][kind]).predict(np.asarray(tr["x"], float)) * 1e3
            assert np.allclose(tr["y"], want, rtol=1e-9), (phase, kind)
            checked.add(fits[phase][kind]["chosen"])
    assert checked - {"roofline"}  # at least one non-roofline model is drawn as itself
    transfer = next(f for t, f in by_title.items() if "transfer time per message" in t)
    assert any("core-seconds fit at load 2" in tr["name"] for tr in transfer[1])
