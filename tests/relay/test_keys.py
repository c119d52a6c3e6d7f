"""``cobrowse-relay keys``: create (secret shown once, stored hashed), list, revoke; and checking a secret."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

from relay.keys import check_secret, hash_secret, new_key
from relay.storage.sqlite import SqliteStore

from ..conftest import ROOT, base_env


def keys(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = base_env(DATA_DIR=str(tmp_path), SECRET_KEY="test-secret-key-0123456789abcdef")
    return subprocess.run(
        [sys.executable, "-m", "relay", "keys", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_a_key_is_created_shown_once_stored_hashed_listed_and_revoked(tmp_path: Path) -> None:
    made = keys(tmp_path, "create", "--kind", "coclick", "--name", "crm", "--company", "MyCompany")
    assert made.returncode == 0, made.stderr
    key_id = re.search(r"secret_id:\s+([0-9a-f]{32})", made.stdout)
    secret = re.search(r"secret_key:\s+(\S{43})", made.stdout)
    assert key_id and secret, made.stdout
    listed = keys(tmp_path, "list", "--kind", "coclick")
    assert listed.returncode == 0 and key_id[1] in listed.stdout and "active" in listed.stdout
    assert secret[1] not in listed.stdout and "MyCompany" in listed.stdout
    assert keys(tmp_path, "list", "--kind", "registration").stdout == ""

    async def stored() -> None:
        store = SqliteStore(tmp_path / "relay.sqlite3")
        await store.open()
        try:
            k = await store.get_api_key(key_id[1])
            assert k is not None and k.secret_hash == hash_secret(secret[1]) and secret[1] not in k.secret_hash
            assert check_secret(k, secret[1]) and not check_secret(k, secret[1] + "x")
        finally:
            await store.close()

    asyncio.run(stored())
    assert (gone := keys(tmp_path, "revoke", key_id[1])).returncode == 0, gone.stderr
    assert "revoked" in keys(tmp_path, "list", "--kind", "coclick").stdout
    again = keys(tmp_path, "revoke", key_id[1])
    assert again.returncode == 1 and "no active key" in again.stderr


def test_bad_usage_is_status_2_in_a_line_or_two(tmp_path: Path) -> None:
    done = keys(tmp_path, "create", "--kind", "nope")
    assert done.returncode == 2 and "invalid choice" in done.stderr
    assert keys(tmp_path).returncode == 2


def test_check_secret_refuses_a_revoked_or_missing_key() -> None:
    key, secret = new_key("registration", now=1.0)
    assert check_secret(key, secret)
    key.revoked_at = 2.0
    assert not check_secret(key, secret)
    assert not check_secret(None, secret)
