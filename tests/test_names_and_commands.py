"""The names people see and the commands they type (issue 26): archived files' names accepted by
show/ls/restore, decode of every codec's files, marks and metadata on reconstructions, which
catalog was asked, verify's log without a terminal, readable show, the demo, stats in words."""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from PIL import Image, PngImagePlugin

from archiver.app.main import main
from archiver.app.output import progress
from archiver.errors import ContainerError, NoCatalogError, NotInCatalogError, UnknownArtifactError, UsageError
from archiver.testing.catalog import TEST_POLICY, photo_bytes, write_jpeg
from archiver.work.restore import is_marked

ROOT = Path(__file__).resolve().parent.parent


def _policy() -> str:
    p = yaml.safe_load(TEST_POLICY)
    p["rules"] = [{"name": "av", "when": {"path": ["**/av/**"]}, "action": "avif"},
                  {"name": "jx", "when": {"path": ["**/jx/**"]}, "action": "jxl"}] + p["rules"]
    return yaml.safe_dump(p, sort_keys=False)


def _png_with_chunks(path: Path, seed: int) -> Path:
    """A photo-like PNG with text (tEXt, iTXt, zTXt) and gamma chunks, as cameras and editors write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.open(io.BytesIO(photo_bytes(seed, size=(96, 80))))
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Ada Lovelace")
    info.add_itxt("Description", "harbour at dawn \u2713")
    info.add_text("Notes", "n" * 300, zip=True)
    info.add(b"gAMA", (45455).to_bytes(4, "big"))
    im.save(path, "PNG", pnginfo=info)
    return path


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    """A small collection archived through the real codecs (AVIF, lossy JPEG XL, the tiny
    diffusion model, lossless, lossless with a vaulted original), with a config for the CLI."""
    from archiver.codecs import CodecSettings
    from archiver.codecs.diffusion import DiffusionCodec
    from archiver.policy.engine import parse_policy_text
    from archiver.testing.catalog import make_context
    from archiver.work import archive_file

    t = tmp_path_factory.mktemp("names")
    photos = t / "photos"
    files = {"av": _png_with_chunks(photos / "av" / "harbour.png", 1),
             "jx": _png_with_chunks(photos / "jx" / "dawn.png", 2),
             "tex": _png_with_chunks(photos / "tex" / "moss.png", 3),
             "vault": write_jpeg(photos / "vault" / "beach.jpg", seed=4),
             "plain": write_jpeg(photos / "plain" / "chart.jpg", seed=5)}
    ctx = make_context(t, codec=DiffusionCodec(CodecSettings(decode_steps=1)))
    ctx.policy = parse_policy_text(_policy(), "names")
    ctx.root = str(photos)
    out = {}
    for name, p in files.items():
        o = archive_file(p, ctx)
        assert o.state == "committed", (name, o)
        out[name] = o
    ctx.catalog.close()
    (t / "p.yaml").write_text(_policy())
    cfg = t / "cfg.yaml"
    cfg.write_text(f"catalog_url: sqlite:///{t / 'catalog.sqlite'}\nvault_dir: {t / 'vault'}\npolicy: {t / 'p.yaml'}\n")
    arts = {n: Path(next(iter((photos / n).glob(f"{files[n].name}.*")))) for n in files}
    return {"t": t, "photos": photos, "cfg": cfg, "files": files, "arts": arts}


def cli(coll, *args, home=None):
    env = {"ARCHIVER_CONFIG": str(coll["cfg"]), "ARCHIVER_HOME": str(home or coll["t"] / "home")}
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


# -- 1. the names seen on disk -------------------------------------------------------------------
def test_the_artifacts_are_named_as_people_see_them(coll):
    arts = coll["arts"]
    assert arts["av"].suffix == ".avif" and arts["jx"].suffix == ".jxl" and arts["tex"].suffix == ".dlc"


def test_show_answers_to_the_archived_files_name(coll):
    r = cli(coll, "show", coll["arts"]["av"], "--json")
    assert r.exit_code == 0, r.output
    (v,) = json.loads(r.stdout)["versions"]
    assert v["path"] == str(coll["files"]["av"]) and v["compressed_path"] == str(coll["arts"]["av"])


def test_ls_answers_to_the_archived_files_names_and_globs(coll):
    d = json.loads(cli(coll, "ls", "*.avif", "--json").stdout)
    assert [e["path"] for e in d["entries"]] == [str(coll["files"]["av"])]
    d = json.loads(cli(coll, "ls", coll["arts"]["tex"], "--json").stdout)
    assert [e["path"] for e in d["entries"]] == [str(coll["files"]["tex"])]


def test_restore_answers_to_the_archived_files_names_and_globs(coll, tmp_path):
    r = cli(coll, "restore", coll["arts"]["jx"], "--to", tmp_path / "one", "--json")
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout)["results"]
    assert res["path"] == str(coll["files"]["jx"]) and res["status"] == "restored"
    r = cli(coll, "restore", str(coll["photos"] / "**" / "*.dlc"), "--to", tmp_path / "two", "--json")
    assert r.exit_code == 0, r.output
    assert [x["path"] for x in json.loads(r.stdout)["results"]] == [str(coll["files"]["tex"])]


# -- 2. decode of every codec's files; unknown types apart from damage ----------------------------
@pytest.mark.parametrize("name", ["av", "jx", "tex"])
def test_decode_reads_every_lossy_codecs_files_and_marks_them(coll, tmp_path, name):
    out = tmp_path / "out.png"
    r = cli(coll, "decode", coll["arts"][name], out, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["exact"] == "approx" and d["marked"] is True
    data = out.read_bytes()
    assert is_marked(data)
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (96, 80) and im.format == "PNG"


def test_decode_of_a_file_no_codec_wrote_has_its_own_message_and_code(coll, tmp_path):
    webp = tmp_path / "holiday.webp"
    Image.new("RGB", (8, 8), "red").save(webp, "WEBP")
    r = cli(coll, "decode", webp, tmp_path / "o.png")
    assert r.exit_code == UnknownArtifactError.exit_code != ContainerError.exit_code
    assert "not a file archiver wrote (a WEBP image)" in r.output and "bad magic" not in r.output
    assert not (tmp_path / "o.png").exists()


def test_decode_of_a_damaged_avif_is_damage(coll, tmp_path):
    cut = tmp_path / "cut.avif"
    cut.write_bytes(coll["arts"]["av"].read_bytes()[:200])
    r = cli(coll, "decode", cut, tmp_path / "o.png")
    assert r.exit_code == ContainerError.exit_code and "damaged avif file" in r.output, r.output


# -- 3. the original's metadata and the mark --------------------------------------------------------
def _text_and_gamma(data: bytes) -> tuple[dict, float | None]:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return dict(im.text), im.info.get("gamma")


@pytest.mark.parametrize("name", ["av", "tex"])
def test_decode_keeps_the_pngs_text_chunks_the_catalog_knows(coll, tmp_path, name):
    out = tmp_path / "out.png"
    r = cli(coll, "decode", coll["arts"][name], out, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["metadata"]["png_chunks"] == 4
    text, gamma = _text_and_gamma(out.read_bytes())
    assert text["Author"] == "Ada Lovelace" and text["Description"] == "harbour at dawn \u2713"
    assert text["Notes"] == "n" * 300 and gamma == pytest.approx(0.45455)
    assert "catalog id" in text["Comment"]  # the mark names the catalog row it came from


def test_a_lossy_restore_keeps_the_pngs_text_chunks(coll, tmp_path):
    r = cli(coll, "restore", coll["files"]["jx"], "--to", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout)["results"]
    assert res["exact"] == "approx"
    data = Path(res["dest"]).read_bytes()
    text, gamma = _text_and_gamma(data)
    assert is_marked(data) and text["Author"] == "Ada Lovelace" and text["Notes"] == "n" * 300
    assert gamma == pytest.approx(0.45455)


# -- 4. which catalog was asked --------------------------------------------------------------------
def test_a_missing_catalog_is_named_and_never_created(tmp_path, monkeypatch):
    monkeypatch.delenv("ARCHIVER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "new-terminal"
    env = {"ARCHIVER_HOME": str(home), "ARCHIVER_CONFIG": None, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    for args in (["ls"], ["show", "x.jpg"], ["restore", "x.jpg"], ["stats"]):
        r = CliRunner().invoke(main, args, env=env)
        assert r.exit_code == NoCatalogError.exit_code, (args, r.output)
        assert f"no catalog at {home}" in r.output and "set ARCHIVER_HOME or --config" in r.output, r.output
    assert not list(home.rglob("*.sqlite"))


def test_an_empty_catalog_is_named_as_empty(tmp_path):
    from archiver.catalog.db import open_catalog

    open_catalog(f"sqlite:///{tmp_path / 'cat.sqlite'}", create=True).close()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"catalog_url: sqlite:///{tmp_path / 'cat.sqlite'}\n")
    env = {"ARCHIVER_CONFIG": str(cfg), "ARCHIVER_HOME": str(tmp_path / "home")}
    r = CliRunner().invoke(main, ["ls"], env=env)
    assert r.exit_code == 0 and f"0 entries in catalog {tmp_path / 'cat.sqlite'} (empty" in r.output, r.output
    for args in (["show", "x.jpg"], ["restore", "x.jpg"]):
        r = CliRunner().invoke(main, args, env=env)
        assert r.exit_code == NotInCatalogError.exit_code, r.output
        assert f"catalog {tmp_path / 'cat.sqlite'} is empty" in r.output, r.output


def test_a_path_the_catalog_lacks_names_the_catalog_and_its_size(coll):
    r = cli(coll, "show", "nowhere.jpg")
    assert r.exit_code == NotInCatalogError.exit_code
    assert f"catalog {coll['t'] / 'catalog.sqlite'}, 5 file(s)" in r.output


# -- 5. progress without a terminal ------------------------------------------------------------------
class FakeClock:
    def __init__(self, step: float):
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_progress_without_a_terminal_prints_summaries_not_a_line_per_file():
    out = io.StringIO()
    problems = []
    items = list(range(100_000))
    # ~3 h of work read from a fake clock: one line per 5% or per minute, never one per file
    for i in progress(items, desc="verify", stream=out, clock=FakeClock(0.05), every_seconds=600,
                      status=lambda: f"{len(problems)} problems"):
        if i == 70_000:
            problems.append(i)
    lines = out.getvalue().splitlines()
    assert 20 <= len(lines) <= 20 + 3 * 6 + 1, len(lines)
    assert lines[0].startswith("verify: 5,000/100,000 (5%), 0 problems")
    assert lines[-1].startswith("verify: 100,000/100,000 (100%), 1 problems")


def test_verify_logs_summaries_and_each_problem_on_its_own_line(coll, tmp_path):
    art = coll["arts"]["plain"]
    art.rename(tmp_path / "away")
    try:
        r = cli(coll, "verify", "--no-decode")
    finally:
        (tmp_path / "away").rename(art)
    assert r.exit_code == 8
    err, out = r.stderr.splitlines(), r.stdout.splitlines()
    mismatch = [x for x in out if re.fullmatch(r"MISMATCH .*chart\.jpg \(id \d+\): compressed file missing: .*", x)]
    assert len(mismatch) == 1, out  # once, as found, not again in the final report
    assert not [x for x in err if x.startswith("MISMATCH")], err
    summaries = [x for x in err if x.startswith("verify: ")]
    assert summaries and summaries[-1].startswith("verify: 5/5 (100%), 1 problem"), err


def test_restore_of_many_files_shows_progress_without_a_terminal(coll, tmp_path):
    r = cli(coll, "restore", str(coll["photos"] / "**" / "*.jpg"), "--to", tmp_path)
    assert r.exit_code == 0, r.output
    assert "restore: 2/2 (100%)" in r.stderr


# -- 6. show in words ----------------------------------------------------------------------------
def test_show_prints_events_as_sentences_and_times_to_the_second(coll):
    r = cli(coll, "show", coll["files"]["vault"])
    assert r.exit_code == 0, r.output
    assert not re.search(r"[{}]|': |None", r.stdout), r.stdout  # no Python dicts, no None
    assert re.search(r"vault until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", r.stdout, re.MULTILINE), r.stdout
    assert re.search(r"^  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC  committed \(verified -> committed\): disposition vault",
                     r.stdout, re.MULTILINE), r.stdout


# -- 7. the demo -------------------------------------------------------------------------------------
def test_the_readme_demo_decodes_one_file_and_its_folder_is_ignored():
    readme = (ROOT / "README.md").read_text()
    main_job = next(line for line in readme.splitlines() if "archiver migrate demo/photos" in line)
    assert "--from-artifact" in main_job or "archiver decode" in main_job
    r = subprocess.run(["git", "check-ignore", "-q", "demo/state/catalog.sqlite"], cwd=ROOT)
    assert r.returncode == 0, "demo/ is not git-ignored"


def test_restore_from_artifact_decodes_although_the_vault_holds_the_original(coll, tmp_path):
    r = cli(coll, "restore", coll["files"]["vault"], "--to", tmp_path / "a", "--json")
    assert json.loads(r.stdout)["results"][0]["source"] == "vault"
    r = cli(coll, "restore", coll["files"]["vault"], "--from-artifact", "--to", tmp_path / "b", "--json")
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout)["results"]
    assert res["source"] == "lossless" and Path(res["dest"]).read_bytes() == (tmp_path / "a" / "vault" / "beach.jpg").read_bytes()
    r = cli(coll, "restore", coll["files"]["vault"], "--from-artifact")  # never in place
    assert r.exit_code == UsageError.exit_code and "--to" in r.output


# -- 8. stats in words ---------------------------------------------------------------------------
def test_stats_says_until_when_the_vault_keeps_originals_and_the_disk_after(coll):
    cache = coll["t"] / "home" / "web-cache" / "ab"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "k.png").write_bytes(b"x" * 40_000)  # the dashboard's pictures count too
    d = json.loads(cli(coll, "stats", "--json").stdout)
    later, now = d["after_vault"], d["now"]
    assert now["web_cache"] >= 40_000 and now["vault"] > 0
    assert d["bytes_now"] == now["outputs"] + now["vault"] + now["catalog"] + now["web_cache"]
    assert later["files"] == 1 and re.fullmatch(r"\d{4}-\d\d-\d\d", later["until"])
    (v,) = json.loads(cli(coll, "show", coll["files"]["vault"], "--json").stdout)["versions"]
    assert later["bytes"] == d["bytes_now"] - v["size"]  # the vaulted original leaves; the cache stays
    human = cli(coll, "stats").stdout
    assert f"the vault keeps 1 original(s) until {later['until']}" in human
    assert "from then on" in human and "web cache (the dashboard's pictures)" in human
    assert not re.search(r"\(\+\d", human)  # no bare "+36.6%" beside "saved"
