"""``python -m relay`` / ``cobrowse-relay``: settings from the environment, then uvicorn."""

from __future__ import annotations

import logging
import sys
from typing import Any

import uvicorn

from .app import create_app, drain
from .settings import Settings, SettingsError
from .transport.direct import RelayWebSocketProtocol
from .transport.http import RelayHttpProtocol


class _Server(uvicorn.Server):
    """Drain before uvicorn's own shutdown: /health 503 and 1001 to every socket."""

    app: Any = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.app is not None:
            drain(self.app)
        super().handle_exit(sig, frame)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        settings = Settings.from_env()
    except SettingsError as e:
        print(f"cobrowse-relay: invalid configuration: {e}", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(settings.log_level.upper())
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
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    server = _Server(config)
    server.app = app
    base = settings.base_url
    print(
        "cobrowse-relay on {base}\n  console: {base}/console\n  demo:    {base}/demo\n  health:  {base}/health\n"
        "  REST API: {api}".format(
            base=base, api=f"{base}/api (Authorization: $REST_KEY)" if settings.rest_key else "off (set REST_KEY)"
        ),
        flush=True,
    )
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
