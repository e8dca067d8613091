"""`ringsim profile-kernels`: measure this machine's attention-kernel profile (a YAML kernel profile)."""
from __future__ import annotations

import shlex
import sys
import time

import click

from ringsim.units import InputError, parse_int_list

from .common import emit


class _Progress:
    """A one-line progress bar on stderr (a plain line per shape when stderr is not a terminal)."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int, what: str) -> None:
        width = 30
        fill = int(width * done / max(total, 1))
        line = f"[{'#' * fill}{'-' * (width - fill)}] {done}/{total} calls {time.monotonic() - self.t0:.1f}s  {what}"
        if self.tty:
            sys.stderr.write("\r" + line[:120].ljust(120) + ("\n" if done == total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _fractions(text: str) -> list[float]:
    if str(text).strip().lower() in ("none", "0", ""):
        return []
    out = []
    for part in str(text).split(","):
        if not part.strip():
            continue
        try:
            f = float(part)
        except ValueError:
            raise InputError(f"--rect value {part.strip()!r} is not a number; give fractions in (0, 1] such as 0.5, "
                             f"or 'none'") from None
        out.append(f)
    return out


@click.command("profile-kernels")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write the profile (YAML) to this file, atomically; stdout if omitted.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--kernel", type=click.Choice(["auto", "cpu-sdpa", "flash", "cudnn", "efficient", "flash-attn"]),
              default="auto", show_default=True,
              help="CPU: cpu-sdpa (the runtime's kernel). CUDA: torch SDPA's flash (default), cudnn or efficient "
                   "backend, or the flash-attn package.")
@click.option("--sizes", default=None,
              help="Square sizes S (q = k = S), comma list, K = 1024 [CPU: 256,512,1024,2048; "
                   "CUDA: 512,1K,2K,4K,8K,16K].")
@click.option("--rect", "rect", default="0.5", show_default=True,
              help="Fractions f: also time full f·S × S and S × f·S calls ('none' to skip).")
@click.option("--heads", type=int, default=None, help="Query heads [CPU 4, CUDA 16].")
@click.option("--head-dims", default=None, help="Head dims, comma list [CPU 64, CUDA 64,128].")
@click.option("--batch", type=int, default=1, show_default=True, help="Sequences per call (unless --tokens).")
@click.option("--tokens", default=None,
              help="Tokens per call: batch = tokens // S per size, as the FA benchmarks (16K) "
                   "[CUDA: 16K unless --batch is given].")
@click.option("--dtype", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="auto: fp32 on CPU (the runtime's default), bf16 on CUDA.")
@click.option("--repeats", type=int, default=5, show_default=True,
              help="Rounds over the grid: each shape is timed once per round.")
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed calls before each timed one.")
@click.option("--statistic", type=click.Choice(["min", "median"]), default="min", show_default=True,
              help="A point's time over its rounds (min: other processes only ever add time).")
@click.option("--threads", type=int, default=None, help="CPU: torch threads [torch's default].")
@click.option("--name", default=None, help="Profile name [DEVICE-KERNEL].")
@click.option("--compare", default=None, metavar="PROFILE",
              help="Also print how a shipped profile (name or file) predicts every measured point.")
@click.option("--seed", type=int, default=0, show_default=True)
def profile_kernels(output, device, kernel, sizes, rect, heads, head_dims, batch, tokens, dtype, repeats, warmup,
                    statistic, threads, name, compare, seed):
    """Measure a kernel profile on this machine: forward and backward time of one fused attention call
    per shape (squares full and causal, full rectangles), written in the kernel-profile YAML format with
    the hardware it ran on. A progress bar goes to stderr."""
    from ringsim.kernelmeasure import measure_profile
    from ringsim.kernelprofile import load_profile

    ref = load_profile(compare) if compare else None  # a bad name fails before minutes of measuring
    cuda = _cuda_wanted(device)
    size_list = parse_int_list(sizes or ("512,1K,2K,4K,8K,16K" if cuda else "256,512,1024,2048"), "--sizes")
    dims = parse_int_list(head_dims or ("64,128" if cuda else "64"), "--head-dims")
    ctx = click.get_current_context()
    batch_given = ctx.get_parameter_source("batch") != click.core.ParameterSource.DEFAULT
    tok = parse_int_list(tokens, "--tokens")[0] if tokens else (16384 if cuda and not batch_given else None)
    prof = measure_profile(
        sizes=size_list, rect_fractions=_fractions(rect), head_dims=dims,
        heads=heads if heads is not None else (16 if cuda else 4), batch=batch, tokens=tok, device=device,
        kernel=kernel, dtype=dtype, repeats=repeats, warmup=warmup, statistic=statistic, threads=threads,
        name=name, seed=seed, on_point=_Progress(), command=_command(ctx))
    emit(prof.to_yaml(), output)
    rows = prof.check()
    refs = [abs(r["error"]) for r in rows if r.get("role") == "reference"]
    msg = f"profile-kernels: {len(rows)} points ({prof.kernel['family']} on {prof.device['name']})"
    if refs:
        msg += f"; the model predicts the {len(refs)} rectangular points within {100 * max(refs):.1f} %"
    click.echo(msg + (f"; wrote {output}" if output else ""), err=True)
    if ref is not None:
        click.echo(_comparison(prof, ref), err=True)


def _command(ctx) -> str:
    """The options this run was given (those not at their default), as a command line."""
    parts = ["ringsim profile-kernels"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or value == param.default or param.name in ("output", "compare"):
            continue
        parts.append(f"{param.opts[-1] if len(param.opts) == 1 else param.opts[0]} {shlex.quote(str(value))}")
    return " ".join(parts)


def _cuda_wanted(device: str) -> bool:
    if device == "cuda":
        return True
    if device == "cpu":
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _comparison(measured, shipped) -> str:
    """Per measured point: measured TFLOP/s, the shipped profile's prediction, their ratio."""
    pred = shipped.predict_tflops_many(measured.points, convention="exact-pairs")
    lines = [f"{shipped.name} vs measured (TFLOP/s, exact pairs):",
             f"{'phase':>7} {'mask':>6} {'d':>4} {'q x k':>13} {'measured':>9} {shipped.name[:12]:>12} {'ratio':>6}"]
    for p, v in zip(measured.points, pred):
        lines.append(f"{p.phase:>7} {'causal' if p.causal else 'full':>6} {p.head_dim:>4} "
                     f"{f'{p.q_rows}x{p.k_rows}':>13} {p.tflops:9.2f} {v:12.2f} {v / p.tflops:6.3f}")
    return "\n".join(lines)
