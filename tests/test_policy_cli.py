"""``archiver classify`` and ``archiver policy check|show`` through click's CliRunner."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from archiver.app.main import main


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_policy_check_ok_and_json(tmp_path):
    r = run("policy", "check", "policies/default.yaml")
    assert r.exit_code == 0 and "OK" in r.output and "7 rules" in r.output
    r = run("policy", "check", "policies/evidence.yaml", "--json")
    d = json.loads(r.output)
    assert d["ok"] is True and d["policy"]["name"] == "evidence"
    assert [x["action"] for x in d["policy"]["rules"]] == ["keep", "keep", "keep"]


def test_policy_check_bad_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("rules:\n  - name: a\n    when: faces.scoer > 1\n    action: keep\n")
    r = run("policy", "check", str(p), "--json")
    assert r.exit_code == 6
    d = json.loads(r.output)
    assert d["ok"] is False and d["problems"][0]["line"] == 3 and "faces.scoer" in d["problems"][0]["message"]
    r = run("policy", "check", str(p))
    assert r.exit_code == 6
    assert f"{p}:3: unknown field 'faces.scoer'" in r.output  # one clear line, no traceback
    assert "Traceback" not in r.output


def test_policy_show():
    r = run("policy", "show")
    assert r.exit_code == 0 and "texture-photos" in r.output and "otherwise -> lossless" in r.output


def test_classify_directory_json_with_bad_file(tmp_path):
    ev = tmp_path / "evidence"
    ev.mkdir()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(ev / "a.png")
    sub = tmp_path / "photos" / "deep"
    sub.mkdir(parents=True)
    Image.new("RGB", (100, 100), (0, 0, 255)).save(sub / "flat.png")  # flat graphic
    (sub / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (sub / "notes.txt").write_text("ignored: not an image extension")
    r = run("classify", str(tmp_path), "--json")
    assert r.exit_code == 3  # a bad file makes the run fail, but the others are classified
    d = json.loads(r.output)
    by = {x["path"].split("/")[-1]: x for x in d["results"]}
    assert set(by) == {"a.png", "flat.png"}
    assert by["a.png"]["action"] == "keep" and by["a.png"]["rule"] == "evidence"
    assert by["flat.png"]["action"] == "lossless"
    assert d["errors"][0]["path"].endswith("broken.jpg") and d["errors"][0]["kind"] == "InputError"
    assert d["summary"]["files"] == 3 and d["summary"]["errors"] == 1


def test_classify_human_output_and_policy_option(tmp_path):
    f = tmp_path / "x.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(f)
    r = run("classify", str(f), "--policy", "evidence", "--tag", "legal-hold")
    assert r.exit_code == 0, r.output
    assert f"{f}: KEEP (rule legal-hold)" in r.output
    assert "why: rule 'legal-hold' -> keep: tag legal-hold" in r.output
    assert "1 classified with policy 'evidence': keep 1" in r.output


def test_classify_missing_and_bad_policy(tmp_path):
    r = run("classify", str(tmp_path / "none.png"))
    assert r.exit_code == 3 and "no such file" in r.output
    bad = tmp_path / "p.yaml"
    bad.write_text("rules: 3\n")
    r = run("classify", str(tmp_path), "--policy", str(bad))
    assert r.exit_code == 6 and "p.yaml:1: 'rules' must be a list" in r.output
