"""The web interface and REST API as the `web` service of `mercury serve`: uvicorn serving
the app in mercury's own event loop, on the index the other services share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn

from mercury.runtime import Runtime
from mercury.web.app import create_app

log = logging.getLogger("mercury.web")

STOP_GRACE = 10


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # `mercury serve` handles SIGTERM and SIGINT for every service


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"cannot listen on {host}:{port} for the web interface: {exc.strerror}"
        ) from exc
    return sock


class WebService:
    name = "web"

    def __init__(self, runtime: Runtime) -> None:
        if runtime.config_path is None:
            raise ValueError(
                "the web service needs the configuration file (mercury serve --config)"
            )
        self.runtime = runtime
        web = runtime.config.web
        self.host, self.port = web.host, web.port
        self.app = create_app(
            runtime.config_path,
            engine=runtime.engine,
            config=runtime.config,
            services=runtime.services,
        )
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    def describe(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"web interface and REST API on http://{host}:{self.port} (OpenAPI at /api/docs)"

    async def start(self) -> None:
        sock = _listen(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=STOP_GRACE,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="mercury-web")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the web server stopped while starting")
            await asyncio.sleep(0.01)
        log.info("%s", self.describe())

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_GRACE + 5)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
