"""Policy files: YAML parsed with line numbers, validated into rules and conditions.

Every problem is reported as ``FILE:LINE: what is wrong`` (all of them at once, not just the
first), using the YAML node marks, so a person can fix a policy without guessing.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any

import yaml

from .. import codecs
from ..errors import PolicyError
from ..globs import glob_regex  # noqa: F401 - re-exported for the engine
from .classifiers import COST, FIELDS

#: every registered codec, plus ``keep`` (leave the file alone) and ``best`` (the smallest passing
#: file among the codecs listed in ``among``, or with ``budget`` the best quality within it)
CODECS = codecs.names()
ACTIONS = CODECS + ("keep", "best")
ORIGINAL = ("replace", "vault", "keep")
FLOOR_KEYS = ("min_psnr", "min_ms_ssim", "min_region_psnr")
#: the structure check's limits in bits (codecs.base.structure_problem; default: the near-duplicate thresholds)
STRUCTURE_KEYS = ("max_phash_distance", "max_dhash_distance")
#: floors a policy may set besides its ``target`` (the perceptual score the target sets is min_ssimulacra2)
FLOOR_KEYS_ALL = FLOOR_KEYS + ("min_ssimulacra2",) + STRUCTURE_KEYS
TOP_KEYS = ("version", "name", "description", "defaults", "rules", "default")
#: ``target``: the perceptual quality every lossy result must reach (a level name or a SSIMULACRA2
#: score); ``jpeg_margin``: how much smaller than a JPEG's exact transcode a lossy re-encode must be
PARAM_KEYS = ("target", "bpp", "floor", "jpeg_margin", "original", "retention_days")
#: what a rule adds to the parameters: the codecs tried after its action, ``best``'s candidates, a
#: size budget, and whether a generative codec (one that invents detail) may be among them
CHAIN_KEYS = ("fallback", "among", "budget", "allow_generative")
RULE_KEYS = ("name", "description", "when", "action") + PARAM_KEYS + CHAIN_KEYS
DEFAULT_KEYS = ("action",) + PARAM_KEYS + CHAIN_KEYS
#: the fallback a lossy action gets when the rule names none: an exact copy, as before fallbacks existed
DEFAULT_FALLBACK = ("lossless",)

#: file fields a condition may test (besides exif.<Tag> and the classifier fields)
FILE_FIELDS = ("size", "width", "height", "megapixels", "format", "ext", "name", "path", "tags")
OPS = (">=", "<=", "==", "!=", ">", "<", "matches", "contains", "in")
#: aliases: a bare word standing for a classifier field
ALIASES = {"graphics": "texture.graphics", "faces": "faces.found", "text": "text.found", "evidence": "evidence.found", "texture": "texture.found"}

_EXPR = re.compile(
    r"^\s*(?P<not>not\s+)?(?P<field>[A-Za-z_][\w.]*)\s*(?:(?P<op>>=|<=|==|!=|>|<|\bmatches\b|\bcontains\b|\bin\b)\s*(?P<value>.+?))?\s*$"
)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


# -- YAML with line numbers -----------------------------------------------------------------
class _Map(dict):
    line = 0
    lines: dict


class _Seq(list):
    line = 0
    lines: list


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader, node):
    loader.flatten_mapping(node)
    m = _Map()
    m.line = node.start_mark.line + 1
    m.lines = {}
    for k_node, v_node in node.value:
        k = loader.construct_object(k_node, deep=True)
        if k in m:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{k}'", k_node.start_mark)
        m[k] = loader.construct_object(v_node, deep=True)
        m.lines[k] = v_node.start_mark.line + 1
    return m


def _construct_seq(loader, node):
    s = _Seq(loader.construct_object(n, deep=True) for n in node.value)
    s.line = node.start_mark.line + 1
    s.lines = [n.start_mark.line + 1 for n in node.value]
    return s


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


# -- the validated policy -------------------------------------------------------------------
@dataclass
class Rule:
    name: str
    action: str
    params: dict[str, Any]
    when: "Condition | None" = None
    description: str = ""
    line: int = 0

    @property
    def needs(self) -> set[str]:
        return self.when.needs if self.when else set()


class _Problems:
    def __init__(self, source: str):
        self.source = source
        self.items: list[tuple[int, str]] = []

    def add(self, line: int, msg: str) -> None:
        self.items.append((line, msg))

    def raise_if_any(self) -> None:
        if self.items:
            raise policy_error(self.source, self.items)


def policy_error(source: str, items: list[tuple[int, str]]) -> PolicyError:
    items = sorted(set(items))
    text = "\n".join(f"{source}:{line}: {msg}" if line else f"{source}: {msg}" for line, msg in items)
    if len(items) > 1:
        text = f"{len(items)} problems in policy\n" + text
    err = PolicyError(text)
    err.problems = [{"file": source, "line": line or None, "message": msg} for line, msg in items]
    return err


def _suggest(word: str, choices) -> str:
    m = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean '{m[0]}'?)" if m else ""


def _line(obj, key=None, default=0) -> int:
    if key is not None and isinstance(obj, _Map):
        return obj.lines.get(key, obj.line)
    if key is not None and isinstance(obj, _Seq) and isinstance(key, int) and key < len(obj.lines):
        return obj.lines[key]
    return getattr(obj, "line", default) or default


# -- conditions -----------------------------------------------------------------------------
@dataclass
class Condition:
    kind: str  # compare | path | tag | all | any | not | always
    line: int = 0
    field: str = ""
    op: str = ""
    value: Any = None
    negate: bool = False
    items: list["Condition"] = dc_field(default_factory=list)
    text: str = ""

    @property
    def needs(self) -> set[str]:
        if self.kind in ("all", "any", "not"):
            out: set[str] = set()
            for c in self.items:
                out |= c.needs
            return out
        if self.kind == "compare":
            head = self.field.split(".", 1)[0]
            if head in FIELDS:
                return {head}
        return set()

    @property
    def cost(self) -> int:
        """Rough price of evaluating: file facts are free, detectors expensive."""
        return sum(COST[n] for n in self.needs)

    def describe(self) -> str:
        if self.text:
            return self.text
        if self.kind == "path":
            return f"path matches {self.value}"
        if self.kind == "tag":
            return f"tag in {self.value}"
        if self.kind == "always":
            return "always"
        if self.kind == "not":
            return f"not ({self.items[0].describe()})"
        joiner = " and " if self.kind == "all" else " or "
        return "(" + joiner.join(c.describe() for c in self.items) + ")"


def parse_size(v: Any) -> Any:
    if isinstance(v, str):
        m = re.fullmatch(r"\s*([\d.]+)\s*([kmg]i?b|b)?\s*", v, re.IGNORECASE)
        if m:
            return float(m.group(1)) * _UNITS[(m.group(2) or "b").lower()]
    return v


def _check_field(fld: str, line: int, probs: _Problems) -> bool:
    if fld in FILE_FIELDS:
        return True
    head, _, attr = fld.partition(".")
    if head == "exif" and attr:
        return True
    if head in FIELDS:
        if attr in FIELDS[head]:
            return True
        probs.add(line, f"unknown field '{fld}': {head} has {', '.join(FIELDS[head])}" + _suggest(attr, FIELDS[head]))
        return False
    known = list(FILE_FIELDS) + [f"{c}.{a}" for c in FIELDS for a in FIELDS[c]] + list(ALIASES) + ["exif.<Tag>"]
    probs.add(line, f"unknown field '{fld}'" + _suggest(fld, known) + f"; known: {', '.join(FILE_FIELDS)}, exif.<Tag>, "
              f"{', '.join(sorted(ALIASES))}, <classifier>.<field>")
    return False


def parse_expression(text: str, line: int, probs: _Problems) -> Condition | None:
    m = _EXPR.match(text)
    if not m:
        probs.add(line, f"cannot read condition '{text}': expected 'FIELD', 'not FIELD' or 'FIELD OP VALUE' with OP one of {' '.join(OPS)}")
        return None
    fld = m.group("field")
    fld = ALIASES.get(fld, fld)
    op = m.group("op")
    raw = m.group("value")
    if not _check_field(fld, line, probs):
        return None
    if op is None:
        return Condition("compare", line, fld, "truthy", None, bool(m.group("not")), text=text.strip())
    if m.group("not"):
        probs.add(line, f"'not' goes with a bare field ('not text.found'); write '{fld} {_negated(op)} {raw}' instead")
        return None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    if fld == "size":
        value = parse_size(value)
    if op in (">=", "<=", ">", "<") and not isinstance(value, (int, float)):
        probs.add(line, f"'{op}' needs a number, got '{raw}'")
        return None
    if op == "in" and not isinstance(value, list):
        probs.add(line, f"'in' needs a list such as [jpeg, png], got '{raw}'")
        return None
    return Condition("compare", line, fld, op, value, text=text.strip())


def _negated(op: str) -> str:
    return {">=": "<", "<=": ">", ">": "<=", "<": ">=", "==": "!=", "!=": "=="}.get(op, op)


def _str_list(v: Any, what: str, line: int, probs: _Problems) -> list[str] | None:
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return list(v)
    probs.add(line, f"{what} needs a string or a list of strings")
    return None


def parse_condition(node: Any, line: int, probs: _Problems) -> Condition | None:
    """A condition is an expression string, a list (all of them), or a one-key mapping:
    all/any (lists), not, path (globs), tag (names), exif ({Tag: glob})."""
    if isinstance(node, bool):
        return Condition("always", line) if node else Condition("not", line, items=[Condition("always", line)])
    if isinstance(node, str):
        return parse_expression(node, line, probs)
    if isinstance(node, list):
        items = [parse_condition(x, _line(node, i, line), probs) for i, x in enumerate(node)]
        if not node:
            probs.add(line, "an empty condition list; leave 'when' out for a rule that always applies")
        return Condition("all", line, items=[c for c in items if c]) if all(items) else None
    if isinstance(node, dict):
        if len(node) != 1:
            probs.add(line, f"a condition mapping has exactly one key (all, any, not, path, tag, exif); got {', '.join(map(str, node))}")
            return None
        (key, val), = node.items()
        vline = _line(node, key, line)
        if key in ("all", "any"):
            if not isinstance(val, list) or not val:
                probs.add(vline, f"'{key}' needs a non-empty list of conditions")
                return None
            items = [parse_condition(x, _line(val, i, vline), probs) for i, x in enumerate(val)]
            return Condition(key, vline, items=[c for c in items if c]) if all(items) else None
        if key == "not":
            c = parse_condition(val, vline, probs)
            return Condition("not", vline, items=[c]) if c else None
        if key == "path":
            globs = _str_list(val, "'path'", vline, probs)
            return Condition("path", vline, value=globs) if globs else None
        if key in ("tag", "tags"):
            tags = _str_list(val, "'tag'", vline, probs)
            return Condition("tag", vline, value=[t.lower() for t in tags]) if tags else None
        if key == "exif":
            if not isinstance(val, dict) or not val:
                probs.add(vline, "'exif' needs a mapping of EXIF tag -> glob, e.g. {Software: '*FTK*'}")
                return None
            items = [
                Condition("compare", _line(val, k, vline), f"exif.{k}", "matches", str(v), text=f"exif.{k} matches '{v}'")
                for k, v in val.items()
            ]
            return items[0] if len(items) == 1 else Condition("all", vline, items=items)
        probs.add(vline, f"unknown condition '{key}'" + _suggest(key, ("all", "any", "not", "path", "tag", "exif")))
        return None
    probs.add(line, f"a condition must be a string, list or mapping, not {type(node).__name__}")
    return None


# -- the whole file -------------------------------------------------------------------------
def _params(m: dict, defaults: dict, where: str, probs: _Problems, action: str | None) -> dict[str, Any]:
    from ..perceptual import target_score  # heavy: cv2, numpy (via perceptual), which policy.schema does not load at import

    p: dict[str, Any] = {}
    if "target" in m:
        try:
            p["target"] = target_score(m["target"])
        except ValueError as e:
            probs.add(_line(m, "target"), f"{where}: {e}")
    if "jpeg_margin" in m:
        v = m["jpeg_margin"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
            probs.add(_line(m, "jpeg_margin"), f"{where}: 'jpeg_margin' is a fraction in [0, 1) (0.3 = 30% smaller), got {v!r}")
        else:
            p["jpeg_margin"] = float(v)
    if "bpp" in m:
        if isinstance(m["bpp"], bool) or not isinstance(m["bpp"], (int, float)) or not 0 < m["bpp"] <= 24:
            probs.add(_line(m, "bpp"), f"{where}: 'bpp' must be a number of bits per pixel in (0, 24], got {m['bpp']!r}")
        else:
            p["bpp"] = float(m["bpp"])
    if "floor" in m:
        f = m["floor"]
        fl = _line(m, "floor")
        if not isinstance(f, dict):
            probs.add(fl, f"{where}: 'floor' must be a mapping with {', '.join(FLOOR_KEYS)}")
        else:
            p["floor"] = {}
            for k, v in f.items():
                if k not in FLOOR_KEYS_ALL:
                    probs.add(_line(f, k, fl), f"{where}: unknown floor '{k}'" + _suggest(k, FLOOR_KEYS_ALL) + f"; known: {', '.join(FLOOR_KEYS_ALL)}")
                elif isinstance(v, bool) or not isinstance(v, (int, float)):
                    probs.add(_line(f, k, fl), f"{where}: floor '{k}' must be a number, got {v!r}")
                elif k == "min_ms_ssim" and not 0 <= v <= 1:
                    probs.add(_line(f, k, fl), f"{where}: min_ms_ssim must be between 0 and 1, got {v}")
                elif k in STRUCTURE_KEYS and not 0 <= v <= 64:
                    probs.add(_line(f, k, fl), f"{where}: {k} is a number of bits, 0 to 64, got {v}")
                elif k == "min_ssimulacra2" and not 0 < v <= 100:
                    probs.add(_line(f, k, fl), f"{where}: min_ssimulacra2 is a score in (0, 100], got {v}")
                elif k not in ("min_ms_ssim", "min_ssimulacra2") + STRUCTURE_KEYS and not 0 <= v <= 100:
                    probs.add(_line(f, k, fl), f"{where}: {k} is in dB and must be between 0 and 100, got {v}")
                else:
                    p["floor"][k] = float(v)
    if "original" in m:
        if m["original"] not in ORIGINAL:
            probs.add(_line(m, "original"), f"{where}: 'original' must be one of {', '.join(ORIGINAL)}, got {m['original']!r}" + _suggest(m["original"], ORIGINAL))
        else:
            p["original"] = m["original"]
    if "retention_days" in m:
        v = m["retention_days"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            probs.add(_line(m, "retention_days"), f"{where}: 'retention_days' must be a whole number >= 0, got {v!r}")
        else:
            p["retention_days"] = v
    if action is None:
        return p
    # resolve against the policy defaults
    out = {"original": p.get("original", defaults.get("original", "vault")),
           "retention_days": p.get("retention_days", defaults.get("retention_days", 30))}
    chain = _chain(m, where, probs, action)
    out.update(chain)
    tried = ([] if action in ("keep", "best") else [action]) + chain.get("among", []) + chain.get("fallback", [])
    lossy = [c for c in tried if codecs.is_lossy(c)]
    generative = [c for c in tried if codecs.is_generative(c)]
    if generative and not chain.get("allow_generative"):
        probs.add(_line(m, "action"), f"{where}: {', '.join(generative)} invents detail; a rule lists a generative "
                  "codec only with 'allow_generative: true' (where invented detail is harmless: texture, not "
                  "faces, text or evidence)")
    target = p.get("target", defaults.get("target"))
    if lossy and target is not None:
        out["target"] = target
        if "jpeg_margin" in p or "jpeg_margin" in defaults:
            out["jpeg_margin"] = p.get("jpeg_margin", defaults.get("jpeg_margin"))
    if "diffusion" in tried:
        bpp = p.get("bpp", defaults.get("bpp"))
        if bpp is not None:
            out["bpp"] = bpp
        elif target is None and not probs.items:
            probs.add(_line(m, "action"), f"{where}: the diffusion codec needs a 'target' (or a 'bpp'), here or in 'defaults'")
    elif "bpp" in m:
        probs.add(_line(m, "bpp"), f"{where}: 'bpp' is the diffusion codec's rate, and this rule never uses it")
    if lossy:
        floor = dict(defaults.get("floor", {}))
        floor.update(p.get("floor", {}))
        if floor:
            out["floor"] = floor
        missing = [k for k in FLOOR_KEYS if k not in floor]
        if target is None and "min_ssimulacra2" not in floor and missing and "floor" not in p and not probs.items:
            probs.add(_line(m, "action"), f"{where}: a lossy codec ({', '.join(lossy)}) needs a quality 'target' "
                      "(e.g. target: good), here or in 'defaults'")
    else:
        for k in ("floor", "budget", "target"):
            if k in m:
                probs.add(_line(m, k), f"{where}: '{k}' only applies to lossy codecs, and this rule uses none")
    if action == "keep":
        if "original" in p and p["original"] != "keep":
            probs.add(_line(m, "original"), f"{where}: action 'keep' leaves the file alone, so 'original' must be keep")
        out["original"] = "keep"
        out["retention_days"] = 0
    return out


def _codec_list(m: dict, key: str, where: str, probs: _Problems) -> list[str]:
    v = m[key]
    line = _line(m, key)
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        probs.add(line, f"{where}: '{key}' must be a list of codecs, e.g. [{', '.join(CODECS[:2])}]")
        return []
    out = []
    for i, name in enumerate(v):
        if name not in CODECS:
            hint = " ('keep' is what happens when every codec fails)" if name == "keep" else ""
            probs.add(_line(v, i, line), f"{where}: '{key}' names unknown codec {name!r}{hint}"
                      + _suggest(name, CODECS) + f"; known: {', '.join(CODECS)}")
        elif name in out:
            probs.add(_line(v, i, line), f"{where}: '{key}' names {name} twice")
        else:
            out.append(name)
    return out


def parse_budget(v: Any) -> dict | None:
    """'0.25 bpp' -> {'bpp': 0.25}; '40 KB' or 40000 -> {'bytes': 40000}; None when unreadable."""
    if isinstance(v, str):
        m = re.fullmatch(r"\s*([\d.]+)\s*bpp\s*", v, re.IGNORECASE)
        if m:
            return {"bpp": float(m.group(1))} if float(m.group(1)) > 0 else None
        v = parse_size(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
        return {"bytes": int(v)}
    return None


def _chain(m: dict, where: str, probs: _Problems, action: str) -> dict:
    """``fallback`` (codecs tried in order after the action), ``among`` (``best``'s candidates),
    ``budget``, ``allow_generative``."""
    out: dict[str, Any] = {}
    if action == "best":
        if "among" not in m:
            probs.add(_line(m, "action"), f"{where}: 'best' needs 'among', the codecs to compare (e.g. [diffusion, avif, jxl])")
        else:
            out["among"] = _codec_list(m, "among", where, probs)
            if not out["among"] and not isinstance(m["among"], str) and isinstance(m["among"], list) and not m["among"]:
                probs.add(_line(m, "among"), f"{where}: 'among' needs at least one codec")
    elif "among" in m:
        probs.add(_line(m, "among"), f"{where}: 'among' lists the candidates of action 'best', not of {action}")
    if action == "keep":
        if "fallback" in m:
            probs.add(_line(m, "fallback"), f"{where}: action 'keep' tries no codec, so it has no fallback")
        return out
    if "fallback" in m:
        out["fallback"] = [c for c in _codec_list(m, "fallback", where, probs) if c != action]
    else:
        lossy = action == "best" or codecs.is_lossy(action)
        out["fallback"] = list(DEFAULT_FALLBACK) if lossy else []
    if "budget" in m:
        b = parse_budget(m["budget"])
        if b is None:
            probs.add(_line(m, "budget"), f"{where}: 'budget' is a size per image such as '40 KB' or '0.25 bpp', got {m['budget']!r}")
        else:
            out["budget"] = b
    if "allow_generative" in m:
        if not isinstance(m["allow_generative"], bool):
            probs.add(_line(m, "allow_generative"), f"{where}: 'allow_generative' is true or false, got {m['allow_generative']!r}")
        elif m["allow_generative"]:
            out["allow_generative"] = True
    return out


def parse_policy(text: str, source: str):
    """Parse and validate; returns the pieces ``engine.Policy`` is built from."""
    probs = _Problems(source)
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 0
        raise policy_error(source, [(line, f"invalid YAML: {e.problem or e.context}")]) from None
    except yaml.YAMLError as e:
        raise policy_error(source, [(0, f"invalid YAML: {e}")]) from None
    if not isinstance(data, dict):
        raise policy_error(source, [(_line(data, default=1), "a policy is a mapping with 'rules' (and optionally name, description, defaults, default)")])
    for k in data:
        if k not in TOP_KEYS:
            probs.add(_line(data, k), f"unknown key '{k}'" + _suggest(k, TOP_KEYS) + f"; known: {', '.join(TOP_KEYS)}")
    if data.get("version", 1) != 1:
        probs.add(_line(data, "version"), f"unsupported policy version {data.get('version')!r} (this archiver reads version 1)")
    name = data.get("name") or Path(source).stem
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        probs.add(_line(data, "defaults"), "'defaults' must be a mapping (bpp, floor, original, retention_days)")
        defaults = {}
    for k in defaults:
        if k not in PARAM_KEYS:
            probs.add(_line(defaults, k), f"defaults: unknown key '{k}'" + _suggest(k, PARAM_KEYS) + f"; known: {', '.join(PARAM_KEYS)}")
    dparams = _params(defaults, {}, "defaults", probs, None)

    rules: list[Rule] = []
    raw_rules = data.get("rules")
    if raw_rules is None:
        probs.add(data.line, "missing 'rules': a list of rules, each with name, when and action")
        raw_rules = []
    elif not isinstance(raw_rules, list):
        probs.add(_line(data, "rules"), "'rules' must be a list of rules")
        raw_rules = []
    seen: dict[str, int] = {}
    for i, r in enumerate(raw_rules):
        rl = _line(raw_rules, i, _line(data, "rules"))
        if not isinstance(r, dict):
            probs.add(rl, f"rule {i + 1} must be a mapping with name, when and action")
            continue
        rname = r.get("name")
        where = f"rule '{rname}'" if rname else f"rule {i + 1}"
        if not rname or not isinstance(rname, str):
            probs.add(r.line, f"{where}: missing 'name'")
            rname = f"rule-{i + 1}"
        elif rname in seen:
            probs.add(_line(r, "name"), f"{where}: duplicate rule name (first at line {seen[rname]})")
        seen.setdefault(rname, _line(r, "name"))
        for k in r:
            if k not in RULE_KEYS:
                probs.add(_line(r, k), f"{where}: unknown key '{k}'" + _suggest(k, RULE_KEYS) + f"; known: {', '.join(RULE_KEYS)}")
        action = r.get("action")
        if action not in ACTIONS:
            probs.add(_line(r, "action") if "action" in r else r.line,
                      f"{where}: 'action' must be one of {', '.join(ACTIONS)}, got {action!r}" + _suggest(action, ACTIONS))
            action = None
        when = None
        if "when" in r:
            when = parse_condition(r["when"], _line(r, "when"), probs)
        params = _params(r, dparams, where, probs, action)
        if action:
            rules.append(Rule(rname, action, params, when, str(r.get("description", "")), r.line))

    d = data.get("default")
    if d is None:
        default = Rule("default", "lossless", _params({}, dparams, "default", probs, "lossless"), None,
                       "no rule matched: when in doubt, lossless", 0)
    elif isinstance(d, str):
        if d not in ACTIONS:
            probs.add(_line(data, "default"), f"'default' must be one of {', '.join(ACTIONS)}, got {d!r}")
            d = "lossless"
        default = Rule("default", d, _params({}, dparams, "default", probs, d), None, "no rule matched", _line(data, "default"))
    elif isinstance(d, dict):
        for k in d:
            if k not in DEFAULT_KEYS:
                probs.add(_line(d, k), f"default: unknown key '{k}'" + _suggest(k, DEFAULT_KEYS))
        act = d.get("action", "lossless")
        if act not in ACTIONS:
            probs.add(_line(d, "action"), f"default: 'action' must be one of {', '.join(ACTIONS)}, got {act!r}")
            act = "lossless"
        default = Rule("default", act, _params(d, dparams, "default", probs, act), None, "no rule matched", d.line)
    else:
        probs.add(_line(data, "default"), "'default' must be an action name or a mapping with 'action'")
        default = Rule("default", "lossless", {}, None, "", 0)
    probs.raise_if_any()
    return {
        "name": str(name),
        "description": str(data.get("description", "")),
        "rules": rules,
        "default": default,
        "defaults": dparams,
    }
