"""The vault: verified copies that work across filesystems, content-addressed, with expiry."""

import datetime as dt
import errno
import hashlib
import os

import pytest

from archiver.storage.vault import Vault, VaultDamaged, VaultError


def _src(tmp_path, data=b"original bytes"):
    p = tmp_path / "src" / f"{hashlib.md5(data).hexdigest()}.jpg"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p, hashlib.sha256(data).hexdigest()


def test_put_get_check(tmp_path):
    v = Vault(tmp_path / "vault")
    p, sha = _src(tmp_path)
    vp = v.put(p, sha, expires_at=dt.datetime(2030, 1, 1))
    assert vp.read_bytes() == p.read_bytes() and v.get(sha) == vp and v.check(sha)
    assert v.put(p, sha) == vp  # again: same object, no error
    assert list(v.objects()) == [sha]


def test_put_refuses_content_that_does_not_match(tmp_path):
    v = Vault(tmp_path / "vault")
    p, _ = _src(tmp_path)
    with pytest.raises(VaultError):
        v.put(p, "0" * 64)
    assert v.get("0" * 64) is None


def test_vault_on_another_filesystem(tmp_path, monkeypatch):
    """rename across filesystems fails with EXDEV; the vault never relies on it."""
    real_replace = os.replace

    def no_cross_rename(a, b, *args, **kw):
        if os.path.dirname(os.path.abspath(a)) != os.path.dirname(os.path.abspath(b)):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(a, b, *args, **kw)

    monkeypatch.setattr(os, "rename", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EXDEV, "EXDEV")))
    monkeypatch.setattr(os, "replace", no_cross_rename)
    v = Vault(tmp_path / "vault")
    p, sha = _src(tmp_path)
    assert v.check(sha) is False
    v.put(p, sha)
    assert v.check(sha) and p.exists()


def test_expire_respects_retention_and_holds(tmp_path):
    v = Vault(tmp_path / "vault")
    a, sa = _src(tmp_path, b"a")
    b, sb = _src(tmp_path, b"b")
    c, sc = _src(tmp_path, b"c")
    v.put(a, sa, expires_at=dt.datetime(2026, 1, 1))
    v.put(a, sa, expires_at=dt.datetime(2026, 3, 1))  # a later put extends retention
    v.put(b, sb, expires_at=dt.datetime(2026, 1, 1))
    v.put(c, sc, expires_at=None)  # forever
    assert v.expire(dt.datetime(2026, 2, 1), keep={sb}) == []
    assert v.expire(dt.datetime(2026, 2, 1)) == [sb]
    assert v.expire(dt.datetime(2027, 1, 1)) == [sa]
    assert list(v.objects()) == [sc]


# -- reading an original back: verified, never through a link (F6) --------------------------------
def _vaulted(tmp_path, data=b"original bytes"):
    v = Vault(tmp_path / "vault")
    p, sha = _src(tmp_path, data)
    v.put(p, sha)
    return v, sha, data


def test_read_verified_gives_the_original(tmp_path):
    v, sha, data = _vaulted(tmp_path)
    assert v.read_verified(sha) == data


def test_a_flipped_byte_is_damage_not_an_original(tmp_path):
    v, sha, data = _vaulted(tmp_path)
    obj = v.object_path(sha)
    os.chmod(obj, 0o644)
    obj.write_bytes(bytes([data[0] ^ 1]) + data[1:])  # the same size: a size check passes
    with pytest.raises(VaultDamaged, match="SHA-256"):
        v.read_verified(sha)
    assert v.check(sha) is False


@pytest.mark.parametrize("where", ["object", "shard folder"])
def test_a_link_in_the_vault_is_refused_even_to_the_right_bytes(tmp_path, where):
    """A symbolic link in place of an object (or of its folder) is not followed, even when it
    points at a copy with the very bytes: what it points at can change after any check."""
    v, sha, data = _vaulted(tmp_path)
    obj = v.object_path(sha)
    elsewhere = tmp_path / "elsewhere" / obj.parent.name
    elsewhere.mkdir(parents=True)
    (elsewhere / sha).write_bytes(data)
    if where == "object":
        os.chmod(obj, 0o644)
        obj.unlink()
        obj.symlink_to(elsewhere / sha)
    else:
        for f in obj.parent.iterdir():
            os.chmod(f, 0o644)
            f.unlink()
        obj.parent.rmdir()
        obj.parent.symlink_to(elsewhere, target_is_directory=True)
    assert obj.read_bytes() == data  # following the link would give the right bytes
    with pytest.raises(VaultDamaged, match="link"):
        v.read_verified(sha)
    assert v.get(sha) is None and v.check(sha) is False


def test_a_fifo_in_the_vault_is_refused_without_blocking(tmp_path):
    v, sha, _ = _vaulted(tmp_path)
    obj = v.object_path(sha)
    os.chmod(obj, 0o644)
    obj.unlink()
    os.mkfifo(obj)
    with pytest.raises(VaultDamaged, match="regular file"):
        v.read_verified(sha)
    assert v.get(sha) is None and v.check(sha) is False


def test_a_missing_object_is_an_error_but_not_damage(tmp_path):
    v = Vault(tmp_path / "vault")
    with pytest.raises(VaultError, match="no vault copy") as e:
        v.read_verified("ab" * 32)
    assert not isinstance(e.value, VaultDamaged)
    with pytest.raises(VaultError, match="SHA-256"):
        v.read_verified("../../etc/passwd")


def test_put_replaces_a_link_instead_of_trusting_it(tmp_path):
    v, sha, data = _vaulted(tmp_path)
    obj = v.object_path(sha)
    (tmp_path / "copy").write_bytes(data)
    os.chmod(obj, 0o644)
    obj.unlink()
    obj.symlink_to(tmp_path / "copy")
    p, _ = _src(tmp_path, data)
    assert v.put(p, sha) == obj
    assert not obj.is_symlink() and v.read_verified(sha) == data


def test_expire_removes_a_link_without_touching_what_it_points_at(tmp_path):
    v = Vault(tmp_path / "vault")
    p, sha = _src(tmp_path)
    v.put(p, sha, expires_at=dt.datetime(2026, 1, 1))
    target = tmp_path / "not-the-vaults"
    target.write_bytes(b"x")
    os.chmod(target, 0o400)
    obj = v.object_path(sha)
    os.chmod(obj, 0o644)
    obj.unlink()
    obj.symlink_to(target)
    assert v.expire(dt.datetime(2027, 1, 1)) == [sha]
    assert not os.path.lexists(obj) and target.exists() and (target.stat().st_mode & 0o777) == 0o400


def test_the_vault_holding_an_object_path(tmp_path):
    v, sha, data = _vaulted(tmp_path)
    assert Vault.holding(v.object_path(sha)).read_verified(sha) == data  # a catalog row's vault_path
    for bad in ("/etc/passwd", tmp_path / "objects" / "zz" / sha, tmp_path / "other" / sha[:2] / sha):
        with pytest.raises(VaultError, match="not a vault object"):
            Vault.holding(bad)
