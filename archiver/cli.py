"""The ``archiver`` command.

Each concern keeps its commands beside its code (``archiver/<area>/cli.py``); this module only
assembles them and turns user errors into one clear line and an exit code (never a traceback).
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from . import __version__
from .errors import ArchiverError
from .output import to_json

#: command name -> "module:attribute"; imported only when the command runs (torch is slow to import)
COMMANDS = {
    "encode": "archiver.codec.cli:encode",
    "decode": "archiver.codec.cli:decode",
    "classify": "archiver.policy.cli:classify",
    "policy": "archiver.policy.cli:policy",
    "archive": "archiver.catalog.cli:archive",
    "restore": "archiver.catalog.cli:restore",
    "verify": "archiver.catalog.cli:verify",
    "stats": "archiver.catalog.cli:stats",
    "doctor": "archiver.doctor:doctor",
    "ls": "archiver.catalog.views:ls",
    "show": "archiver.catalog.views:show",
    "status": "archiver.catalog.views:status",
    "forget": "archiver.catalog.views:forget",
    "tag": "archiver.catalog.cli:tag",
    "daemon": "archiver.service.cli:daemon",
    "migrate": "archiver.service.cli:migrate",
    "bench": "archiver.bench.cli:bench",
    "train": "archiver.train.cli:train",
    "serve": "archiver.web.cli:serve",
}


def _use_config(ctx, param, value):
    """An explicit ``--config`` becomes ``$ARCHIVER_CONFIG`` for the whole process, so that every
    ``load_config()`` (catalog, codec, workers started later) reads the same file."""
    if value:
        from .errors import UsageError

        path = os.path.abspath(value)
        if not os.path.isfile(path):
            raise UsageError(f"{value}: config file not found")
        os.environ["ARCHIVER_CONFIG"] = path
    return value


def _use_verbose(ctx, param, value):
    if value:
        import logging

        from .service.logs import setup_logging

        setup_logging(False, logging.DEBUG)
    return value


def common_options(cmd: click.Command) -> click.Command:
    """Give every command ``--config FILE`` and ``-v/--verbose`` (commands that declare their own
    keep them; the config path is exported either way)."""
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            common_options(sub)
        return cmd
    if getattr(cmd, "_archiver_common", False):
        return cmd
    cmd._archiver_common = True
    opts = {o: p for p in cmd.params for o in getattr(p, "opts", ())}
    if "--config" in opts:
        own = opts["--config"].callback

        def chained(ctx, param, value, own=own):
            value = _use_config(ctx, param, value)
            return own(ctx, param, value) if own else value

        opts["--config"].callback = chained
    else:
        cmd.params.append(click.Option(["--config", "_config"], type=click.Path(dir_okay=False), expose_value=False,
                                       callback=_use_config, is_eager=True,
                                       help="config file (default: $ARCHIVER_CONFIG, ./archiver.yaml, $XDG_CONFIG_HOME/archiver/config.yaml, /etc/archiver/config.yaml)"))
    if "-v" not in opts and "--verbose" not in opts:
        cmd.params.append(click.Option(["-v", "--verbose", "_verbose"], is_flag=True, expose_value=False,
                                       callback=_use_verbose, help="debug logging on stderr"))
    return cmd


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:  # an area not installed in this build
                return None
            raise
        return common_options(getattr(mod, attr))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ArchiverError as e:
            if "--json" in sys.argv:
                click.echo(to_json({"error": str(e), "kind": type(e).__name__, "exit_code": e.exit_code}))
            click.echo(f"archiver: error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("archiver: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="archiver")
def main():
    """Archive image collections: classify by policy, compress texture-heavy photos with a
    latent-diffusion codec, protect text/faces/evidence, and keep a catalog to restore anything."""


if __name__ == "__main__":  # pragma: no cover
    main()
