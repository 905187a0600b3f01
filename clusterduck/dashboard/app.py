"""The dashboard's routes: two static pages, a small read-only JSON API, a server-sent
event stream per topology and ``/metrics``. The only module that uses Starlette.

Nothing here changes a topology: every route is a GET. Blocking status calls run in a
thread pool with a deadline (:func:`_off_loop`), so a slow or unreachable host delays
one answer, never the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..exceptions import ClusterduckError, StateError
from . import metrics, status_source
from .status_source import UnknownTopology
from .watch import INTERVAL, Watches

__all__ = ["CALL_TIMEOUT", "create_app"]

STATIC = Path(__file__).resolve().parent / "static"
CALL_TIMEOUT = 25.0  # above the engine's worst case (5 s control request + 10 s SSH connect)
MAX_LOG_LINES = 1000

T = TypeVar("T")


class _Timeout(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} did not answer within {CALL_TIMEOUT:g}s (a host may be unreachable)"
        )


def create_app() -> Starlette:
    """A fresh application with its own pollers and thread pool."""
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dashboard")
    watches = Watches()

    async def off_loop(what: str, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(pool, functools.partial(fn, *args)), CALL_TIMEOUT
            )
        except asyncio.TimeoutError as exc:
            raise _Timeout(what) from exc

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def topology_page(request: Request) -> Response:
        name = request.path_params["name"]
        try:  # the record only: no status call just to serve a static page
            await off_loop("graph", status_source.describe, name)
        except UnknownTopology:
            return Response(
                f"<!doctype html><title>unknown topology</title><p>No topology named "
                f"<b>{_html(name)}</b> is known here. <a href='/'>All topologies</a>",
                status_code=404,
                media_type="text/html",
            )
        return FileResponse(STATIC / "topology.html")

    async def api_topologies(request: Request) -> Response:
        return JSONResponse(await off_loop("list", status_source.known_topologies))

    async def api_status(request: Request) -> Response:
        name = request.path_params["name"]
        return JSONResponse(
            await off_loop(f"status of {name}", status_source.topology_status, name)
        )

    async def api_graph(request: Request) -> Response:
        name = request.path_params["name"]
        return JSONResponse(await off_loop(f"graph of {name}", status_source.describe, name))

    async def api_logs(request: Request) -> Response:
        name = request.path_params["name"]
        instance = request.query_params.get("instance", "")
        component, _, index = instance.rpartition("/")
        lines = request.query_params.get("lines", "40")
        if not component or not index.isdigit():
            return _error(400, f"instance={instance!r}: expected COMPONENT/INDEX, e.g. sink/0")
        if not lines.isdigit() or not 1 <= int(lines) <= MAX_LOG_LINES:
            return _error(400, f"lines={lines!r}: expected a number from 1 to {MAX_LOG_LINES}")
        text = await off_loop(
            f"log of {instance}", status_source.log_tail, name, component, int(index), int(lines)
        )
        return JSONResponse({"instance": instance, "lines": text.splitlines()})

    async def api_events(request: Request) -> Response:
        name = request.path_params["name"]
        await off_loop("list", status_source.describe, name)  # 404 for an unknown name
        watch = watches.get(name)

        async def stream() -> AsyncIterator[str]:
            yield f"retry: {int(INTERVAL * 1000)}\n\n"
            while True:
                yield f"data: {json.dumps(watch.snapshot())}\n\n"
                await asyncio.sleep(INTERVAL)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    async def prometheus(request: Request) -> Response:
        # one status call per topology, all at once: a scrape costs one status, not two
        names = await off_loop("list", status_source.topology_names)
        results = await asyncio.gather(
            *(off_loop(f"status of {n}", status_source.topology_status, n) for n in names),
            return_exceptions=True,
        )
        statuses = [r for r in results if isinstance(r, dict)]
        return Response(metrics.exposition(statuses), media_type=metrics.CONTENT_TYPE)

    async def unknown(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, UnknownTopology)
        return JSONResponse({"error": str(exc), "known": exc.known}, status_code=404)

    async def timeout(request: Request, exc: Exception) -> Response:
        return _error(504, str(exc))

    async def failed(request: Request, exc: Exception) -> Response:
        # a name that does not exist (an instance) is the caller's; anything else a host's
        return _error(404 if isinstance(exc, StateError) else 502, str(exc))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        watches.stop_all()
        pool.shutdown(wait=False, cancel_futures=True)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/topologies/{name}", topology_page),
            Route("/api/topologies", api_topologies),
            Route("/api/topologies/{name}/status", api_status),
            Route("/api/topologies/{name}/graph", api_graph),
            Route("/api/topologies/{name}/logs", api_logs),
            Route("/api/topologies/{name}/events", api_events),
            Route("/metrics", prometheus),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={UnknownTopology: unknown, _Timeout: timeout, ClusterduckError: failed},
        lifespan=lifespan,
    )
    return app


def _error(code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=code)


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
