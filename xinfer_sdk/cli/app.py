"""Root command group: global options, lazy subcommands and the error -> exit-code mapping."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import traceback

import click

from .._version import __version__
from ..errors import EXIT_INTERNAL, EXIT_USER, XinferError
from ._common import emit_json, err

# command name -> "module:attribute", imported only when that command runs (so --help stays fast).
COMMANDS = {
    "doctor": "xinfer_sdk.cli.doctor_cmd:doctor",
    "profiles": "xinfer_sdk.cli.profiles_cmd:profiles",
    "build": "xinfer_sdk.cli.build_cmd:build",
    "inspect": "xinfer_sdk.cli.build_cmd:inspect",
    "serve": "xinfer_sdk.cli.serve_cmd:serve",
    "bench": "xinfer_sdk.cli.bench_cmd:bench",
    "profile": "xinfer_sdk.cli.profile_cmd:profile",
    "plan": "xinfer_sdk.cli.plan_cmd:plan",
    "tune": "xinfer_sdk.cli.plan_cmd:tune",
    "deploy": "xinfer_sdk.cli.deploy_cmd:deploy",
    "fetch": "xinfer_sdk.cli.deploy_cmd:fetch",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(n for n in COMMANDS if importlib.util.find_spec(COMMANDS[n].split(":")[0]) is not None)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        if importlib.util.find_spec(module) is None:
            return None
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "XINFER"})
@click.version_option(__version__, "--version", prog_name="xinfer-sdk")
@click.option("--profiles-dir", "profiles_dirs", multiple=True, type=click.Path(file_okay=False),
              help="Extra folder of profile YAML files (repeatable; also XINFER_PROFILES_PATH).")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("--debug", is_flag=True, help="Show the full traceback of internal errors.")
@click.pass_context
def cli(ctx: click.Context, profiles_dirs: tuple[str, ...], verbose: int, debug: bool) -> None:
    """xinfer-sdk: build a model for a hardware profile, run it anywhere, serve it, plan capacity.

    Exit codes: 0 ok, 1 internal error (a bug), 2 user or input error, 3 accuracy gate failed.
    """
    ctx.ensure_object(dict)
    ctx.obj["profiles_dirs"] = profiles_dirs
    ctx.obj["debug"] = debug
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(name)-28s | %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)


def run(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args
    debug = "--debug" in args or os.environ.get("XINFER_DEBUG") == "1"
    try:
        rv = cli.main(args=args, prog_name="xinfer-sdk", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        err.print("aborted")
        return 130
    except click.ClickException as exc:  # usage errors: bad option, missing argument
        err.print(f"error: {exc.format_message()}", markup=False)
        if as_json:
            emit_json({"error": exc.format_message(), "exit_code": EXIT_USER})
        return EXIT_USER
    except XinferError as exc:
        err.print(f"error: {exc}", markup=False)
        if as_json:
            emit_json({"error": str(exc), "type": type(exc).__name__, "exit_code": exc.exit_code, **exc.details})
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: one line, the traceback only with --debug
        if debug:
            traceback.print_exc()
        err.print(f"internal error: {type(exc).__name__}: {exc} (this is a bug in xinfer-sdk; rerun with "
                  "--debug for the traceback)", markup=False)
        if as_json:
            emit_json({"error": f"{type(exc).__name__}: {exc}", "exit_code": EXIT_INTERNAL})
        return EXIT_INTERNAL
