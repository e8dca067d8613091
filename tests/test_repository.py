"""The repository itself: nothing in it names a path of a developer's machine."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# absolute paths of a machine: a home or root directory, a workspace mount, a macOS or Windows home
MACHINE_PATH = re.compile(r"(?<![\w.])(/work/|/root/|/home/[a-z_][\w-]*/|/Users/[A-Za-z]|[A-Z]:\\\\Users\\\\)")


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
    for bad in ("see /work/shared/reference/hardware.md", 'PATH="/work/venv/bin:$PATH"', "/root/.cache/x",
                "/home/alice/project", "/Users/bob/x"):
        assert MACHINE_PATH.search(bad), bad
    for fine in ("../shared/reference/hardware.md", "https://example.org/work/x", "a/work/b", "/tmp/x", "/usr/bin"):
        assert not MACHINE_PATH.search(fine), fine
