"""The policy engine: which action is safe for this image, and why.

``load_policy(path)`` reads and validates a policy file (``None`` = the shipped default);
``Policy.decide(path, image, tags=...)`` walks the rules in order and returns the first match as
a ``Decision``. Classifiers run lazily: only those a condition on the way actually needs, cheap
conditions before expensive ones, ``all``/``any`` short-circuiting; so an evidence path rule
fires without decoding a pixel.
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..codecs import is_generative
from ..codecs.choice import order
from ..errors import PolicyError
from ..imageio import RAW_REASON, RAW_WHY, LoadedImage, camera_raw_kind
from .classifiers import NAMES, ClassifierResult, run_classifier
from .schema import Condition, Rule, glob_regex, parse_policy
from .subject import Subject

#: the shipped policies live in <repo>/policies, reachable as archiver/policies after install
POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"
DEFAULT_POLICY = POLICY_DIR / "default.yaml"

#: classifiers whose regions a diffusion encode must protect (finer quantisation, region floor)
PROTECTING = ("faces", "text")


@dataclass
class Decision:
    action: str
    params: dict[str, Any]
    rule: str
    reasons: list[str]
    evidence: dict[str, ClassifierResult] = field(default_factory=dict)
    protected_regions: list[tuple[int, int, int, int]] = field(default_factory=list)
    policy: str = ""
    path: str | None = None
    seconds: float = 0.0

    @property
    def codecs(self) -> list[str]:
        """The codecs this decision tries, in order (the action, ``best``'s candidates, the fallbacks)."""
        return order(self.action, self.params)

    @property
    def protected(self) -> bool:
        """True when the image is kept out of generative compression (no codec on the way invents detail)."""
        return "diffusion" not in self.codecs

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "action": self.action,
            "rule": self.rule,
            "policy": self.policy,
            "params": self.params,
            "codecs": self.codecs,
            "reasons": list(self.reasons),
            "evidence": {k: v.to_dict() for k, v in self.evidence.items()},
            "protected_regions": [list(map(int, b)) for b in self.protected_regions],
            "seconds": round(self.seconds, 4),
        }


class _Evaluator:
    """One decision's state: the subject and the classifier results computed so far."""

    def __init__(self, subject: Subject, overrides: Mapping[str, Any] | None):
        self.subject = subject
        self.results: dict[str, ClassifierResult] = {}
        self.overrides = dict(overrides or {})

    def result(self, name: str) -> ClassifierResult:
        if name not in self.results:
            o = self.overrides.get(name)
            if isinstance(o, ClassifierResult):
                self.results[name] = o
            else:
                self.results[name] = run_classifier(name, self.subject, o if callable(o) else None)
        return self.results[name]

    # -- values ----------------------------------------------------------------------------
    def value(self, fld: str) -> Any:
        s = self.subject
        head, _, attr = fld.partition(".")
        if head in NAMES and attr:
            return self.result(head).get(attr)
        if head == "exif":
            return s.exif.get(attr)
        if fld == "size":
            return s.size
        if fld == "width":
            return s.width
        if fld == "height":
            return s.height
        if fld == "megapixels":
            return (s.width * s.height / 1e6) if s.width and s.height else None
        if fld == "format":
            return s.format
        if fld == "ext":
            return s.path.suffix[1:].lower() if s.path else None
        if fld == "name":
            return s.path.name if s.path else None
        if fld == "path":
            return s.posix_path
        if fld == "tags":
            return sorted(s.tags)
        raise PolicyError(f"unknown field {fld}")  # schema validation keeps this unreachable

    # -- conditions ------------------------------------------------------------------------
    def check(self, c: Condition) -> tuple[bool, str]:
        """(matched, why) for one condition."""
        k = c.kind
        if k == "always":
            return True, "always"
        if k == "not":
            ok, why = self.check(c.items[0])
            return (not ok), (f"not ({why})")
        if k in ("all", "any"):
            whys = []
            for item in sorted(c.items, key=lambda x: x.cost):  # cheap first
                ok, why = self.check(item)
                if k == "all" and not ok:
                    return False, why
                if k == "any" and ok:
                    return True, why
                whys.append(why)
            return (k == "all"), " and ".join(whys) if k == "all" else "none of: " + "; ".join(whys)
        if k == "path":
            p = self.subject.posix_path
            for g in c.value:
                if glob_regex(g).search(p):
                    return True, f"path matches '{g}'"
            return False, f"path matches none of {c.value}"
        if k == "tag":
            hit = sorted(self.subject.tags & set(c.value))
            return (bool(hit), f"tag {', '.join(hit)}" if hit else f"no tag among {c.value}")
        # compare
        v = self.value(c.field)
        ok = _compare(v, c.op, c.value)
        if c.negate:
            ok = not ok
        return ok, self._explain(c, v, ok)

    def _explain(self, c: Condition, v: Any, ok: bool) -> str:
        head = c.field.split(".", 1)[0]
        shown = f"{v:.3g}" if isinstance(v, float) else repr(v) if isinstance(v, str) else str(v)
        text = c.text or c.field
        base = text if c.op == "truthy" and text in (c.field, f"not {c.field}") else f"{text} ({c.field} = {shown})"
        if head in NAMES and ok and self.results.get(head) is not None:
            base += f": {self.results[head].reason}"
        return base


def _compare(v: Any, op: str, ref: Any) -> bool:
    """Missing values (no EXIF tag, unreadable header) never match, except for '!='."""
    if op == "truthy":
        return bool(v)
    if v is None:
        return op == "!="
    try:
        if op == "==":
            return _eq(v, ref)
        if op == "!=":
            return not _eq(v, ref)
        if op == ">=":
            return float(v) >= float(ref)
        if op == "<=":
            return float(v) <= float(ref)
        if op == ">":
            return float(v) > float(ref)
        if op == "<":
            return float(v) < float(ref)
        if op == "in":
            return any(_eq(v, r) for r in ref)
        if op == "matches":
            return fnmatch.fnmatch(str(v).lower(), str(ref).lower())
        if op == "contains":
            if isinstance(v, (list, tuple, set, frozenset)):
                return any(_eq(x, ref) for x in v)
            return str(ref).lower() in str(v).lower()
    except (TypeError, ValueError):
        return False
    return False


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return str(a).lower() == str(b).lower()
    return a == b


def _camera_raw(subject: Subject) -> str | None:
    """The camera raw kind of the file decided on: from its image when read, else by its name."""
    img = subject.loaded
    if img is not None:
        return img.camera_raw
    return camera_raw_kind(b"", str(subject.path)) if subject.path is not None else None


class Policy:
    """An ordered list of rules; the first match wins, else the default action."""

    def __init__(self, name: str, rules: list[Rule], default: Rule, source: str = "", description: str = "", defaults=None):
        self.name = name
        self.rules = rules
        self.default = default
        self.source = source
        self.description = description
        self.defaults = defaults or {}

    @property
    def needs(self) -> set[str]:
        """Classifiers the policy's conditions can ask for."""
        out: set[str] = set()
        for r in self.rules:
            out |= r.needs
        return out

    def decide(
        self,
        path: str | Path | None,
        image: LoadedImage | None = None,
        *,
        tags=(),
        classifiers: Mapping[str, ClassifierResult | Callable] | None = None,
        run_all: bool = False,
    ) -> Decision:
        """Decide the action for one file.

        ``classifiers`` maps a classifier name to a precomputed ``ClassifierResult`` (e.g. from
        the catalog) or to a replacement callable ``f(subject) -> ClassifierResult``.
        ``run_all`` also runs the classifiers no rule needed (for reports). Raises
        ``InputError`` when the image is needed but cannot be read."""
        t0 = time.perf_counter()
        ev = _Evaluator(Subject(path, image, tags), classifiers)
        chosen, why = self.default, None
        for rule in self.rules:
            if rule.when is None:
                chosen, why = rule, "no condition (always applies)"
                break
            ok, w = ev.check(rule.when)
            if ok:
                chosen, why = rule, w
                break
        if run_all:
            for n in NAMES:
                ev.result(n)
        if chosen is self.default:
            reasons = [f"no rule matched; default action {chosen.action}" + (f" ({chosen.description})" if chosen.description else "")]
        else:
            reasons = [f"rule '{chosen.name}' -> {chosen.action}: {why}"]
        for n, r in ev.results.items():
            if r.error:
                reasons.append(r.reason)
        action, params = chosen.action, dict(chosen.params)
        generative = [c for c in _order(action, params) if _is_generative(c)]
        if generative:
            # confirmed faces and text never go through a generative codec, whatever the rule
            # asked: the detectors run even when its condition did not need them (a detector
            # that fails counts as a find: protect)
            found = [n for n in PROTECTING if ev.result(n).error or ev.result(n).found]
            if found:
                action, params = _without(action, params, generative)
                reasons.append(f"{' and '.join(found)} found: no generative codec ({', '.join(generative)}); "
                               f"{action} instead")
        raw = _camera_raw(ev.subject)
        if raw:  # whatever the rule: no codec here gives a raw file's bytes back smaller
            action, params = "keep", dict(params, original="keep")
            reasons.insert(0, f"{RAW_REASON} ({raw}): {RAW_WHY}")  # first: what ls and the logs show
        regions: list[tuple[int, int, int, int]] = []
        for n in PROTECTING:
            r = ev.results.get(n)
            if r is not None:
                regions.extend(tuple(b) for b in r.regions)
                regions.extend(tuple(b) for b in r.details.get("weak_regions", ()))
        return Decision(
            action=action,
            params=params,
            rule=chosen.name,
            reasons=reasons,
            evidence=dict(ev.results),
            protected_regions=regions,
            policy=self.name,
            path=str(path) if path is not None else None,
            seconds=time.perf_counter() - t0,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "description": self.description,
            "classifiers": sorted(self.needs),
            "rules": [
                {"name": r.name, "line": r.line, "when": r.when.describe() if r.when else "always", "action": r.action, "params": r.params}
                for r in self.rules
            ],
            "default": {"action": self.default.action, "params": self.default.params},
        }


def _order(action: str, params: dict) -> list[str]:
    return order(action, params)


def _is_generative(name: str) -> bool:
    return is_generative(name)


def _without(action: str, params: dict, drop: list[str]) -> tuple[str, dict]:
    """The decision with the codecs in ``drop`` taken out: out of ``best``'s candidates and the
    fallbacks; an action that is one of them gives way to the next codec left (``keep`` if none)."""
    params = dict(params)
    params["fallback"] = [c for c in params.get("fallback") or [] if c not in drop]
    if action == "best":
        params["among"] = [c for c in params.get("among") or [] if c not in drop]
        if params["among"]:
            return action, params
        action = "keep"
    if action in drop or action == "keep":
        rest = params["fallback"]
        action, params["fallback"] = (rest[0], rest[1:]) if rest else ("keep", [])
    return action, params


def parse_policy_text(text: str, source: str = "<policy>") -> Policy:
    d = parse_policy(text, source)
    return Policy(d["name"], d["rules"], d["default"], source, d["description"], d["defaults"])


def load_policy(path: str | Path | None = None) -> Policy:
    """Read and validate a policy file; ``None`` = the shipped ``policies/default.yaml``."""
    p = Path(path) if path is not None else DEFAULT_POLICY
    if path is not None and not p.exists() and not p.suffix and (POLICY_DIR / f"{p.name}.yaml").is_file():
        p = POLICY_DIR / f"{p.name}.yaml"  # a shipped policy by name: "evidence"
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(f"{p}: policy file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(f"{p}: cannot read policy ({e})") from None
    return parse_policy_text(text, str(p))
