"""The import graph of ``archiver`` between its top-level parts (subpackages and modules).

Prints the number of arrows (distinct part -> part imports, including those inside functions),
the number of floors (longest chain in the graph with each cycle collapsed to one node), the
cycles between parts and between the modules of one part, and the arrows that run up the rings
(``RINGS`` below, the same order as the layers contract in pyproject.toml).

It also holds the one contract import-linter cannot state (its graph knows modules, not the names
in them): **no module imports another module's ``_private`` name**, neither ``from m import _x``
nor ``m._x`` on an imported archiver module (dunder names such as ``__version__`` are public).
``--check`` lists each such import and exits 1 when there is one; ``.ci/run`` runs it.

    python bench/import_graph.py [--arrows] [--check]
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

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


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for f in sorted(package.rglob("*.py")):
        parts = list(f.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def _resolve(importer: str, is_pkg: bool, level: int, module: str | None) -> str:
    """The absolute name of a (relative) ``from`` import's module."""
    if not level:
        return module or ""
    base = importer.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def private_imports(package: Path) -> list[str]:
    """Every import of another module's ``_private`` name in ``package``: ``file:line: what``."""
    mods = _modules(package)
    root = package.name
    found = []
    for name, f in mods.items():
        tree = ast.parse(f.read_text(), str(f))
        is_pkg = f.name == "__init__.py"
        bound: dict[str, str] = {}  # local name -> the archiver module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                src = _resolve(name, is_pkg, node.level, node.module)
                if src.split(".")[0] != root:
                    continue
                for a in node.names:
                    full = f"{src}.{a.name}"
                    if _private(a.name) and src != name:
                        found.append(f"{f}:{node.lineno}: {name} imports {full}")
                    elif full in mods:
                        bound[a.asname or a.name] = full
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] != root:
                        continue
                    if any(_private(p) for p in a.name.split(".")):
                        found.append(f"{f}:{node.lineno}: {name} imports {a.name}")
                    if a.asname:
                        bound[a.asname] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                    and _private(node.attr) and bound[node.value.id] != name):
                found.append(f"{f}:{node.lineno}: {name} uses {bound[node.value.id]}.{node.attr}")
    return sorted(set(found))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arrows", action="store_true", help="list every arrow")
    ap.add_argument("--check", action="store_true",
                    help="only the contract: exit 1 if a module imports another module's _private name")
    args = ap.parse_args(argv)
    package = Path(__file__).resolve().parent.parent / "archiver"
    private = private_imports(package)
    if args.check:
        print(f"private names imported across modules: {len(private)}" + "".join(f"\n  {x}" for x in private))
        return 1 if private else 0
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
    print(f"private names imported across modules: {len(private)}" + "".join(f"\n  {x}" for x in private))
    if args.arrows:
        for a, b in arrows:
            print(f"  {a} -> {b}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
