"""What ``clusterduck dashboard`` does, apart from parsing its options (in the CLI).

Checks come first, so that bad input starts nothing: the web dependencies are installed,
the topology NAME is known, the port is free. Then it prints the URL and serves.
"""

from __future__ import annotations

import ipaddress
import webbrowser
from collections.abc import Callable

from ..exceptions import ClusterduckError
from . import EXTRA_HINT, missing_dependency

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "MissingExtra", "run"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


class MissingExtra(ClusterduckError):
    """The dashboard's web dependencies are not installed."""

    def __init__(self, module: str) -> None:
        self.module = module
        super().__init__(f"the dashboard needs {module}, which is not installed: {EXTRA_HINT}")


def run(
    name: str | None,
    host: str,
    port: int,
    open_browser: bool,
    say: Callable[[str], None],
    warn: Callable[[str], None],
) -> None:
    """Serve the dashboard until Ctrl-C; ``say``/``warn`` print for the user."""
    missing = missing_dependency()
    if missing:
        raise MissingExtra(missing)
    from . import server, status_source

    path = "/"
    if name is not None:
        known = [t["name"] for t in status_source.known_topologies()]
        if name not in known:
            raise status_source.UnknownTopology(name, known)
        path = f"/topologies/{name}"
    sock = server.bind(host, port)
    try:
        bound_port = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound_port}{path}"
        if not _loopback(host):
            warn(
                f"warning: listening on {host}: anyone who can reach this machine on port "
                f"{bound_port} sees topology names, hosts and errors (the page is "
                f"read-only, without authentication)"
            )
        say(f"dashboard: {url}   (metrics: http://{shown}:{bound_port}/metrics; Ctrl-C to stop)")
        if open_browser:
            webbrowser.open(url)
        server.serve(sock)
    finally:
        sock.close()


def _loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
