"""Options and output helpers shared by the commands."""
from __future__ import annotations

import csv
import io
import json
import math

import click

from ringsim.units import InputError, jsonable, parse_seq_len, write_atomic
from ringsim.workload import Workload, build_model


def workload_options(default_model: str | None = "llama3-8b", seq_len_default: str | None = "128K",
                     multi_model: bool = False):
    """--model/--layers/--heads/--kv-heads/--head-dim/--hidden/--ffn/--seq-len/--batch/--dtype."""

    def deco(f):
        opts = [
            click.option("--model", default=default_model, show_default=True,
                         help="Model preset" + (" (comma list to compare)" if multi_model else "")
                         + "; dimension flags override it."),
            click.option("--layers", type=int, help="Custom: number of layers."),
            click.option("--heads", type=int, help="Custom: query heads."),
            click.option("--kv-heads", type=int, help="Custom: key/value heads (GQA)."),
            click.option("--head-dim", type=int, help="Custom: head dimension."),
            click.option("--hidden", type=int, help="Custom: hidden size."),
            click.option("--ffn", type=int, help="Custom: FFN size."),
            click.option("--seq-len", default=seq_len_default, show_default=True,
                         help="Tokens; K/M are binary (128K = 131072)."),
            click.option("--batch", type=int, default=1, show_default=True),
            click.option("--dtype", default="bf16", show_default=True, help="bf16, fp16, fp32 or fp8."),
        ]
        for o in reversed(opts):
            f = o(f)
        return f

    return deco


def build_workloads(model, layers, heads, kv_heads, head_dim, hidden, ffn, seq_len, batch, dtype,
                    seq_len_override: int | None = None) -> list[Workload]:
    T = seq_len_override if seq_len_override is not None else parse_seq_len(seq_len)
    names = [m.strip() for m in model.split(",") if m.strip()] if model else [None]
    if not names:  # "--model ,," names nothing (an empty --model means a custom model from the flags)
        raise InputError(f"--model {model!r} names no model; give a preset such as llama3-8b (or a comma list)")
    custom = dict(layers=layers, heads=heads, kv_heads=kv_heads, head_dim=head_dim, hidden=hidden, ffn=ffn)
    if model and not any(v is not None for v in custom.values()):
        pass
    elif not model:
        names = [None]
    return [Workload(build_model(n, **custom), T, batch, dtype) for n in names]


def build_workload(**kw) -> Workload:
    ws = build_workloads(**kw)
    if len(ws) != 1:
        raise InputError("this command takes one --model; give a single preset name")
    return ws[0]


def output_path(ctx, param, value):
    """click callback for file outputs: an empty name is refused (it would print to stdout instead)."""
    if value is not None and str(value).strip() == "":
        raise click.BadParameter("empty file name; give a file name, or leave the option out to print to stdout")
    return value


def format_option(f):
    f = click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, callback=output_path,
                     help="Write to this file (atomically) instead of stdout.")(f)
    return click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
                        show_default=True)(f)


def _cell(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.4g}"
        return f"{v:.4f}".rstrip("0").rstrip(".") if abs(v) < 1e4 else f"{v:.1f}"
    if v is None:
        return "-"
    return str(v)


def render_table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "(no rows)\n"
    columns = columns or list(rows[0])
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines) + "\n"


def render_csv(rows: list[dict], columns: list[str] | None = None) -> str:
    buf = io.StringIO()
    if rows:
        columns = columns or list(rows[0])
        w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def to_json(doc) -> str:
    return json.dumps(jsonable(doc), indent=2) + "\n"


def emit(text: str, output: str | None) -> None:
    """Print to stdout, or write the whole text atomically to --output."""
    if output:
        write_atomic(output, text)
    else:
        click.echo(text, nl=False)


def topology_options(f):
    """--topology/--world-size plus the what-ifs that change a topology."""
    opts = [
        click.option("--topology", default="dgx-h100-8", show_default=True, help="Preset name or YAML path."),
        click.option("--world-size", type=int, default=None, help="Ranks (default: every GPU of the topology)."),
        click.option("--link-scale", multiple=True, metavar="CLASS:BW[:LAT]",
                     help="What-if: scale a link class's bandwidth (and latency), e.g. ib:0.5."),
        click.option("--straggler", multiple=True, metavar="RANK:SPEED",
                     help="What-if: run one rank's device at this speed factor, e.g. 3:0.5."),
        click.option("--degrade-link", multiple=True, metavar="A,B,FACTOR",
                     help="What-if: scale the bandwidth of the link between vertices A and B (both directions), "
                          "e.g. 'n0.g7,sw1:n*.g7,0.25'."),
        click.option("--placement", default=None, metavar="GPU,GPU,...",
                     help="What-if: rank order over GPU vertex names (see `ringsim topology show`)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _split(text: str, n_min: int, n_max: int, what: str, example: str) -> list[str]:
    parts = text.rsplit(":", n_max - 1) if n_max > 1 else [text]
    if not n_min <= len(parts) <= n_max:
        raise InputError(f"{what} {text!r} is malformed; write e.g. {example}")
    return parts


def positive_float(text: str, what: str, kind: str = "scale factor") -> float:
    """A what-if factor: a finite number > 0 inside its range (:data:`ringsim.limits.RANGES`,
    1e-6 … 1e6 for scale and speed factors), or an InputError naming the option and the range."""
    from ringsim.limits import check_float

    try:
        v = float(text)
    except ValueError:
        raise InputError(f"{what} {text!r} is not a number") from None
    if v == v and v <= 0:
        raise InputError(f"{what} must be positive, got {text!r}")
    return check_float(v, what, kind, "e.g. 0.5 halves it")


def build_topology(topology, world_size=None, link_scale=(), straggler=(), degrade_link=(), placement=None):
    """Load a topology and apply the what-ifs in a fixed order: placement, links, stragglers."""
    from ringsim.topoload import load_topology

    topo = load_topology(topology)
    if placement:
        names = [p.strip() for p in placement.split(",") if p.strip()]
        topo = topo.with_placement(names)
    for item in link_scale:
        parts = item.split(":")
        if len(parts) not in (2, 3):
            raise InputError(f"--link-scale {item!r} is malformed; write CLASS:BW or CLASS:BW:LAT, e.g. ib:0.5")
        topo = topo.scale_link_class(parts[0], positive_float(parts[1], "--link-scale bandwidth factor"),
                                     positive_float(parts[2], "--link-scale latency factor") if len(parts) == 3 else 1.0)
    for item in degrade_link:
        parts = item.split(",")
        if len(parts) != 3:
            raise InputError(f"--degrade-link {item!r} is malformed; write A,B,FACTOR with two vertex names "
                             "from `ringsim topology show`, e.g. 'n0.g7,sw1:n*.g7,0.25'")
        a, b, fac = (p.strip() for p in parts)
        topo = topo.degrade_link(a, b, positive_float(fac, "--degrade-link factor"))
    for item in straggler:
        rank, fac = _split(item, 2, 2, "--straggler", "3:0.5")
        try:
            r = int(rank)
        except ValueError:
            raise InputError(f"--straggler rank {rank!r} is not an integer") from None
        if not 0 <= r < (world_size or topo.num_gpus):
            raise InputError(f"--straggler rank {r} is outside 0..{(world_size or topo.num_gpus) - 1}")
        topo = topo.with_slow_rank(r, positive_float(fac, "--straggler speed factor", "speed factor"))
    if world_size is not None:
        topo.check_world_size(world_size)
    return topo


def documents_options(f):
    """--documents (a packed sequence: lengths, cu_seqlens, a file, or a distribution) and --seed."""
    opts = [
        click.option("--documents", default=None, metavar="SPEC",
                     help="Packed documents, the mask applying within each: lengths (4K,60K,1000), a cu_seqlens "
                          "list ([0,4096,10000]), a file of lengths, or a distribution to draw one pack of "
                          "--seq-len tokens from (lognormal:mean=8K,sigma=1.2, file:lengths.txt). Layouts "
                          "zigzag-doc and balanced[:K] need it."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for drawing a pack."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def pack_of(ctx, documents, seq_len, seed):
    """``(pack lengths or None, seq_len text)``: a distribution draws a pack of --seq-len tokens
    (its default too); an explicit list sets the length unless --seq-len was given on the command
    line, in which case the two must agree."""
    from click.core import ParameterSource

    from ringsim.documents import pack_for, parse_documents

    if not documents:
        return None, seq_len
    given = ctx.get_parameter_source("seq_len") not in (ParameterSource.DEFAULT, None)
    T = parse_seq_len(seq_len)
    if parse_documents(documents, None).is_distribution:
        return pack_for(documents, T, seed), seq_len
    pack = pack_for(documents, T if given else None, seed)
    return pack, str(sum(pack))


def system_options(f):
    """Schedule-independent system knobs: mask, phase, engine, protocol knobs, calibration."""
    opts = [
        click.option("--mask", default=None,
                     help="full, causal or sliding:W (default: the model's own — its sliding window, else causal)."),
        click.option("--phase", type=click.Choice(["fwd", "fwd+bwd"]), default="fwd", show_default=True),
        click.option("--engine", type=click.Choice(["auto", "des", "fast", "reference"]), default="auto",
                     show_default=True,
                     help="auto: the exact fast path when no two messages share a link at once, else the DES; "
                          "reference: the plain simpy engine (slow; the others' cross-check)."),
        click.option("--overlap/--no-overlap", default=True, show_default=True,
                     help="Overlap each step's compute with its transfers."),
        click.option("--rendezvous/--no-rendezvous", default=True, show_default=True,
                     help="A transfer starts only when both ends have posted."),
        click.option("--double-buffer/--no-double-buffer", default=True, show_default=True,
                     help="Receive the next shard into a second buffer during compute."),
        click.option("--calibration", type=click.Path(dir_okay=False), default=None,
                     help="calib.json from `ringsim calibrate`, replacing the device's cost model."),
        click.option("--kernels", default=None, metavar="fa2|fa3|cudnn|roofline|FILE",
                     help="Attention kernel costs: the device's profile of that family, the ideal roofline, a "
                          "shipped profile name or a profile file (default: the device preset's own, e.g. fa3 "
                          "on H100; the roofline where the device has no profile)."),
        click.option("--implementation", type=click.Choice(["ringsim", "ring-flash-attn"]), default="ringsim",
                     show_default=True,
                     help="The memory work between kernels (merges, accumulations) and the backward's dK/dV "
                          "protocol: this project's runtime, or zhuzilin/ring-flash-attention's."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def build_cost_model(calibration, kernels=None, topology=None):
    """The cost model the options name: a calibration, else ``--kernels`` for the topology's device
    (its default kernels when not given; the roofline without a topology)."""
    from ringsim.costs import RooflineCost, resolve_kernels

    if calibration:
        if kernels:
            raise InputError("give --calibration or --kernels, not both (a calibration is its own cost model)")
        from ringsim.calibration import load_calibration

        return load_calibration(calibration)
    if topology is None:
        return RooflineCost() if kernels in (None, "roofline") else None
    return resolve_kernels(kernels, topology)
