"""Output destinations, checked before any work and before any file is written.

A command that writes several files (``sweep -o out.csv --report r.html``, ``simulate -o s.json
--trace t.json``) first checks every destination with :func:`check_destinations`, so a bad one
(a missing directory, a directory it cannot write, a name too long for the file system, two
outputs naming one file) is refused with one line before the first point is computed and before
any file exists. Each check is real: a probe file is created in the destination's directory and
removed again, so permissions, read-only file systems and quotas are what the kernel says (a
permission bit check would let root through where a read-only mount stops it).
"""
from __future__ import annotations

import os
import tempfile

from .units import InputError, os_error_message

__all__ = ["check_destination", "check_destinations"]


def check_destination(path, what: str) -> str:
    """Refuse a destination that cannot be written; return it unchanged. ``what`` names the
    option (``--output``, ``--report``) for the message."""
    if path is None:
        return path
    p = os.fspath(path)
    if p.strip() == "":
        raise InputError(f"{what} is an empty file name; give a file name (or leave {what} out)")
    if os.path.isdir(p):
        raise InputError(f"{what} {p} is a directory; give a file name inside it")
    directory = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(directory):
        if os.path.exists(directory):
            raise InputError(f"{what} {p}: {directory} is not a directory; check the path")
        raise InputError(f"cannot write {what} {p}: directory {directory} does not exist; create it first")
    name = os.path.basename(p)
    try:
        name_max = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(name.encode("utf-8", "surrogateescape")) > name_max:
        raise InputError(f"cannot write {what} {p[:60]}…: the file name is too long ({len(name.encode())} bytes; "
                         f"the file system allows {name_max}); choose a shorter name")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".ringsim-{os.getpid()}-probe-", suffix=".tmp", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(os_error_message(e, p, what)) from None
    if os.path.exists(p) and not os.access(p, os.W_OK) and os.geteuid() != 0:
        # replacing it works (the directory is writable), but the user marked it read-only
        raise InputError(f"cannot write {what} {p}: the file is read-only; make it writable or choose another name")
    return path


def check_destinations(items) -> None:
    """Check every ``(path, what)`` (``None`` paths skipped) and that no two name the same file."""
    seen: dict[str, str] = {}
    for path, what in items:
        if path is None:
            continue
        check_destination(path, what)
        key = os.path.realpath(os.fspath(path))
        if key in seen:
            raise InputError(f"{what} and {seen[key]} both name {path}; give each output its own file")
        seen[key] = what
