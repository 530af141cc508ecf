"""``archiver restore``: originals back from the vault or through their codec."""

from __future__ import annotations

import click

from ...errors import AdapterError, NoSpaceError, NotInCatalogError, SafetyError, UsageError
from ..core import with_core
from ..output import emit, progress


@click.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--to", "to", type=click.Path(file_okay=False), default=None, help="restore under this directory (same relative paths)")
@click.option("--as-of", "as_of", default=None, help="the version committed at or before this ISO time (UTC unless a zone is given)")
@click.option("--force", is_flag=True, help="overwrite existing files")
@click.option("--lossy-suffix", default=None, metavar="SUFFIX",
              help="name approximate (lossy-codec) restores NAME<SUFFIX>.EXT, e.g. --lossy-suffix .reconstructed")
@click.option("--from-artifact", is_flag=True,
              help="decode the archived file (.jxl/.avif/.dlc) even while the vault or the disk holds the "
                   "original (with --to)")
@click.option("--config", "config_path", type=click.Path(), default=None, help="config file")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@with_core
def restore(targets, to, as_of, force, lossy_suffix, from_artifact, as_json, core):
    """Restore originals (PATH, catalog ID or GLOB; the original's name or the archived file's,
    e.g. photo.png.jxl): from the vault if still there, else through the file's codec: the exact
    original from an exact codec, the verified reconstruction (with the original's metadata,
    PNG text chunks included, marked as a reconstruction) from a lossy one."""
    from ...work.restore import parse_time, restore as do_restore  # heavy: sqlalchemy (work), not loaded by archiver --help

    core.cfg  # a broken config is reported before a bad --as-of, as ever
    when = parse_time(as_of)
    if from_artifact and to is None:  # never in place: it could put an approximation over an original
        raise UsageError("--from-artifact needs --to DIR (it never writes over the originals' places)")
    cat = core.catalog
    try:
        results = core.guard(lambda: do_restore(
            cat, list(targets), vault=core.vault, codecs=core.codecs, to=to, as_of=when, force=force,
            lossy_suffix=lossy_suffix, from_artifact=from_artifact,
            progress=lambda rows: progress(rows, desc="restore", enabled=not as_json and len(rows) > 1)))
    except NotInCatalogError as e:
        raise NotInCatalogError(f"{e} ({core.catalog_note()})") from None
    data = [r.to_dict() for r in results]

    def human(rows):
        return "\n".join(f"{r['status']:<8} {r['path']} -> {r['dest'] or '-'} [{r['source']}, {r['exact']}]"
                         + (f": {r['message']}" if r["message"] else "") for r in rows)

    emit({"results": data}, as_json, human=lambda d: human(d["results"]))
    errors = [r for r in results if r.status == "error"]
    if errors and all(r.exit_code == AdapterError.exit_code for r in errors):
        raise SystemExit(AdapterError.exit_code)  # only a missing/different adapter: its own code
    if errors:
        raise SystemExit(1)
    unrecorded = [r for r in results if r.status == "restored" and r.exit_code == NoSpaceError.exit_code]
    if unrecorded:  # every file is back, but the catalog's disk is full: say so once, exit 13
        click.echo(f"archiver: error: {len(unrecorded)} restore(s) not recorded in the catalog: "
                   f"{unrecorded[0].message.split('could not record it: ', 1)[-1]}", err=True)
        raise SystemExit(NoSpaceError.exit_code)
    if any(r.status == "refused" for r in results):
        raise SystemExit(SafetyError.exit_code)
