"""The ``ringsim`` command line: thin click commands over the library.

Every bad input ends as one line on stderr and exit code 2; ``--format json`` prints one JSON
document on stdout and nothing else there.
"""
from __future__ import annotations

import importlib
import sys

import click

from ringsim.units import InputError

# command name → "module:function"; modules load only when their command runs, so
# `ringsim memory` never imports torch or simpy.
COMMANDS = {
    "memory": "ringsim.cli.memory_cmd:memory",
    "plan": "ringsim.cli.plan_cmd:plan",
    "run": "ringsim.cli.run_cmd:run",
    "topology": "ringsim.cli.topology_cmd:topology",
    "simulate": "ringsim.cli.simulate_cmd:simulate",
    "compare": "ringsim.cli.simulate_cmd:compare",
    "sweep": "ringsim.cli.sweep_cmd:sweep",
    "calibrate": "ringsim.cli.calibrate_cmd:calibrate",
    "validate": "ringsim.cli.validate_cmd:validate",
    "report": "ringsim.cli.report_cmd:report",
    "import-trace": "ringsim.cli.import_cmd:import_trace",
    "profile-kernels": "ringsim.cli.profile_cmd:profile_kernels",
    "advise": "ringsim.cli.advise_cmd:advise",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        mod, func = COMMANDS[name].split(":")
        return getattr(importlib.import_module(mod), func)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="ringsim")
def app():
    """ringsim: simulate, measure and compare ring-attention (context-parallel) schedules."""


def main(argv=None) -> None:
    try:
        rv = app.main(args=argv, prog_name="ringsim", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("ringsim: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        where = e.ctx.command_path if getattr(e, "ctx", None) else "ringsim"
        msg = " ".join(e.format_message().split())
        click.echo(f"{where}: error: {msg} (see '{where} --help')", err=True)
        sys.exit(2)
    except InputError as e:
        click.echo(f"ringsim: error: {e}", err=True)
        sys.exit(2)
    except BrokenPipeError:
        sys.exit(0)
    except OSError as e:
        # a file-system error that no check above caught (a file vanished, a disk filled up between
        # the check and the write): still one line, exit 2; errors without a file are bugs and raise
        if e.filename is None:
            raise
        click.echo(f"ringsim: error: {e.filename}: {e.strerror or e}; check the path, its permissions and free space",
                   err=True)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)
