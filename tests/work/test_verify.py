"""verify finds every damaged or missing copy (non-zero exit), stats adds up, vault expiry."""

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from archiver.work import archive_file
from archiver.catalog import queries as q
from archiver.testing.catalog import make_context, make_policy, write_jpeg, write_png
from archiver.work.verify import expire_vault, stats, verify


def _archive_some(tmp_path, ctx):
    files = {
        "plain": write_jpeg(tmp_path / "c" / "plain" / "a.jpg", seed=1),
        "vault": write_jpeg(tmp_path / "c" / "vault" / "v.jpg", seed=2),
        "keep": write_jpeg(tmp_path / "c" / "keep" / "k.jpg", seed=3),
        "tex": write_jpeg(tmp_path / "c" / "tex" / "t.jpg", seed=4),
        "png": write_png(tmp_path / "c" / "plain" / "g.png", seed=5),
    }
    outs = {k: archive_file(p, ctx) for k, p in files.items()}
    return files, outs


def test_clean_catalog_verifies(tmp_path, ctx):
    _archive_some(tmp_path, ctx)
    rep = verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs)
    assert rep.mismatches == [] and rep.checked == rep.total == rep.ok == 5


def test_every_kind_of_damage_is_reported(tmp_path, ctx):
    files, outs = _archive_some(tmp_path, ctx)
    # flip a byte in a lossless file, delete a vaulted original, damage the diffusion file
    jxl = Path(outs["plain"].compressed_path)
    b = bytearray(jxl.read_bytes())
    b[len(b) // 2] ^= 0xFF
    jxl.write_bytes(bytes(b))
    with ctx.catalog.session() as s:
        vrow = q.latest_version(s, str(files["vault"]))
    Path(vrow.vault_path).chmod(0o644)
    Path(vrow.vault_path).unlink()
    Path(outs["tex"].compressed_path).write_bytes(b"FAKEDLC1garbage")
    files["keep"].unlink()  # a kept original deleted by someone: a warning, not ours to lose
    rep = verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs)
    bad = {Path(m["path"]).name: m["problem"] for m in rep.mismatches}
    assert set(bad) == {"a.jpg", "v.jpg", "t.jpg"}
    assert "damaged" in bad["a.jpg"] and "missing" in bad["v.jpg"]
    assert any(Path(w["path"]).name == "k.jpg" for w in rep.warnings)


def test_decoded_reconstruction_is_compared(tmp_path, ctx):
    """Same bytes, different decoder (e.g. other weights): the reconstruction hash catches it."""
    files, outs = _archive_some(tmp_path, ctx)
    fake = ctx.codecs.get("diffusion")
    real = fake.decode
    fake.decode = lambda data: real(data).transpose(0)
    rep = verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs)
    assert [Path(m["path"]).name for m in rep.mismatches] == ["t.jpg"]
    assert "differs" in rep.mismatches[0]["problem"]


def test_strays_are_reported(tmp_path, ctx):
    files, outs = _archive_some(tmp_path, ctx)
    (tmp_path / "c" / "plain" / "copy.jpg.jxl").write_bytes(b"x")
    (tmp_path / "c" / "plain" / ".archiver-tmp-a.jpg.jxl.9.part").write_bytes(b"x")
    rep = verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs)
    assert rep.mismatches == []
    assert sorted(Path(w["path"]).name for w in rep.warnings if "unknown" in w["problem"]) == [
        ".archiver-tmp-a.jpg.jxl.9.part", "copy.jpg.jxl"]


def test_a_users_own_avif_or_jxl_photo_is_not_a_stray(tmp_path, ctx):
    """Issue 22 (minor): verify called a user's own .avif photo 'an unknown archiver file'."""
    from PIL import Image

    _archive_some(tmp_path, ctx)
    Image.new("RGB", (16, 16), (9, 9, 9)).save(tmp_path / "c" / "plain" / "holiday.avif", "AVIF")
    Image.new("RGB", (16, 16), (9, 9, 9)).save(tmp_path / "c" / "plain" / "sunset.jxl", "JXL")
    (tmp_path / "c" / "plain" / "b.jpg.7.avif").write_bytes(b"x")  # named as archive names outputs
    rep = verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs)
    assert sorted(Path(w["path"]).name for w in rep.warnings if "unknown" in w["problem"]) == ["b.jpg.7.avif"]


def test_an_interrupted_removal_is_reported_as_such(tmp_path, ctx):
    files, outs = _archive_some(tmp_path, ctx)
    (tmp_path / "c" / "plain" / ".archiver-taken-x.jpg.3.taken").write_bytes(b"x")
    rep = verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs)
    assert [w["problem"] for w in rep.warnings if "taken" in w["path"]][0].startswith("an original taken for removal")


def test_sample_checks_a_fraction(tmp_path, ctx):
    _archive_some(tmp_path, ctx)
    rep = verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs, sample=0.4, seed=1)
    assert 1 <= rep.checked < rep.total == 5


def test_stats_add_up(tmp_path, ctx):
    files, outs = _archive_some(tmp_path, ctx)
    st = stats(ctx.catalog)
    t = st["total"]
    assert t["files"] == 5 and st["states"] == {"committed": 5}
    assert t["bytes_before"] == sum(o.size_before for o in outs.values())
    on_disk = sum(p.stat().st_size for p in (tmp_path / "c").rglob("*") if p.is_file())
    assert t["bytes_after"] == on_disk
    assert t["vault_bytes"] == outs["vault"].size_before
    rules = {(g["rule"], g["action"]): g for g in st["by_rule"]}
    assert rules[("tex", "diffusion")]["saved_fraction"] > 0.3
    assert rules[("keepers", "keep")]["saved_bytes"] == 0


def test_vault_expiry_respects_legal_hold(tmp_path):
    clock = {"t": dt.datetime(2026, 1, 1)}
    ctx = make_context(tmp_path / "state", now=lambda: clock["t"])
    a = write_jpeg(tmp_path / "c" / "vault" / "a.jpg", seed=1)
    b = write_jpeg(tmp_path / "c" / "vault" / "b.jpg", seed=2)
    archive_file(a, ctx), archive_file(b, ctx)
    with ctx.catalog.session() as s:
        q.add_tag(s, str(b), "legal-hold")  # put on hold after archiving
    assert expire_vault(ctx.catalog, ctx.vault, now=dt.datetime(2026, 1, 2)).gone == []  # retention 3 days
    gone = expire_vault(ctx.catalog, ctx.vault, now=dt.datetime(2026, 1, 10)).gone
    with ctx.catalog.session() as s:
        ra, rb = q.latest_version(s, str(a)), q.latest_version(s, str(b))
    assert gone == [ra.sha256] and ra.vault_path is None and Path(rb.vault_path).is_file()
    assert verify(ctx.catalog, vault=ctx.vault, codecs=ctx.codecs).mismatches == []  # a still has its .jxl
    ctx.catalog.close()


def test_cli_verify_and_stats(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"catalog_url: sqlite:///{tmp_path / 'cat.sqlite'}\nvault_dir: {tmp_path / 'vault'}\n")
    make_policy(tmp_path / "p.yaml")
    src = write_jpeg(tmp_path / "c" / "plain" / "a.jpg")
    env = dict(os.environ, ARCHIVER_HOME=str(tmp_path / "home"))
    run = lambda *a: subprocess.run([sys.executable, "-m", "archiver", *a, "--config", str(cfg)],
                                    capture_output=True, text=True, timeout=300, env=env)
    assert run("archive", str(tmp_path / "c"), "--policy", str(tmp_path / "p.yaml")).returncode == 0
    r = run("stats", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["total"]["files"] == 1
    assert "total" in run("stats").stdout
    assert run("verify").returncode == 0
    r = run("verify", "--expire-vault", "--json")  # nothing is past retention yet
    assert r.returncode == 0 and json.loads(r.stdout)["expired"] == []
    Path(str(src) + ".jxl").write_bytes(b"broken")
    r = run("verify", "--json")
    assert r.returncode == 8 and len(json.loads(r.stdout)["mismatches"]) == 1
    r = run("verify")
    assert r.returncode == 8 and "MISMATCH" in r.stdout


def test_vault_expiry_never_deletes_the_last_good_copy(tmp_path):
    clock = {"t": dt.datetime(2026, 1, 1)}
    ctx = make_context(tmp_path / "state", now=lambda: clock["t"])
    a = write_jpeg(tmp_path / "c" / "vault" / "a.jpg", seed=1)
    orig = a.read_bytes()
    o = archive_file(a, ctx)
    Path(o.compressed_path).write_bytes(b"bit rot")
    assert expire_vault(ctx.catalog, ctx.vault, now=dt.datetime(2027, 1, 1)).gone == []
    from archiver.work.restore import restore

    assert restore(ctx.catalog, [str(a)], vault=ctx.vault)[0].source == "vault" and a.read_bytes() == orig
    ctx.catalog.close()


@pytest.mark.parametrize("home", ["empty", "zeroed", "mistyped"])
def test_verify_on_a_wrong_archiver_home_is_an_error(tmp_path, home):
    """#8: verify on an empty, zeroed or mistyped ARCHIVER_HOME printed "checked 0 of 0", exited 0
    and created a catalog."""
    h = tmp_path / "home"
    h.mkdir()
    if home == "empty":
        (h / "catalog.sqlite").write_bytes(b"")
    elif home == "zeroed":
        (h / "catalog.sqlite").write_bytes(bytes(8192))
    else:
        h = tmp_path / "hmoe"
    env = dict(os.environ, ARCHIVER_HOME=str(h), HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "xdg"),
               XDG_CONFIG_DIRS=str(tmp_path / "xdg-dirs"))
    env.pop("ARCHIVER_CONFIG", None)  # only ARCHIVER_HOME says where the catalog is (no config file found)
    for cmd in ("verify", "stats", "restore"):
        args = [cmd] + (["/x/a.jpg"] if cmd == "restore" else [])
        r = subprocess.run([sys.executable, "-m", "archiver", *args], capture_output=True, text=True, timeout=120,
                           env=env, cwd=tmp_path)
        assert r.returncode == 7 and "Traceback" not in r.stderr and "catalog" in r.stderr, (cmd, r.stderr)
    assert not (tmp_path / "hmoe").exists()
    if home != "mistyped":
        assert sorted(p.name for p in h.iterdir()) == ["catalog.sqlite"]
