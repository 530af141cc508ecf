"""The import graph of ``archiver`` between its top-level parts (subpackages and modules).

Prints the number of arrows (distinct part -> part imports, including those inside functions),
the number of floors (longest chain in the graph with each cycle collapsed to one node), the
cycles between parts and between the modules of one part, and the arrows that run up the rings
(``RINGS`` below, the same order as the layers contract in pyproject.toml).

    python bench/import_graph.py [--arrows]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import grimp

#: top ring first; parts on one line are on one floor of the rings; parts not named are leaves
RINGS = [
    ["app", "cli", "__main__", "doctor", "web"],  # the commands' ring (cli, doctor, web: before app/)
    ["train", "bench", "testing"],
    ["service"],
    ["work", "archive"],
    ["policy", "codecs", "codec", "catalog"],  # codec: codecs.diffusion before the merge
    ["storage"],
]


def part(module: str) -> str:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 else "(root)"


def ring(p: str) -> int:
    for i, names in enumerate(RINGS):
        if p in names:
            return i
    return len(RINGS)  # a leaf


def sccs(nodes, edges) -> list[list[str]]:
    """Strongly connected components (Tarjan), each sorted."""
    index, low, on, stack, out, n = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def floors(nodes, edges) -> int:
    comps = sccs(nodes, edges)
    of = {v: i for i, c in enumerate(comps) for v in c}
    dag = defaultdict(set)
    for v in nodes:
        for w in edges[v]:
            if of[v] != of[w]:
                dag[of[v]].add(of[w])
    depth = {}

    def d(c):
        if c not in depth:
            depth[c] = 1 + max((d(x) for x in dag[c]), default=0)
        return depth[c]

    return max((d(c) for c in range(len(comps))), default=0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arrows", action="store_true", help="list every arrow")
    args = ap.parse_args(argv)
    g = grimp.build_graph("archiver", cache_dir=None)
    mods = sorted(g.modules)
    parts, edges, mod_edges = set(), defaultdict(set), defaultdict(set)
    for m in mods:
        parts.add(part(m))
        for imported in g.find_modules_directly_imported_by(m):
            if imported.split(".")[0] != "archiver":
                continue
            mod_edges[m].add(imported)
            a, b = part(m), part(imported)
            if a != b and "(root)" not in (a, b):
                edges[a].add(b)
    parts.discard("(root)")
    arrows = sorted((a, b) for a in edges for b in edges[a])
    print(f"parts: {len(parts)}")
    print(f"arrows: {len(arrows)}")
    print(f"floors: {floors(parts, edges)}")
    cyc = [c for c in sccs(parts, edges) if len(c) > 1]
    print(f"cycles between parts: {len(cyc)}" + "".join(f"\n  {' <-> '.join(c)}" for c in cyc))
    inner = [c for c in sccs(set(mods), mod_edges) if len(c) > 1 and len({part(m) for m in c}) == 1]
    print(f"cycles between the modules of one part: {len(inner)}" + "".join(f"\n  {' <-> '.join(c)}" for c in inner))
    up = [(a, b) for a, b in arrows if ring(b) < ring(a)]
    print(f"upward arrows: {len(up)}" + "".join(f"\n  {a} -> {b}" for a, b in up))
    if args.arrows:
        for a, b in arrows:
            print(f"  {a} -> {b}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
