"""Policy files: parsing, error messages with line numbers, rule order, each condition type,
laziness of classifiers and JSON-serialisable decisions. Classifiers are faked here (see
test_classifiers.py for the real ones), so these tests are fast."""

from __future__ import annotations

import json
import textwrap

import pytest
from PIL import Image

from archiver.errors import PolicyError
from archiver.policy import ClassifierResult, Decision, load_policy, parse_policy_text
from archiver.policy.engine import DEFAULT_POLICY, POLICY_DIR
from archiver.policy.schema import glob_regex


def P(text: str, source="test.yaml"):
    return parse_policy_text(textwrap.dedent(text), source)


def fake(**results):
    """classifiers= overrides: name -> ClassifierResult, everything else fails loudly."""
    out = {}
    for name, kw in results.items():
        kw = dict(kw)
        out[name] = ClassifierResult(name=name, score=kw.pop("score", 0.0), found=kw.pop("found", False),
                                     regions=kw.pop("regions", []), reason=kw.pop("reason", f"fake {name}"), details=kw)
    for name in ("faces", "text", "texture", "evidence"):
        out.setdefault(name, _boom(name))
    return out


def _boom(name):
    def f(subject):
        raise AssertionError(f"classifier {name} should not have run")

    return f


def err_lines(e: PolicyError) -> list[int]:
    return [p["line"] for p in e.problems]


# -- shipped policies -----------------------------------------------------------------------
def test_shipped_policies_load():
    d = load_policy()
    assert d.name == "default" and d.source == str(DEFAULT_POLICY)
    assert d.needs == {"evidence", "faces", "text", "texture"}
    assert d.default.action == "lossless"
    ev = load_policy(POLICY_DIR / "evidence.yaml")
    assert "diffusion" not in {r.action for r in ev.rules} | {ev.default.action}
    assert load_policy("evidence").name == "evidence"  # shipped policy by name


def test_default_policy_evidence_path_fires_without_detectors(tmp_path):
    # a path rule decides before any pixel is read: the file does not even need to exist
    d = load_policy().decide("/archive/evidence/case-7/img.jpg", classifiers=fake())
    assert d.action == "keep" and d.rule == "evidence" and d.params["original"] == "keep"
    assert d.evidence == {}
    d = load_policy().decide(tmp_path / "x.png", tags=["Legal-Hold"], classifiers=fake())
    assert d.action == "keep" and "legal-hold" in d.reasons[0]


def test_default_policy_routes(tmp_path):
    f = tmp_path / "photo.png"
    Image.new("RGB", (640, 480)).save(f)
    pol = load_policy()
    base = dict(evidence={}, texture=dict(score=0.8, graphics=False))
    d = pol.decide(f, classifiers=fake(**base, faces=dict(found=True, score=0.9, regions=[(1, 2, 30, 40)]), text={}))
    assert (d.action, d.rule, d.params["among"], d.params["target"]) == ("best", "faces", ["avif", "jxl"], 90.0)
    assert d.protected_regions == [(1, 2, 30, 40)] and d.protected
    d = pol.decide(f, classifiers=fake(**base, faces={}, text=dict(found=True, score=1.0)))
    assert (d.action, d.rule, d.params["target"]) == ("best", "text", 90.0) and d.protected
    d = pol.decide(f, classifiers=fake(**base, faces=dict(weak_regions=[(5, 5, 9, 9)]), text={}))
    assert (d.action, d.rule) == ("best", "texture-photos")
    assert d.params["among"] == ["diffusion", "avif", "jxl"] and d.params["target"] == 70.0
    assert d.params["jpeg_margin"] == 0.3 and d.params["fallback"] == ["lossless"]
    assert d.protected_regions == [(5, 5, 9, 9)]  # weak candidates still get the region check
    # graphics and low texture are decided by the cheap classifier alone
    d = pol.decide(f, classifiers=fake(evidence={}, texture=dict(score=0.0, graphics=True)))
    assert (d.action, d.rule) == ("lossless", "graphics")
    d = pol.decide(f, classifiers=fake(evidence={}, texture=dict(score=0.2, graphics=False), faces={}, text={}))
    assert (d.action, d.rule, d.params["among"]) == ("best", "photos", ["avif", "jxl"])


def test_decision_is_json_serialisable(tmp_path):
    f = tmp_path / "a.png"
    Image.new("RGB", (400, 300)).save(f)
    d = load_policy().decide(f, classifiers=fake(evidence={}, texture=dict(score=0.9), faces=dict(found=True, score=0.7, regions=[(0, 0, 10, 10)])))
    assert isinstance(d, Decision)
    j = json.loads(json.dumps(d.to_dict()))
    assert j["action"] == "best" and j["rule"] == "faces" and "diffusion" not in j["codecs"]
    assert j["evidence"]["faces"]["regions"] == [[0, 0, 10, 10]]
    assert j["params"]["original"] == "vault"


# -- rule order and conditions --------------------------------------------------------------
def test_first_matching_rule_wins_and_default(tmp_path):
    pol = P("""
        rules:
          - {name: big, when: "size > 100", action: keep}
          - {name: all, action: lossless}
        """)
    small, big = tmp_path / "s.bin", tmp_path / "b.bin"
    small.write_bytes(b"x" * 10)
    big.write_bytes(b"x" * 1000)
    assert pol.decide(big).rule == "big"
    assert pol.decide(small).rule == "all"
    pol2 = P("""
        rules:
          - {name: never, when: "size > 10GB", action: keep}
        default: {action: keep}
        """)
    d = pol2.decide(small)
    assert d.rule == "default" and d.action == "keep" and "no rule matched" in d.reasons[0]


def test_default_default_is_lossless(tmp_path):
    pol = P("rules: []\n")
    d = pol.decide(tmp_path / "x.png")
    assert d.action == "lossless" and d.rule == "default"


@pytest.mark.parametrize(
    "cond, expect",
    [
        ("faces.score >= 0.5", True),
        ("faces.score > 0.7", False),
        ("faces.found", True),
        ("not faces.found", False),
        ("faces", True),
        ("text.found", False),
        ("text.count == 0", True),
        ("texture.score < 0.3", True),
        ("graphics", True),
        ("not graphics", False),
        ("format == png", True),
        ("format in [jpeg, tiff]", False),
        ("ext != jpg", True),
        ("name matches 'IMG_*.png'", True),
        ("width >= 200", True),
        ("height < 100", False),
        ("megapixels > 0.05", True),
        ("size < 1MB", True),
        ("size > 1 KiB", False),
        ("exif.Model == 'Body Cam X'", True),
        ("exif.Software matches '*forensic*'", True),
        ("exif.Artist == anyone", False),  # missing tag never matches
        ("tags contains legal-hold", True),
        ("path matches '*/photos/*'", True),
    ],
)
def test_condition_types(tmp_path, cond, expect):
    d = tmp_path / "photos"
    d.mkdir()
    f = d / "IMG_1.png"
    ex = Image.Exif()
    ex[0x0110] = "Body Cam X"  # Model
    ex[0x0131] = "Forensic Imager 2"  # Software
    Image.new("RGB", (320, 240), (10, 20, 30)).save(f, exif=ex)
    pol = P(f"""
        rules:
          - name: r
            when: "{cond}"
            action: keep
        """.replace('"' + cond + '"', repr(cond) if '"' in cond else '"' + cond + '"'))
    res = fake(faces=dict(found=True, score=0.6), text=dict(found=False, count=0),
               texture=dict(score=0.2, graphics=True), evidence={})
    got = pol.decide(f, tags=["legal-hold"], classifiers=res)
    assert (got.rule == "r") is expect, got.reasons


def test_structured_conditions(tmp_path):
    pol = P("""
        rules:
          - name: combo
            when:
              all:
                - path: ["**/evidence/**", "*.raw"]
                - not: {tag: public}
                - any: [faces.found, {exif: {Make: "Axon*"}}]
            action: keep
          - name: listed
            when: ["format == png", "width > 10"]
            action: lossless
        default: {action: diffusion, allow_generative: true, bpp: 0.2, floor: {min_psnr: 20, min_ms_ssim: 0.8, min_region_psnr: 30}}
        """)
    (tmp_path / "evidence").mkdir()
    f = tmp_path / "evidence" / "a.png"
    Image.new("RGB", (50, 50)).save(f)
    assert pol.decide(f, classifiers=fake(faces=dict(found=True))).rule == "combo"
    assert pol.decide(f, tags=["PUBLIC"], classifiers=fake(faces=dict(found=True))).rule == "listed"
    assert pol.decide(f, classifiers=fake(faces=dict(found=False))).rule == "listed"
    g = tmp_path / "b.jpg"
    Image.new("RGB", (50, 50)).save(g)
    d = pol.decide(g, classifiers=fake(faces={}, text={}))
    assert d.rule == "default" and d.action == "diffusion" and d.params["bpp"] == 0.2


def test_classifiers_are_lazy_and_cheap_first(tmp_path):
    calls = []

    def rec(name, **kw):
        def f(subject):
            calls.append(name)
            return ClassifierResult(name=name, score=kw.get("score", 0.0), found=kw.get("found", False), details=kw)

        return f

    pol = P("""
        rules:
          - name: r1
            when:
              all: [faces.found, "texture.score > 0.5", "size > 1"]
            action: keep
          - name: r2
            when: {any: ["text.found", "size > 1"]}
            action: lossless
        """)
    f = tmp_path / "a.png"
    Image.new("RGB", (10, 10)).save(f)
    d = pol.decide(f, classifiers={"faces": rec("faces", found=True), "texture": rec("texture", score=0.1), "text": rec("text")})
    # r1: size (free) first, then texture (cheap) fails -> faces never runs; r2: size matches first
    assert calls == ["texture"]
    assert d.rule == "r2"
    assert set(d.evidence) == {"texture"}


def test_failing_classifier_protects(tmp_path):
    def broken(subject):
        raise RuntimeError("model exploded")

    pol = load_policy()
    f = tmp_path / "a.png"
    Image.new("RGB", (400, 300)).save(f)
    d = pol.decide(f, classifiers={**fake(evidence={}, texture=dict(score=0.9), text={}), "faces": broken})
    assert d.rule == "faces" and d.protected and d.params["target"] == 90.0  # as if a face were there
    assert any("failed" in r for r in d.reasons)
    assert d.evidence["faces"].error.startswith("RuntimeError")


def test_glob_semantics():
    assert glob_regex("**/evidence/**").search("/a/b/Evidence/c/d.jpg")
    assert glob_regex("*.jpg").search("/x/y/z.JPG")
    assert not glob_regex("*.jpg").search("/x/y.jpg/z.png")
    assert glob_regex("/abs/*.png").search("/abs/a.png")
    assert not glob_regex("/abs/*.png").search("/abs/sub/a.png")
    assert glob_regex("cases/**").search("/data/cases/2024/a.png")
    assert glob_regex("img_??.[pj]ng").search("/d/IMG_01.png")


# -- errors ---------------------------------------------------------------------------------
def test_errors_carry_file_and_line():
    bad = """\
name: bad
rules:
  - name: a
    when: faces.scor >= 0.5
    action: diffuse
  - name: b
    when:
      any:
        - path: 3
        - text.area > big
    action: diffusion
    bpp: -1
    floor: {min_psnr: 30, min_ssim: 0.9}
  - name: a
    action: keep
    original: replace
  - name: c
    action: lossless
    bpp: 0.3
    colour: red
"""
    with pytest.raises(PolicyError) as ei:
        parse_policy_text(bad, "bad.yaml")
    e = ei.value
    msg = str(e)
    assert e.exit_code == 6
    assert "bad.yaml:4: unknown field 'faces.scor'" in msg and "did you mean 'score'" in msg
    assert "bad.yaml:5:" in msg and "'diffuse'" in msg and "did you mean 'diffusion'" in msg
    assert "bad.yaml:9: 'path' needs a string or a list" in msg
    assert "bad.yaml:10: '>' needs a number" in msg
    assert "bad.yaml:12:" in msg and "'bpp'" in msg
    assert "bad.yaml:13:" in msg and "min_ssim" in msg and "min_ms_ssim" in msg
    assert "bad.yaml:14:" in msg and "duplicate rule name (first at line 3)" in msg
    assert "bad.yaml:16:" in msg and "'original' must be keep" in msg
    assert "bad.yaml:19:" in msg and "'bpp' is the diffusion codec's rate" in msg
    assert "bad.yaml:20:" in msg and "unknown key 'colour'" in msg
    assert err_lines(e) == sorted(err_lines(e))


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("rules:\n  - name: x\n    when: [a\n", 4, "invalid YAML"),
        ("rules:\n  - name: x\n    name: y\n    action: keep\n", 3, "duplicate key 'name'"),
        ("- a\n- b\n", 1, "a policy is a mapping"),
        ("name: x\n", 1, "missing 'rules'"),
        ("rulez: []\n", 1, "did you mean 'rules'"),
        ("version: 2\nrules: []\n", 1, "unsupported policy version"),
        ("rules:\n  - name: x\n    action: diffusion\n    allow_generative: true\n", 3, "needs a 'target'"),
        ("rules:\n  - name: x\n    action: diffusion\n    target: good\n", 3, "only with 'allow_generative: true'"),
        ("rules:\n  - name: x\n    action: avif\n    target: superb\n", 4, "unknown target 'superb'"),
        ("rules:\n  - name: x\n    action: avif\n    target: 120\n", 4, "SSIMULACRA2 score in (0, 100]"),
        ("rules:\n  - name: x\n    action: avif\n    target: good\n    jpeg_margin: 2\n", 5, "'jpeg_margin' is a fraction"),
        ("rules:\n  - name: x\n    action: lossless\n    target: good\n", 4, "'target' only applies to lossy codecs"),
        ("rules:\n  - name: x\n    action: avif\n    target: good\n    allow_generative: yes please\n", 5,
         "'allow_generative' is true or false"),
        ("rules:\n  - name: x\n    when: {maybe: 1}\n    action: keep\n", 3, "unknown condition 'maybe'"),
        ("rules:\n  - name: x\n    when: 'size ~ 3'\n    action: keep\n", 3, "cannot read condition"),
        ("rules:\n  - name: x\n    when: 'not size > 3'\n    action: keep\n", 3, "write 'size <= 3'"),
        ("rules:\n  - name: x\n    action: keep\n    retention_days: -1\n", 4, "retention_days"),
        ("rules:\n  - name: x\n    action: lossless\n    original: shred\n", 4, "'original' must be one of"),
        ("rules:\n  - name: x\n    when: format in png\n    action: keep\n", 3, "'in' needs a list"),
        ("rules:\n  - action: keep\n", 2, "missing 'name'"),
        ("rules: []\ndefault: zap\n", 2, "'default' must be one of"),
        ("defaults: {bpp: 0.1}\nrules:\n  - name: x\n    action: lossless\n    fallback: [avfi]\n", 5, "did you mean 'avif'"),
        ("rules:\n  - name: x\n    action: avif\n    floor: {min_psnr: 30}\n    fallback: [lossless, keep]\n", 5,
         "'keep' is what happens when every codec fails"),
        ("rules:\n  - name: x\n    action: best\n    floor: {min_psnr: 30}\n", 3, "'best' needs 'among'"),
        ("rules:\n  - name: x\n    action: avif\n    among: [jxl]\n    floor: {min_psnr: 30}\n", 4, "'among' lists the candidates"),
        ("rules:\n  - name: x\n    action: keep\n    fallback: [lossless]\n", 4, "has no fallback"),
        ("rules:\n  - name: x\n    action: jxl\n    floor: {min_psnr: 30}\n    budget: lots\n", 5, "'budget' is a size"),
        ("rules:\n  - name: x\n    action: lossless\n    budget: 4 KB\n", 4, "only applies to lossy codecs"),
        ("rules:\n  - name: x\n    action: avif\n", 3, "needs a quality 'target'"),
        ("rules:\n  - name: x\n    action: best\n    among: [avif, diffusion]\n    allow_generative: true\n"
         "    floor: {min_psnr: 1}\n", 3, "needs a 'target'"),
    ],
)
def test_error_messages(text, line, fragment):
    with pytest.raises(PolicyError) as ei:
        parse_policy_text(text, "p.yaml")
    assert f"p.yaml:{line}:" in str(ei.value), str(ei.value)
    assert fragment in str(ei.value)


def test_missing_policy_file(tmp_path):
    with pytest.raises(PolicyError, match="policy file not found"):
        load_policy(tmp_path / "nope.yaml")


def test_fallbacks_best_and_budgets_resolve_into_the_decision_params():
    pol = parse_policy_text("""\
defaults:
  bpp: 0.15
  floor: {min_psnr: 24, min_ms_ssim: 0.85, min_region_psnr: 32}
rules:
  - name: photos
    when: size > 1000
    action: diffusion
    allow_generative: true
    fallback: [avif, lossless]
  - name: shots
    when: size > 10
    action: best
    among: [avif, jxl]
    budget: 0.5 bpp
  - name: plain-lossy
    when: size > 5
    action: jxl
  - name: docs
    when: size > 1
    action: lossless
default: keep
""", "p.yaml")
    by = {r.name: r for r in pol.rules}
    assert by["photos"].params["fallback"] == ["avif", "lossless"] and by["photos"].params["bpp"] == 0.15
    assert by["shots"].params["among"] == ["avif", "jxl"] and by["shots"].params["budget"] == {"bpp": 0.5}
    assert by["shots"].params["fallback"] == ["lossless"] and "bpp" not in by["shots"].params
    assert by["shots"].params["floor"]["min_region_psnr"] == 32
    assert by["plain-lossy"].params["fallback"] == ["lossless"], "a lossy action falls back to lossless unless told"
    assert by["docs"].params["fallback"] == [] and "floor" not in by["docs"].params
    assert pol.default.action == "keep"


# -- issue 23: targets and the generative guard ---------------------------------------------------
GEN_POLICY = """\
defaults: {target: good}
rules:
  - name: anything
    action: best
    among: [diffusion, avif, jxl]
    allow_generative: true
  - name: never
    when: size < 0
    action: diffusion
    allow_generative: true
    fallback: [avif, lossless]
"""


@pytest.mark.parametrize("found", ["faces", "text"])
def test_confirmed_faces_or_text_never_reach_a_generative_codec(tmp_path, found):
    """Even a rule that allows generative codecs (and did not ask for the detectors) loses them
    when a face or text is confirmed: the detectors run, and the codec is taken out."""
    f = tmp_path / "a.png"
    Image.new("RGB", (400, 300)).save(f)
    pol = parse_policy_text(GEN_POLICY, "g.yaml")
    hit = {found: dict(found=True, score=0.9, regions=[(0, 0, 20, 20)])}
    other = {"faces": {}, "text": {}}
    other.update(hit)
    d = pol.decide(f, classifiers=fake(evidence={}, texture={}, **other))
    assert d.action == "best" and d.params["among"] == ["avif", "jxl"] and "diffusion" not in d.codecs
    assert any(f"{found} found: no generative codec" in r for r in d.reasons)
    d = pol.decide(f, classifiers=fake(evidence={}, texture={}, faces={}, text={}))
    assert d.params["among"] == ["diffusion", "avif", "jxl"]  # nothing confirmed: it competes


def test_a_generative_action_gives_way_to_its_fallback(tmp_path):
    from archiver.policy.engine import _without

    assert _without("diffusion", {"fallback": ["avif", "lossless"]}, ["diffusion"]) == ("avif", {"fallback": ["lossless"]})
    assert _without("diffusion", {"fallback": []}, ["diffusion"]) == ("keep", {"fallback": []})
    assert _without("best", {"among": ["diffusion"], "fallback": ["lossless"]}, ["diffusion"]) == \
        ("lossless", {"among": [], "fallback": []})


def test_named_targets_and_numbers():
    pol = parse_policy_text("""\
rules:
  - {name: a, when: "size > 3", action: avif, target: visually-lossless}
  - {name: b, when: "size > 2", action: jxl, target: 62.5}
  - {name: c, when: "size > 1", action: avif, target: medium, jpeg_margin: 0.1}
default: {action: avif, target: high}
""", "t.yaml")
    by = {r.name: r.params for r in pol.rules}
    assert (by["a"]["target"], by["b"]["target"], by["c"]["target"], pol.default.params["target"]) == (90, 62.5, 50, 80)
    assert by["c"]["jpeg_margin"] == 0.1 and "jpeg_margin" not in by["a"]
