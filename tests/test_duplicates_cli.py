"""``archiver duplicates`` and ``archiver find`` (issue 28): exact copies and near duplicates
(a resized, re-saved copy) are grouped, an unrelated picture is not; ``find`` answers which
archived photo an image is; bad input is one line and an exit code. Nothing is deleted."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
from click.testing import CliRunner
from PIL import Image

from archiver.app.main import main
from test_service_helpers import setup_env


def picture(seed: int, size=(320, 240)) -> Image.Image:
    """A picture with its own structure: random blocks, smoothly upscaled."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(base).resize(size, Image.BICUBIC)


def save_jpeg(img: Image.Image, path, q=90):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=q)
    return path


def _cli(e, *args):
    return CliRunner().invoke(main, list(args), env={"ARCHIVER_HOME": str(e["home"]), "ARCHIVER_CONFIG": str(e["config"])})


def _setup(tmp_path):
    e = setup_env(tmp_path)
    root = e["root"]
    a = save_jpeg(picture(1), root / "camera" / "a.jpg")
    (root / "backup").mkdir()
    shutil.copyfile(a, root / "backup" / "a.jpg")
    w, h = picture(1).size
    save_jpeg(picture(1).resize((w // 2, h // 2), Image.LANCZOS), root / "phone" / "a-small.jpg", q=70)
    save_jpeg(picture(2), root / "camera" / "b.jpg")
    save_jpeg(picture(3), root / "camera" / "c.jpg")
    r = _cli(e, "migrate", str(root), "--json", "--executor", "thread")
    assert r.exit_code == 0, r.output
    return e, root


def test_duplicates_groups_exact_copies_and_near_duplicates_and_deletes_nothing(tmp_path):
    e, root = _setup(tmp_path)
    before = sorted(p.name for p in root.rglob("*"))
    r = _cli(e, "duplicates", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    (exact,) = d["exact"]
    assert sorted(f["path"] for f in exact["files"]) == [str(root / "backup" / "a.jpg"), str(root / "camera" / "a.jpg")]
    assert exact["stored_files"] == 1 and sum(1 for f in exact["files"] if f["artifact_of"]) == 1
    (near,) = d["near"]
    assert sorted(f["path"] for f in near["files"]) == sorted(
        str(root / p) for p in ("backup/a.jpg", "camera/a.jpg", "phone/a-small.jpg"))
    assert d["files_compared"] == 5
    human = _cli(e, "duplicates").output
    assert "exact copies (same content): 1 group(s)" in human and "near duplicates" in human and "phone/a-small.jpg" in human
    assert sorted(p.name for p in root.rglob("*")) == before


def test_find_names_the_archived_photo_a_resized_copy_comes_from(tmp_path):
    e, root = _setup(tmp_path)
    w, h = picture(1).size
    probe = save_jpeg(picture(1).resize((w * 3 // 4, h * 3 // 4), Image.LANCZOS), tmp_path / "found" / "IMG_1.jpg", q=75)
    r = _cli(e, "find", str(probe), "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    paths = [m["path"] for m in d["matches"]]
    assert set(paths) == {str(root / p) for p in ("backup/a.jpg", "camera/a.jpg", "phone/a-small.jpg")}
    assert all(m["phash_distance"] <= 14 and m["dhash_distance"] <= 13 for m in d["matches"])
    other = save_jpeg(picture(9), tmp_path / "found" / "other.jpg")
    d2 = json.loads(_cli(e, "find", str(other), "--json").output)
    assert d2["matches"] == []
    assert "nothing archived looks like it" in _cli(e, "find", str(other)).output


def test_find_of_a_file_that_is_no_image_is_one_line_and_exit_3(tmp_path):
    e, root = _setup(tmp_path)
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"not an image at all")
    r = _cli(e, "find", str(bad))
    assert r.exit_code == 3 and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_show_says_which_entry_a_copy_shares_its_stored_file_with(tmp_path):
    e, root = _setup(tmp_path)
    d = json.loads(_cli(e, "duplicates", "--json").output)
    (exact,) = d["exact"]
    copy = next(f for f in exact["files"] if f["artifact_of"])
    owner = next(f for f in exact["files"] if not f["artifact_of"])
    r = _cli(e, "show", copy["path"])
    assert r.exit_code == 0, r.output
    assert f"an exact copy of catalog id {owner['id']}: shares its stored file" in r.output
    assert "an exact copy" not in _cli(e, "show", owner["path"]).output


def test_the_name_on_disk_of_a_shared_file_means_its_owner_in_show_and_restore(tmp_path):
    e, root = _setup(tmp_path)
    (exact,) = json.loads(_cli(e, "duplicates", "--json").output)["exact"]
    owner = next(f for f in exact["files"] if not f["artifact_of"])
    (stored,) = {p for p in (root / "camera").glob("a.jpg.*")} | {p for p in (root / "backup").glob("a.jpg.*")}
    r = _cli(e, "show", str(stored))
    assert r.exit_code == 0 and r.output.splitlines()[0].startswith(f"{owner['path']} (catalog id {owner['id']}"), r.output
    out = tmp_path / "restored"
    r = _cli(e, "restore", str(stored), "--to", str(out), "--json")
    assert r.exit_code == 0, r.output
    assert [p.name for p in out.rglob("*") if p.is_file()] == ["a.jpg"]  # the owner only, not its copy too
