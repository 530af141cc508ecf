"""The ``archiver`` command.

Each concern keeps its commands beside its code (``archiver/<area>/cli.py``); this module only
assembles them and turns user errors into one clear line and an exit code (never a traceback).
"""

from __future__ import annotations

import importlib
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
    "tag": "archiver.catalog.cli:tag",
    "daemon": "archiver.service.cli:daemon",
    "migrate": "archiver.service.cli:migrate",
    "bench": "archiver.bench.cli:bench",
    "train": "archiver.train.cli:train",
    "serve": "archiver.web.cli:serve",
}


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
        return getattr(mod, attr)

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
