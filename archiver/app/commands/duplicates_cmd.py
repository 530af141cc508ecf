"""``archiver duplicates`` (exact copies and near duplicates in the catalog) and ``archiver find
IMAGE`` (the archived pictures near a given one). Both only read: nothing is ever deleted, a
person decides (issue 28)."""

from __future__ import annotations

import time

import click

from ..core import with_core
from ..output import emit, human_bytes, progress


def _near_group(members) -> dict:
    return {"files": [{"id": i, "path": p, "phash_distance": dp, "dhash_distance": dd} for i, p, dp, dd in members]}


def _human_duplicates(d: dict) -> str:
    lines = [f"exact copies (same content): {len(d['exact'])} group(s)"]
    for n, g in enumerate(d["exact"], 1):
        lines.append(f"  group {n} ({len(g['files'])} files, {g['stored_files']} stored file(s)):")
        for f in g["files"]:
            how = f"  shares #{f['artifact_of']}'s stored file" if f["artifact_of"] else ""
            lines.append(f"    #{f['id']} {f['path']}{how}")
    t = d["thresholds"]
    lines.append(f"near duplicates (pHash within {t['phash_max']} bits and dHash within {t['dhash_max']}): "
                 f"{len(d['near'])} group(s)")
    for n, g in enumerate(d["near"], 1):
        lines.append(f"  group {n} ({len(g['files'])} files; distances to the first):")
        for k, f in enumerate(g["files"]):
            dist = f"  pHash {f['phash_distance']}, dHash {f['dhash_distance']}" if k else ""
            lines.append(f"    #{f['id']} {f['path']}{dist}")
    lines.append("nothing was deleted: a person decides (archiver show / restore / forget)")
    return "\n".join(lines)


@click.command()
@click.option("--phash-max", type=click.IntRange(0, 15), default=None,
              help="near: pHash bits that may differ (default: the measured threshold)")
@click.option("--dhash-max", type=click.IntRange(0, 32), default=None,
              help="near: dHash bits that may differ (default: the measured threshold)")
@click.option("--config", "config_path", type=click.Path(), default=None, help="config file")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@with_core
def duplicates(phash_max, dhash_max, as_json, core):
    """Exact copies and near duplicates among archived files (newest version per path); deletes nothing."""
    from ... import likeness  # heavy: archiver.likeness, not loaded by archiver --help
    from ...catalog import duplicates as dup  # heavy: sqlalchemy (catalog), not loaded by archiver --help

    pm = likeness.PHASH_MAX if phash_max is None else phash_max
    dm = likeness.DHASH_MAX if dhash_max is None else dhash_max

    def run():
        with core.catalog.session() as s:
            exact = dup.exact_groups(s)
            entries = dup.newest_committed_hashes(s)
        near = dup.near_groups(entries, phash_max=pm, dhash_max=dm,
                               progress=lambda it, total, desc: progress(it, total=total, desc=desc, enabled=not as_json))
        return {"thresholds": {"phash_max": pm, "dhash_max": dm}, "files_compared": len(entries),
                "exact": [{"files": [{"id": i, "path": p, "artifact_of": a} for i, p, a in g],
                           "stored_files": sum(1 for _, _, a in g if a is None)} for g in exact],
                "near": [_near_group(g) for g in near]}

    emit(core.guard(run), as_json, _human_duplicates)


def _human_find(d: dict) -> str:
    lines = [f"{d['image']}: pHash {d['phash']}, dHash {d['dhash']}"]
    for m in d["matches"]:
        size = f"  {human_bytes(m['size'])}" if m["size"] else ""
        lines.append(f"  #{m['id']} {m['state']:<9} {m['path']}  pHash {m['phash_distance']}, dHash "
                     f"{m['dhash_distance']}{size}")
    lines.append(f"{len(d['matches'])} match(es) in {d['seconds'] * 1000:.0f} ms"
                 + ("" if d["matches"] else " (nothing archived looks like it)"))
    return "\n".join(lines)


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--phash-max", type=click.IntRange(0, 15), default=None,
              help="pHash bits that may differ (default: the measured near-duplicate threshold; at most 15)")
@click.option("--dhash-max", type=click.IntRange(0, 64), default=None, help="dHash bits that may differ")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True, help="at most this many matches")
@click.option("--config", "config_path", type=click.Path(), default=None, help="config file")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@with_core
def find(image, phash_max, dhash_max, limit, as_json, core):
    """Which archived photo is this? Catalog entries whose perceptual hash is near IMAGE's."""
    from ... import likeness  # heavy: archiver.likeness, not loaded by archiver --help
    from ...catalog import duplicates as dup  # heavy: sqlalchemy (catalog), not loaded by archiver --help
    from ...imageio import load_image  # heavy: PIL (imageio), not loaded by archiver --help

    ph, dh = likeness.hashes(load_image(image, max_pixels=core.cfg.max_pixels).rgb)
    pm = likeness.PHASH_MAX if phash_max is None else phash_max
    dm = likeness.DHASH_MAX if dhash_max is None else dhash_max

    def run():
        t0 = time.perf_counter()
        with core.catalog.session() as s:
            hits = dup.near(s, ph, dh, phash_max=pm, dhash_max=dm, limit=limit)
            matches = [{"id": r.id, "path": r.path, "state": r.state, "rule": r.rule, "codec": r.codec, "size": r.size,
                        "phash_distance": dp, "dhash_distance": dd} for r, dp, dd in hits]
        return {"image": image, "phash": ph, "dhash": dh, "thresholds": {"phash_max": pm, "dhash_max": dm},
                "matches": matches, "seconds": round(time.perf_counter() - t0, 4)}

    emit(core.guard(run), as_json, _human_find)
