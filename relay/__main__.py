"""``python -m relay`` / ``cobrowse-relay``: settings from the environment, a bound socket, then uvicorn.

Exit status: 0 after a clean stop (SIGTERM, or Ctrl+C at any time), 1 when the
address cannot be listened on, 2 for an invalid setting or argument. With
``--help`` or ``--version`` nothing is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import textwrap
from collections.abc import Generator, Mapping
from typing import Any

from .settings import VARIABLES, Settings, SettingsError

__all__ = ["main", "usage", "version"]

log = logging.getLogger("relay")

_ABOUT = """\
Self-hosted relay for live co-browsing and remote support.

It is configured by environment variables only, read once at start-up; an
invalid value stops start-up with one line naming it (exit status 2). PORT=0
listens on any free port; the first line printed names the one bound.
Example: PORT=8080 REST_KEY=s3cret cobrowse-relay

`cobrowse-relay keys create --kind coclick|registration [--name N] [--company C]`
makes an API key on the relay's store (its secret is shown once); `keys list
--kind K` lists them, `keys revoke ID` revokes one."""


def version() -> str:
    """This package's version, from its installed metadata."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("cobrowse-relay")
    except PackageNotFoundError:
        return "unknown (not installed)"


def usage() -> str:
    """``--help``: usage, then every variable of :data:`VARIABLES` with its default and meaning."""
    name_w = max(map(len, VARIABLES)) + 2
    default_w = max(len(d) for d, _ in VARIABLES.values()) + 2
    lines = [
        "usage: cobrowse-relay [--help | --version]",
        "       cobrowse-relay keys {create,list,revoke} ...",
        "",
        _ABOUT,
        "",
    ]
    lines.append("configuration (variable, default, meaning):")
    indent = " " * (2 + name_w + default_w)
    for name, (default, meaning) in VARIABLES.items():
        head = f"  {name:<{name_w}}{default:<{default_w}}"
        wrapped = textwrap.wrap(
            meaning, 120, initial_indent=head, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False
        )
        lines.extend(wrapped)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """The command line: ``--help``/``-h``, ``--version``/``-V``, or (no arguments) serve."""
    args = sys.argv[1:] if argv is None else argv
    if args in (["--help"], ["-h"]):
        sys.stdout.write(usage())
        return 0
    if args in (["--version"], ["-V"]):
        print(f"cobrowse-relay {version()}")
        return 0
    if args and args[0] == "keys":
        from .keys import main as keys_main

        return keys_main(args[1:], os.environ)
    if args:
        print(f"cobrowse-relay: unknown argument {args[0]!r}; see cobrowse-relay --help", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)  # until uvicorn takes the signal over: a quiet stop too
    try:
        return _serve(os.environ)
    except KeyboardInterrupt:  # Ctrl+C before uvicorn took over the signal: a quiet stop all the same
        return 0


def _stop(sig: int, frame: Any) -> None:
    """SIGTERM during start-up: exit 0 at once (nothing is served yet, nothing to drain)."""
    raise SystemExit(0)


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port``, bound before anything is printed."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _listen_error(host: str, port: int, e: OSError) -> str:
    """One line saying why ``host``:``port`` cannot be listened on, naming the variable to change."""
    if e.errno == errno.EADDRINUSE:
        return f"cobrowse-relay: PORT {port} is already in use on {host}: stop what holds it, or set another PORT"
    if e.errno == errno.EACCES:
        return f"cobrowse-relay: PORT {port} needs privileges on this system: set a PORT above 1023"
    if isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL:
        return f"cobrowse-relay: HOST {host} is not an address of this machine: set HOST (e.g. 127.0.0.1)"
    return f"cobrowse-relay: cannot listen on HOST {host} PORT {port}: {e.strerror or e}"


def listen_url(settings: Settings) -> str:
    """``http://HOST:PORT`` as a browser on this machine would open it."""
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def banner(settings: Settings) -> str:
    """What start-up prints: first line ``cobrowse-relay on http://HOST:PORT`` (the port bound)."""
    base = settings.base_url
    lines = [f"cobrowse-relay on {listen_url(settings)}"]
    if base != listen_url(settings):
        lines.append(f"  base:    {base}")
    lines += [f"  console: {base}/console", f"  demo:    {base}/demo", f"  health:  {base}/health"]
    api = f"{base}/api (Authorization: $REST_KEY)" if settings.rest_key else "off (set REST_KEY)"
    lines.append(f"  REST API: {api}")
    return "\n".join(lines)


def _serve(environ: Mapping[str, str]) -> int:
    from . import logs

    held = logs.hold()  # settings may log before the format is known
    try:
        settings = Settings.from_env(environ)
    except SettingsError as e:
        print(f"cobrowse-relay: invalid configuration: {e}", file=sys.stderr)
        return 2
    secrets = [settings.rest_key or "", settings.secret_key.decode(errors="replace")]
    log_config = logs.setup(settings.log_format, settings.log_level, secrets)
    held.replay()
    try:
        sock = _listen(settings.host, settings.port)
    except OSError as e:
        print(_listen_error(settings.host, settings.port, e), file=sys.stderr)
        return 1
    settings = settings.bound_to(environ, sock.getsockname()[1])
    if settings.cluster:
        from .cluster.preflight import preflight

        problem = preflight(settings)
        if problem is not None:
            sock.close()
            print(f"cobrowse-relay: {problem[1]}", file=sys.stderr)
            return problem[0]
    with sock:
        return _run(settings, sock, log_config)


def _run(settings: Settings, sock: socket.socket, log_config: dict[str, Any]) -> int:
    import uvicorn

    from .api import pages
    from .app import begin_drain, create_app, drain
    from .transport.direct import RelayWebSocketProtocol
    from .transport.http import RelayHttpProtocol

    class Server(uvicorn.Server):
        """Drain before uvicorn's own shutdown (/health 503, 1001 to every socket);
        a signal that stopped the server is not raised again: a clean stop exits 0."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            """First signal: /health 503 at once; DRAIN_DELAY later (the balancer has taken this
            node out by then) sockets are closed with 1001 and the server stops. A second
            signal stops at once."""
            delay = settings.drain_delay
            if delay > 0 and begin_drain(app):
                asyncio.get_running_loop().call_later(delay, self._finish_drain, sig, frame)
                return
            self._finish_drain(sig, frame)

        def _finish_drain(self, sig: int, frame: Any) -> None:
            drain(app)
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None]:
            handlers = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in handlers.items():
                    signal.signal(sig, handler)

    pages.warn_if_unbuilt()
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=RelayHttpProtocol,
        ws=RelayWebSocketProtocol,
        ws_max_size=settings.max_keyframe,
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_timeout,
        lifespan="on",
        log_config=log_config,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=10,
        server_header=False,
        # The client address every per-address limit counts: a trusted proxy's
        # X-Forwarded-For, else the peer (never a header from anyone else).
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
    )
    server = Server(config)
    print(banner(settings), flush=True)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
