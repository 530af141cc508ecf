"""The dashboard's duplicates view (issue 28): exact copies and near duplicates side by side, as
thumbnails (the originals as the file page shows them, through ``/api/files/<id>/original``).
Read-only: nothing is deleted from here, a person decides on each file's own page."""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template

from ... import likeness
from ...catalog import duplicates as dup
from ...catalog import queries as q

#: at most this many groups of each kind on the page
MAX_GROUPS = 200


def groups(catalog, cache: dict | None = None) -> dict:
    """Exact-copy groups (with which row's stored file they share) and near-duplicate groups;
    with ``cache``, computed again only when the catalog changed (its newest event)."""
    with catalog.read_session() as s:
        stamp = q.last_event_id(s)
        if cache is not None and cache.get("stamp") == stamp:
            return cache["groups"]
        exact = dup.exact_groups(s)
        entries = dup.newest_committed_hashes(s)
    near = dup.near_groups(entries)
    out = {"thresholds": {"phash_max": likeness.PHASH_MAX, "dhash_max": likeness.DHASH_MAX},
            "files_compared": len(entries),
            "exact": [[{"id": i, "path": p, "artifact_of": a} for i, p, a in g] for g in exact[:MAX_GROUPS]],
            "near": [[{"id": i, "path": p, "phash_distance": dp, "dhash_distance": dd} for i, p, dp, dd in g]
                     for g in near[:MAX_GROUPS]],
            "more": len(exact) > MAX_GROUPS or len(near) > MAX_GROUPS}
    if cache is not None:
        cache.update(stamp=stamp, groups=out)
    return out


def duplicates_blueprint(catalog) -> Blueprint:
    bp = Blueprint("duplicates", __name__)
    cache: dict = {}  # every pair is compared: once per change of the catalog, not per visit

    @bp.get("/duplicates")
    def page():
        return render_template("duplicates.html", d=groups(catalog, cache))

    @bp.get("/api/duplicates")
    def api():
        return jsonify(groups(catalog, cache))

    return bp
