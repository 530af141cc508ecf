"""Mutation bench for the safety core (issue 22): change one thing at a time in the code that
decides whether an original may go, run the tests that cover it, and list the mutants no test
kills. A surviving mutant is a check that could be deleted (or inverted) with every test green.

    python bench/mutation.py run --out docs/bench/mutation-DATE.json [--files work/invariant.py ...]
        [--only ID,ID] [--jobs 2]
    python bench/mutation.py list [--files ...]       # the mutants, without running anything
    python bench/mutation.py summary FILE.json        # counts, and the survivors with their lines

Each mutant is applied to a private copy of the repository (``git worktree``-free: a plain copy of
``archiver/`` and ``tests/`` in a temp folder), and the tests run there with ``PYTHONPATH`` set to
it, one fresh pytest process per mutant (``-x``: the first failure kills it; a run over its time
limit counts as killed too, and is marked so). Operators (on the AST, applied to the exact source
span so line numbers stay): comparison flipped (``==``/``!=``, ``is``/``is not``, ``in``/``not in``,
``<``/``>=`` ...), ``and``/``or`` swapped, ``not`` removed, an ``if``/``while`` condition forced to
``True`` or to ``False`` (the check deleted), a statement replaced by ``pass`` (calls, assignments,
returns, raises), a constant ``True``/``False`` flipped; inside functions only (``FUNCTIONS``
narrows a file to its safety functions). Lines marked ``# mutation: skip`` (logging, messages)
are left alone. Results are one JSON document; ``docs/safety.md`` records the
last run.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the safety core, and the tests that cover each file, fastest first (-x stops at the first failure)
CORE = {
    "archiver/work/invariant.py": ["tests/work/test_safety_units.py", "tests/work/test_removal_race.py",
                                   "tests/work/test_invariant.py"],
    "archiver/work/check.py": ["tests/work/test_safety_units.py", "tests/work/test_archive.py",
                               "tests/work/test_invariant.py"],
    "archiver/work/dispose.py": ["tests/work/test_safety_units.py", "tests/work/test_removal_race.py",
                                 "tests/work/test_invariant.py"],
    "archiver/work/recovery.py": ["tests/work/test_safety_units.py", "tests/work/test_removal_race.py",
                                  "tests/work/test_invariant.py", "tests/work/test_recovery.py"],
    "archiver/work/files.py": ["tests/work/test_safety_units.py", "tests/work/test_removal_race.py"],
    "archiver/storage/atomic.py": ["tests/test_atomic.py", "tests/work/test_safety_units.py"],
    "archiver/storage/vault.py": ["tests/work/test_safety_units.py", "tests/test_vault.py"],
}
#: where only some functions of a file are the safety core (the rest: names, messages, ownership)
FUNCTIONS = {
    "archiver/work/files.py": {"read_original", "open_for_writing", "_has_writer", "same_file", "looks_same",
                               "_stat_matches", "take", "differs", "give_back", "remove_own", "_not_regular", "drop"},
    "archiver/storage/atomic.py": {"fsync_dir", "write_bytes", "is_temp_name", "is_private_name",
                                   "_renameat2_noreplace", "rename_noreplace", "open_dir_nofollow", "write_in_dir",
                                   "create_new"},
}
#: seconds one mutant's tests may take (a mutant that hangs the tests is killed by them)
TIME_LIMIT = 600

SWAP_CMP = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn,
            ast.NotIn: ast.In, ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt}
CMP_TEXT = {ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
            ast.Lt: "<", ast.GtE: ">=", ast.Gt: ">", ast.LtE: "<="}


@dataclass
class Mutant:
    id: str
    file: str
    line: int
    op: str
    before: str
    after: str
    # filled by a run
    status: str = ""  # killed | survived | timeout | error
    seconds: float = 0.0
    killed_by: str = ""


def _offsets(src: str) -> list[int]:
    out, n = [0], 0
    for line in src.splitlines(keepends=True):
        n += len(line)
        out.append(n)
    return out


def _span(offs, node) -> tuple[int, int]:
    return offs[node.lineno - 1] + node.col_offset, offs[node.end_lineno - 1] + node.end_col_offset


def _skipped(lines: list[str], lineno: int) -> bool:
    return "# mutation: skip" in lines[lineno - 1]


def mutants_of(rel: str) -> list[tuple[Mutant, str]]:
    """Every mutant of one file: (description, mutated source)."""
    src = (ROOT / rel).read_text()
    tree = ast.parse(src)
    offs = _offsets(src)
    lines = src.splitlines()
    out: list[tuple[Mutant, str]] = []

    def add(node, op, start, end, text):
        if _skipped(lines, node.lineno):
            return
        before = src[start:end]
        if before == text:
            return
        m = Mutant(f"{Path(rel).stem}:{node.lineno}:{len(out)}", rel, node.lineno, op, before.strip()[:120], text.strip()[:120])
        out.append((m, src[:start] + text + src[end:]))

    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    wanted = FUNCTIONS.get(rel)
    funcs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
             and (wanted is None or n.name in wanted)]
    for top in funcs:
        tests = {id(n.test) for n in ast.walk(top) if isinstance(n, (ast.If, ast.While))}
        # a class's name constant and an __init__ that stores its arguments are no safety logic
        plain = {id(n) for n in ast.walk(top) if isinstance(top, ast.ClassDef) and n in top.body and isinstance(n, ast.Assign)}
        plain |= {id(st) for f in ast.walk(top) if isinstance(f, ast.FunctionDef) and f.name == "__init__"
                  for st in f.body if isinstance(st, ast.Assign)}
        for node in ast.walk(top):
            if id(node) in plain:
                continue
            if isinstance(node, (ast.If, ast.While)) and not isinstance(node.test, ast.Constant):
                s, e = _span(offs, node.test)
                add(node, "condition always true", s, e, "True")
                add(node, "condition always false", s, e, "False")  # the check deleted
            elif id(node) in tests:
                pass  # negating a whole if-test is covered by the two above
            elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in SWAP_CMP:
                a, b = _span(offs, node.left), _span(offs, node.comparators[0])
                new = f"{src[a[0]:a[1]]} {CMP_TEXT[SWAP_CMP[type(node.ops[0])]]} {src[b[0]:b[1]]}"
                add(node, "compare flipped", *_span(offs, node), new)
            elif isinstance(node, ast.BoolOp):
                s, e = _span(offs, node)
                word = " or " if isinstance(node.op, ast.And) else " and "
                parts = [src[slice(*_span(offs, v))] for v in node.values]
                add(node, "and/or swapped", s, e, "(" + word.join(parts) + ")")
            elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
                s, e = _span(offs, node)
                add(node, "not removed", s, e, "(" + src[slice(*_span(offs, node.operand))] + ")")
            elif isinstance(node, ast.Constant) and isinstance(node.value, bool) and id(node) not in docstrings:
                add(node, "constant flipped", *_span(offs, node), str(not node.value))
            if isinstance(node, (ast.Expr, ast.Assign, ast.AugAssign, ast.Raise, ast.Return, ast.Delete)) \
                    and id(getattr(node, "value", None)) not in docstrings:
                add(node, "statement removed", *_span(offs, node), "pass")
    return out


def _copy_tree(dst: Path) -> None:
    for part in ("archiver", "tests", "pyproject.toml", "bench"):
        s = ROOT / part
        if s.is_dir():
            shutil.copytree(s, dst / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "weights", "mutants"))
        else:
            shutil.copy2(s, dst / part)
    # the weights are large and never mutated: link them
    (dst / "archiver" / "weights").symlink_to(ROOT / "archiver" / "weights")


def _pytest(where: Path, tests: list[str]) -> tuple[int, str, float]:
    env = dict(os.environ, PYTHONPATH=str(where), PYTHONDONTWRITEBYTECODE="1")
    t = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                            *tests], cwd=where, env=env, capture_output=True, text=True, timeout=TIME_LIMIT)
    except subprocess.TimeoutExpired:
        return -1, "timeout", time.monotonic() - t
    failed = [ln.split(" ")[1] for ln in r.stdout.splitlines() if ln.startswith(("FAILED ", "ERROR "))]
    return r.returncode, (failed[0] if failed else r.stdout.strip().splitlines()[-1:] and r.stdout.strip().splitlines()[-1]), \
        time.monotonic() - t


def run(files: list[str], only: set[str], jobs: int, out: Path, retry: Path | None = None) -> dict:
    """Run every mutant not already in ``out`` (a rerun resumes; delete ``out`` to start over).
    With ``retry``: only the mutants an earlier run's file left alive (survived, timeout, error),
    matched by file, operator and text (line numbers move when the code does)."""
    before = [Mutant(**m) for m in json.loads(out.read_text())["mutants"]] if out.exists() else []
    seen = {(m.file, m.line, m.op, m.before, m.after) for m in before}
    alive = None
    if retry is not None:
        alive = {(m["file"], m["op"], m["before"], m["after"]) for m in json.loads(retry.read_text())["mutants"]
                 if m["status"] != "killed"}
    todo = [(m, text) for f in files for m, text in mutants_of(f) if (not only or m.id in only)
            and (m.file, m.line, m.op, m.before, m.after) not in seen
            and (alive is None or (m.file, m.op, m.before, m.after) in alive)]
    work = Path(tempfile.mkdtemp(prefix="archiver-mutation-"))
    slots = []
    for i in range(max(1, jobs)):
        d = work / f"w{i}"
        d.mkdir()
        _copy_tree(d)
        slots.append(d)
    # the tests must pass on the unmutated code first, or every mutant would look killed
    for f in files:
        rc, what, secs = _pytest(slots[0], CORE[f])
        if rc != 0:
            raise SystemExit(f"the tests of {f} fail without any mutant ({what}); fix them first")
    free = list(slots)
    import threading

    lock = threading.Lock()
    done: list[Mutant] = list(before)

    def one(item):
        m, text = item
        with lock:
            d = free.pop()
        try:
            target = d / m.file
            saved = target.read_text()
            target.write_text(text)
            try:
                rc, what, secs = _pytest(d, CORE[m.file])
            finally:
                target.write_text(saved)
            m.seconds = round(secs, 1)
            if rc == -1:
                m.status, m.killed_by = "timeout", "time limit"
            elif rc == 0:
                m.status = "survived"
            elif rc in (1, 2):
                m.status, m.killed_by = "killed", what
            else:
                m.status, m.killed_by = "error", f"pytest exit {rc}: {what}"
        finally:
            with lock:
                free.append(d)
                done.append(m)
                print(f"[{len(done) - len(before)}/{len(todo)}] {m.status:8} {m.id} {m.op}: {m.before!r} -> {m.after!r}",
                      flush=True)
                _write(out, files, done)
        return m

    with ThreadPoolExecutor(max_workers=len(slots)) as ex:
        list(ex.map(one, todo))
    shutil.rmtree(work, ignore_errors=True)
    return _write(out, files, done)


def _write(out: Path, files, done: list[Mutant]) -> dict:
    counts: dict[str, int] = {}
    for m in done:
        counts[m.status] = counts.get(m.status, 0) + 1
    doc = {"when": time.strftime("%Y-%m-%d %H:%M"), "files": files, "tests": {f: CORE[f] for f in files},
           "counts": counts, "mutants": [asdict(m) for m in sorted(done, key=lambda m: (m.file, m.line, m.id))]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    return doc


def summary(path: Path) -> int:
    doc = json.loads(path.read_text())
    print(f"{doc['when']}: {doc['counts']}")
    for m in doc["mutants"]:
        if m["status"] in ("survived", "timeout", "error"):
            print(f"  {m['status']} {m['file']}:{m['line']} {m['op']}: {m['before']!r} -> {m['after']!r}")
    return 0 if not doc["counts"].get("survived") else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "list"):
        p = sub.add_parser(name)
        p.add_argument("--files", nargs="*", default=list(CORE))
        p.add_argument("--only", default="", help="comma-separated mutant ids")
        if name == "run":
            p.add_argument("--jobs", type=int, default=2)
            p.add_argument("--out", type=Path, required=True)
            p.add_argument("--retry", type=Path, help="only the mutants this earlier run left alive")
    p = sub.add_parser("summary")
    p.add_argument("file", type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "summary":
        return summary(a.file)
    unknown = [f for f in a.files if f not in CORE]
    if unknown:
        ap.error(f"not in the safety core: {unknown} (known: {list(CORE)})")
    only = set(filter(None, a.only.split(",")))
    if a.cmd == "list":
        for f in a.files:
            for m, _ in mutants_of(f):
                if not only or m.id in only:
                    print(f"{m.id:28} {m.op:22} {m.before!r} -> {m.after!r}")
        return 0
    doc = run(a.files, only, a.jobs, a.out, a.retry)
    print(json.dumps(doc["counts"]))
    return 0 if not doc["counts"].get("survived") else 1


if __name__ == "__main__":
    sys.exit(main())
