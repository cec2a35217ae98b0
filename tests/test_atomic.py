"""Atomic writes keep the permissions a plain ``open()`` would give (mkstemp's 0o600 hid every
output, checkpoint and GIF from other users and from a node running as another user)."""
from __future__ import annotations

import os
import stat

from vln_core.atomic import atomic_write_bytes, atomic_write_text


def test_a_new_file_gets_the_umask_permissions_and_an_existing_one_keeps_its_own(tmp_path):
    old = os.umask(0o022)
    try:
        new = tmp_path / "new.json"
        atomic_write_text(new, "{}")
        assert stat.S_IMODE(new.stat().st_mode) == 0o644
        private = tmp_path / "key.bin"
        private.write_bytes(b"old")
        private.chmod(0o600)
        atomic_write_bytes(private, b"new")
        assert private.read_bytes() == b"new" and stat.S_IMODE(private.stat().st_mode) == 0o600
        os.umask(0o077)
        strict = tmp_path / "strict.txt"
        atomic_write_text(strict, "x")
        assert stat.S_IMODE(strict.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.bin", "new.json", "strict.txt"]  # no temporaries
