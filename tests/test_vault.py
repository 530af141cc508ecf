"""The vault: verified copies that work across filesystems, content-addressed, with expiry."""

import datetime as dt
import errno
import hashlib
import os

import pytest

from archiver.storage.vault import Vault, VaultError


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
