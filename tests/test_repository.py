"""The repository itself: nothing in it names a path of a developer's machine."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# absolute paths of a machine: a home or root directory, a workspace mount, a macOS or Windows home
# (written with character classes so that this file does not name such a path itself)
MACHINE_PATH = re.compile(r"(?<![\w.])(/wor[k]/|/roo[t]/|/hom[e]/[a-z_][\w-]*/|/User[s]/[A-Za-z]|[A-Z]:\\\\User[s]\\\\)")


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        return [ROOT / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): every file
        return [p for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts and ".git" not in p.parts]


def test_no_file_names_a_machine_path():
    hits = []
    for path in _tracked_files():
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for m in MACHINE_PATH.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            hits.append(f"{path.relative_to(ROOT)}:{line}: {text[m.start():m.start() + 40]!r}")
    assert not hits, "files name paths outside the repository:\n" + "\n".join(hits[:20])


def test_the_pattern_catches_what_it_is_for():
    w, r, h, u = "/wor" + "k/", "/roo" + "t/", "/hom" + "e/", "/User" + "s/"
    for bad in (f"see {w}shared/reference/hardware.md", f'PATH="{w}venv/bin:$PATH"', f"{r}.cache/x",
                f"{h}alice/project", f"{u}bob/x"):
        assert MACHINE_PATH.search(bad), bad
    for fine in ("../shared/reference/hardware.md", "https://example.org" + w + "x", "a" + w + "b", "/tmp/x", "/usr/bin"):
        assert not MACHINE_PATH.search(fine), fine
