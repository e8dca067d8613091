"""Test-session hooks: the summary of which optional-dependency tests ran (see optional.py)."""
from __future__ import annotations

import optional

_OUTCOMES: dict[str, str] = {}


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _OUTCOMES[report.nodeid] = report.outcome


def pytest_terminal_summary(terminalreporter):
    if not optional.USED:
        return
    parts = []
    for name in sorted(optional.USED):
        counts: dict[str, int] = {}
        for node in optional.USED[name]:
            outcome = _OUTCOMES.get(node, "not run")
            counts[outcome] = counts.get(outcome, 0) + 1
        parts.append(f"{name}: " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items())))
    terminalreporter.write_line("optional dependencies (browser, Parquet, Dask): " + "; ".join(parts))
