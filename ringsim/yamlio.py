"""Reading YAML that users give (topology files, sweep studies) within limits.

PyYAML builds documents recursively, so a file nested a few thousand levels deep ends in a
``RecursionError``, and aliases can make a small file expand to billions of values. Before
building anything, :func:`load_yaml` streams the file's parse *events* (an iterative state
machine, libyaml's where available) and refuses, with one line naming the file and the limit, a
file larger than :data:`ringsim.limits.YAML_BYTES`, nested deeper than
:data:`~ringsim.limits.YAML_DEPTH`, or holding more than :data:`~ringsim.limits.YAML_NODES`
values once its aliases are expanded. Only then is the document built.
"""
from __future__ import annotations

import os

import yaml

from . import limits
from .units import InputError

__all__ = ["load_yaml", "read_yaml_file"]

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _syntax_error(label: str, e: yaml.YAMLError) -> InputError:
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or (str(e).splitlines() or ["invalid YAML"])[0]
    return InputError(f"{label}: YAML syntax error{where}: {problem}; fix the YAML syntax")


def _check_shape(text: str, label: str, fix: str) -> None:
    """Depth and expanded size from the event stream, without building the document."""
    max_depth, max_nodes = limits.YAML_DEPTH.value, limits.YAML_NODES.value
    depth = 0
    count = 0
    open_anchors: list[tuple[str | None, int]] = []  # (anchor, count when the collection opened)
    sizes: dict[str, int] = {}
    for ev in yaml.parse(text, Loader=_Loader):
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            count += 1
            if depth > max_depth:
                line = ev.start_mark.line + 1 if ev.start_mark is not None else "?"
                limits.YAML_DEPTH.check(depth, f"{label}: line {line}",
                                        f"nest the YAML at most {max_depth} levels deep ({fix})")
            open_anchors.append((ev.anchor, count))
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
            anchor, start = open_anchors.pop()
            if anchor is not None:
                sizes[anchor] = count - start + 1
        elif isinstance(ev, yaml.ScalarEvent):
            count += 1
            if ev.anchor is not None:
                sizes[ev.anchor] = 1
        elif isinstance(ev, yaml.AliasEvent):
            count += sizes.get(ev.anchor, 1)
        else:
            continue
        if count > max_nodes:
            limits.YAML_NODES.check(count, label, f"write the values out without deep aliases ({fix})")


def load_yaml(text: str, label: str, fix: str):
    """Parse ``text`` (the contents of ``label``) within the limits; ``fix`` says what a good
    file looks like, for the messages."""
    limits.YAML_BYTES.check(len(text.encode("utf-8", "surrogatepass")), label, f"give a smaller file ({fix})")
    try:
        _check_shape(text, label, fix)
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        if "nesting depth" in str(getattr(e, "problem", "")):  # libyaml's own bound, met while scanning ahead
            mark = getattr(e, "problem_mark", None)
            line = mark.line + 1 if mark is not None else "?"
            limit = limits.YAML_DEPTH.value
            raise InputError(f"{label}: line {line}: YAML nested deeper than {min(limit, 1000):,} levels, the most "
                             f"it is read to; nest it less deeply ({fix})"
                             + ("" if limit >= 1000 else f", or raise the limit with {limits.YAML_DEPTH.env}=N")) from None
        raise _syntax_error(label, e) from None
    except RecursionError:  # the shape check bounds depth; this is a last guard
        raise InputError(f"{label}: YAML nested too deeply to read; flatten it ({fix})") from None


def read_yaml_file(path: str, label: str, what: str, fix: str):
    """Read and parse the YAML file ``path`` within the limits. A missing, unreadable, non-UTF-8
    or oversized file is one :class:`InputError` line naming ``label``."""
    limit = limits.YAML_BYTES.value
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)  # never more than the limit into memory
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist; check the path") from None
    except IsADirectoryError:
        raise InputError(f"{what} {path} is a directory; give a YAML file") from None
    except OSError as e:
        raise InputError(f"{label}: cannot read {what} ({e.strerror or e}); check the path and permissions") from None
    if len(raw) > limit:
        size = os.path.getsize(path) if os.path.isfile(path) else len(raw)
        limits.YAML_BYTES.check(size, label, f"give a smaller file ({fix})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{label}: not UTF-8 text (byte {e.start}); save the {what} as UTF-8 YAML") from None
    return load_yaml(text, label, fix)
