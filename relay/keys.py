"""API keys: ``cobrowse-relay keys create|list|revoke``, and checking a presented secret.

A key is a public id (``secret_id``, 32 hex digits) and a secret (``secret_key``,
43 URL-safe characters, 256 random bits) shown once, when it is created. The
store keeps the id, the kind (``coclick`` for the CoClick API's
``authenticate``; ``registration`` for enrolling device agents), a name, a
company, the times, and a SHA-256 hash of the secret: never the secret. A
random 256-bit secret needs no slow hash (nothing to brute-force); the hash
only keeps a copy of the store from being a copy of the keys. Revoked keys
stay listed, with the time they were revoked, and never authenticate again.

The command line reads the same environment as the relay (``DATA_DIR`` or
``REDIS_URL``), so it runs beside a live relay on the same store.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import secrets
import sys
import time
from collections.abc import Mapping, Sequence

from .settings import Settings, SettingsError
from .storage import open_storage
from .storage.base import ApiKey, Store

__all__ = ["KINDS", "check_secret", "hash_secret", "main", "new_key"]

KINDS = ("coclick", "registration")


def hash_secret(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def check_secret(key: ApiKey | None, secret: str) -> bool:
    """True when ``key`` exists, is not revoked and ``secret`` is its secret (constant time)."""
    expected = key.secret_hash if key is not None else hash_secret("")
    ok = hmac.compare_digest(expected.encode(), hash_secret(secret).encode())
    return ok and key is not None and key.revoked_at is None


def new_key(kind: str, name: str = "", company: str = "", now: float | None = None) -> tuple[ApiKey, str]:
    """A new key of ``kind`` and its secret (to show once)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        id=secrets.token_hex(16),
        kind=kind,
        secret_hash=hash_secret(secret),
        name=name,
        company=company,
        created_at=time.time() if now is None else now,
    )
    return key, secret


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cobrowse-relay keys", description="Create, list and revoke API keys.")
    sub = p.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a key; its secret is shown once")
    create.add_argument("--kind", required=True, choices=KINDS)
    create.add_argument("--name", default="", help="what the key is for")
    create.add_argument("--company", default="", help="the company the CoClick API answers with")
    listing = sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--kind", required=True, choices=KINDS)
    revoke = sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("id")
    return p


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """Exit status: 0 done, 1 failure (unknown key, store unreachable), 2 bad usage or configuration."""
    parser = _parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as e:  # argparse printed why
        return 2 if e.code else 0
    try:
        settings = Settings.from_env(environ)
    except SettingsError as e:
        print(f"cobrowse-relay: invalid configuration: {e}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, open_storage(settings)))
    except OSError as e:
        print(f"cobrowse-relay keys: the store cannot be reached: {e}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, store: Store) -> int:
    await store.open()
    try:
        if args.command == "create":
            key, secret = new_key(args.kind, args.name, args.company)
            await store.save_api_key(key)
            print(f"secret_id:  {key.id}\nsecret_key: {secret}\n(the secret is shown this once; keep it safe)")
            return 0
        if args.command == "list":
            for k in await store.list_api_keys(args.kind):
                state = "revoked" if k.revoked_at is not None else "active"
                made = time.strftime("%Y-%m-%d %H:%M", time.gmtime(k.created_at))
                print(f"{k.id}  {k.kind}  {state}  {made}  {k.name or '-'}  {k.company or '-'}")
            return 0
        if not await store.revoke_api_key(args.id, time.time()):
            print(f"cobrowse-relay keys: no active key {args.id!r}", file=sys.stderr)
            return 1
        print(f"revoked {args.id}")
        return 0
    finally:
        await store.close()
