"""The import graph of ``archiver`` between its top-level parts (subpackages and modules).

Prints the number of arrows (distinct part -> part imports, including those inside functions),
the number of floors (longest chain in the graph with each cycle collapsed to one node), the
cycles between parts and between the modules of one part, and the arrows that run up the rings
(``RINGS`` below, the same order as the layers contract in pyproject.toml).

It also holds the one contract import-linter cannot state (its graph knows modules, not the names
in them): **no module imports another module's ``_private`` name**, neither ``from m import _x``
nor ``m._x`` on an imported archiver module (dunder names such as ``__version__`` are public).
It also holds the rule "imports at the top of the module" (issue 25): an import inside a function
in ``archiver/`` must say why on its line, with a trailing ``# heavy: <why>`` (a heavy or optional
dependency, or a module that ``archiver --help`` or the importing module does not load today) or
``# deferred: <why>`` (it closes an import cycle: a design smell to name). The report gives the
share of imports that sit inside functions.

``--check`` lists each import of a private name and each unmarked function-level import, and exits
1 when there is one; ``.ci/run`` runs it. ``--plot OUT.png`` draws the parts as boxes on their
floors of the rings, with the arrows between them (docs/architecture-rings.png).

    python bench/import_graph.py [--arrows] [--check] [--plot OUT.png]
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
    ["policy", "catalog"],
    ["codecs", "codec"],  # codec: codecs.diffusion before the merge
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


#: what an import inside a function must carry on its line (see the module docstring)
MARKS = ("# heavy:", "# deferred:")


def function_imports(package: Path) -> tuple[int, list[tuple[str, bool]]]:
    """(all imports, [(``file:line: statement``, marked) for each import inside a function])."""
    total, found = 0, []
    for f in sorted(package.rglob("*.py")):
        text = f.read_text()
        lines = text.splitlines()
        tree = ast.parse(text, str(f))

        def walk(node, in_function):
            nonlocal total
            for ch in ast.iter_child_nodes(node):
                if isinstance(ch, (ast.Import, ast.ImportFrom)):
                    total += 1
                    if in_function:
                        span = lines[ch.lineno - 1: ch.end_lineno]
                        found.append((f"{f}:{ch.lineno}: {ast.unparse(ch)}", any(m in x for x in span for m in MARKS)))
                walk(ch, in_function or isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

        walk(tree, False)
    return total, found


def plot(parts, edges, out: str) -> None:
    """The parts as boxes on their floors (top ring first, leaves at the bottom), arrows between them."""
    import matplotlib  # heavy: matplotlib, only for --plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: matplotlib, only for --plot
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # heavy: matplotlib, only for --plot

    # a row per (ring, depth inside the ring): a part that imports another part of its ring sits above it
    depth: dict[str, int] = {}

    def d(p):
        if p not in depth:
            depth[p] = 0
            depth[p] = 1 + max((d(q) for q in edges[p] if ring(q) == ring(p)), default=-1)
        return depth[p]

    for p in parts:
        d(p)
    keys = sorted({(ring(p), -depth[p]) for p in parts})
    rows = [sorted(p for p in parts if (ring(p), -depth[p]) == k) for k in keys]
    # fewer crossings: order each row by the mean position of its neighbours, a few sweeps
    pos = {p: (i + 0.5) / len(r) for r in rows for i, p in enumerate(r)}
    nbrs = defaultdict(set)
    for a in edges:
        for b in edges[a]:
            nbrs[a].add(b)
            nbrs[b].add(a)
    for _ in range(6):
        for r in rows:
            r.sort(key=lambda p: (sum(pos[q] for q in nbrs[p]) / len(nbrs[p]) if nbrs[p] else pos[p], p))
            pos.update({p: (i + 0.5) / len(r) for i, p in enumerate(r)})
    width, row_h, box_h = 18.0, 1.25, 0.5
    xy = {}
    for i, r in enumerate(rows):
        # a short row is shifted left or right of the middle, by turns: a chain of them would hide
        # its arrows behind each other
        shift = 0.0 if len(r) > 2 else (1.5 if i % 2 else -1.5)
        for j, p in enumerate(r):
            xy[p] = (1.6 + (width - 1.6) * (j + 0.5) / len(r) + shift, -i * row_h)
    fig, ax = plt.subplots(figsize=(16, 1.2 + 1.05 * len(rows)))
    names = {i: " · ".join(n for n in RINGS[i] if n in parts) for i in range(len(RINGS))}
    names[len(RINGS)] = "leaves"
    for k, key in enumerate(keys):  # a band per ring, named on the left
        if k and keys[k - 1][0] == key[0]:
            continue
        n = sum(1 for x in keys if x[0] == key[0])
        top, bottom = -k * row_h + row_h / 2, -(k + n - 1) * row_h - row_h / 2
        ax.add_patch(plt.Rectangle((0, bottom), width + 0.2, top - bottom, color="#f2f2f2" if key[0] % 2 else "#e3ecf7",
                                   zorder=0, lw=0))
        ax.text(0.1, (top + bottom) / 2, names[key[0]], va="center", ha="left", fontsize=11, style="italic", color="#444")
    palette = plt.get_cmap("tab10")
    for a in sorted(edges):
        for b in sorted(edges[a]):
            (x0, y0), (x1, y1) = xy[a], xy[b]
            quiet = b == "errors"  # everything may raise archiver's errors: those arrows are drawn faint
            # an arrow that passes rows steeply bows out, off the boxes in between
            rad = 0.0 if abs(x1 - x0) > 2.5 or y0 - y1 < 1.5 * row_h else (0.3 if x1 >= x0 else -0.3)
            ax.add_patch(FancyArrowPatch((x0, y0 - box_h / 2), (x1, y1 + box_h / 2), arrowstyle="-|>", mutation_scale=11,
                                         connectionstyle=f"arc3,rad={rad}", lw=0.6 if quiet else 1.1, zorder=1,
                                         color="#bbbbbb" if quiet else palette(sorted(parts).index(a) % 10),
                                         alpha=0.7 if quiet else 0.8))
    for p, (x, y) in xy.items():
        w = 0.22 + 0.13 * len(p)
        ax.add_patch(FancyBboxPatch((x - w / 2, y - box_h / 2), w, box_h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                    fc="white", ec=palette(sorted(parts).index(p) % 10), lw=1.6, zorder=2))
        ax.text(x, y, p, ha="center", va="center", fontsize=11, family="monospace", zorder=3)
    ax.set_xlim(0, width + 0.2)
    ax.set_ylim(-(len(rows) - 1) * row_h - row_h / 2 - 0.05, row_h / 2 + 0.05)
    ax.axis("off")
    n_arrows = sum(len(v) for v in edges.values())
    up = sum(1 for a in edges for b in edges[a] if ring(b) < ring(a))
    ax.set_title(f"archiver: {len(parts)} parts, {n_arrows} arrows, {len(rows)} rows; "
                 + ("imports only go down" if not up else f"{up} arrows run UP") + " (arrows into errors in grey)",
                 fontsize=12)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arrows", action="store_true", help="list every arrow")
    ap.add_argument("--check", action="store_true",
                    help="only the contracts: exit 1 if a module imports another module's _private name, "
                         "or imports inside a function without a '# heavy:' or '# deferred:' mark")
    ap.add_argument("--plot", metavar="OUT.png", help="draw the parts on their floors with the arrows between them")
    args = ap.parse_args(argv)
    package = Path(__file__).resolve().parent.parent / "archiver"
    private = private_imports(package)
    total, inner = function_imports(package)
    unmarked = [x for x, marked in inner if not marked]
    share = (f"imports inside functions: {len(inner)} of {total} ({100 * len(inner) / max(total, 1):.0f}%), "
             f"unmarked: {len(unmarked)}" + "".join(f"\n  {x}" for x in unmarked))
    if args.check:
        print(f"private names imported across modules: {len(private)}" + "".join(f"\n  {x}" for x in private))
        print(share)
        return 1 if private or unmarked else 0
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
    print(share)
    if args.plot:
        plot(parts, edges, args.plot)
        print(f"drawn: {args.plot}")
    if args.arrows:
        for a, b in arrows:
            print(f"  {a} -> {b}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
