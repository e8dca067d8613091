"""Optional test dependencies: Chromium (the report in a real browser), pyarrow (Parquet), Dask.

On a developer's machine a test whose optional dependency is missing is skipped. In CI (``CI``
set to a true value, as ``.ci/run`` runs) it fails instead: CI installs every one of them, so a
skip there would hide that the browser, Parquet or Dask path was never exercised. conftest.py
prints at the end of a run which of these tests ran and how they ended.
"""
from __future__ import annotations

import importlib
import os
import shutil

import pytest

USED: dict[str, set[str]] = {}  # dependency → node ids of the tests that asked for it

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(name: str):
    """The module ``name`` (or, for ``"chromium"``, the browser's executable path)."""
    node = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]
    USED.setdefault(name, set()).add(node)
    if name == "chromium":
        found = next((shutil.which(n) for n in BROWSERS if shutil.which(n)), None)
        if found:
            return found
        why = "no Chromium on PATH (Debian: apt-get install chromium)"
    else:
        try:
            return importlib.import_module(name)
        except ImportError:
            why = f"{name} is not installed (pip install -e '.[parquet,dask]')"
    if in_ci():
        pytest.fail(f"CI must run this test: {why}")
    pytest.skip(why)
