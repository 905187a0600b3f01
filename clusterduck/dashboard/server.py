"""Serving the dashboard: bind the port ourselves (so "port in use" is a clear error
before anything starts), then hand the socket to uvicorn. The only uvicorn user."""

from __future__ import annotations

import errno
import socket

import uvicorn

from ..exceptions import ClusterduckError
from .app import create_app

__all__ = ["PortInUse", "bind", "serve"]

# Open server-sent event streams never end by themselves: on Ctrl-C give them this long.
GRACEFUL_SECONDS = 1


class PortInUse(ClusterduckError):
    """Another program listens on the dashboard's port."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        super().__init__(f"port {port} on {host} is already in use; pick another with `--port`")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(host, port) from exc
        raise ClusterduckError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(sock: socket.socket) -> None:
    """Run until Ctrl-C (or SIGTERM)."""
    config = uvicorn.Config(
        create_app(),
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )
    uvicorn.Server(config).run(sockets=[sock])
