"""The ``archiver`` command: assembles the commands of ``archiver.app.commands`` and those that
other installed packages add through the ``archiver.commands`` entry-point group (``archiver
train``: ``packages/archiver-train``), and turns user errors into one clear line and an exit code
(never a traceback).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from importlib.metadata import entry_points

import click

from .. import __version__
from ..errors import ArchiverError, UsageError
from .output import report_error

#: command name -> "module:attribute"; imported only when the command runs (torch is slow to import)
COMMANDS = {
    "encode": "archiver.app.commands.codec_cmd:encode",
    "decode": "archiver.app.commands.codec_cmd:decode",
    "classify": "archiver.app.commands.policy_cmd:classify",
    "policy": "archiver.app.commands.policy_cmd:policy",
    "archive": "archiver.app.commands.archive_cmd:archive",
    "restore": "archiver.app.commands.restore_cmd:restore",
    "verify": "archiver.app.commands.catalog_cmd:verify",
    "stats": "archiver.app.commands.catalog_cmd:stats",
    "doctor": "archiver.app.doctor:doctor",
    "ls": "archiver.app.commands.catalog_cmd:ls",
    "show": "archiver.app.commands.catalog_cmd:show",
    "status": "archiver.app.commands.catalog_cmd:status",
    "forget": "archiver.app.commands.catalog_cmd:forget",
    "tag": "archiver.app.commands.catalog_cmd:tag",
    "daemon": "archiver.app.commands.service_cmd:daemon",
    "migrate": "archiver.app.commands.service_cmd:migrate",
    "bench": "archiver.app.commands.bench_cmd:bench",
    "serve": "archiver.app.commands.web_cmd:serve",
    "duplicates": "archiver.app.commands.duplicates_cmd:duplicates",
    "find": "archiver.app.commands.duplicates_cmd:find",
}

#: the entry-point group through which another installed package adds a command
ENTRY_POINTS = "archiver.commands"
#: commands that live in a separate package of the repository: name -> (package, how to install it)
OPTIONAL = {
    "train": ("archiver-train", "pip install -e packages/archiver-train (in archiver's repository)"),
}


def _entry_point(name: str):
    return next(iter(entry_points(group=ENTRY_POINTS, name=name)), None)


def _not_installed(name: str) -> click.Command:
    """``archiver NAME`` where the package that provides NAME is missing: one line, exit 2."""
    package, install = OPTIONAL[name]

    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                           "help_option_names": []},
                   help=f"(not installed: {install})", add_help_option=False)
    def missing():
        raise UsageError(f"`archiver {name}` needs the {package} package, which is not installed: {install}")

    return missing


def _use_config(ctx, param, value):
    """An explicit ``--config`` becomes ``$ARCHIVER_CONFIG`` for the whole process, so that every
    ``load_config()`` (catalog, codec, workers started later) reads the same file."""
    if value:
        path = os.path.abspath(value)
        if not os.path.isfile(path):
            raise UsageError(f"{value}: config file not found")
        os.environ["ARCHIVER_CONFIG"] = path
    return value


def _use_verbose(ctx, param, value):
    if value:
        from ..service.logs import setup_logging  # heavy: sqlalchemy (service), not loaded by archiver --help

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
        return sorted({*COMMANDS, *OPTIONAL, *(ep.name for ep in entry_points(group=ENTRY_POINTS))})

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            ep = _entry_point(name)  # a command another installed package adds (archiver train)
            if ep is not None:
                return common_options(ep.load())
            return _not_installed(name) if name in OPTIONAL else None
        module, attr = target.split(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module or (e.name or "").count(".") == 1 and e.name.startswith("archiver."):
                return None  # the command, or the area it drives, is not installed in this build
            raise
        return common_options(getattr(mod, attr))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (ArchiverError, KeyboardInterrupt) as e:
            ctx.exit(report_error(e, "archiver", "--json" in sys.argv, click.echo))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="archiver")
def main():
    """Archive image collections: classify by policy, compress texture-heavy photos with a
    latent-diffusion codec, protect text/faces/evidence, and keep a catalog to restore anything."""


if __name__ == "__main__":  # pragma: no cover
    main()
