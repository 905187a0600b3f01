"""The interface every way of reaching a host implements.

``local.LocalHost`` runs commands as subprocesses of this machine; ``ssh.SSHHost``
(the only paramiko user) runs them over one SSH connection per host. The orchestrator
speaks only this interface, so starting, stopping and reading logs look the same for
``localhost`` and for a machine across the network.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = ["CommandResult", "HostConnection", "ShipReport", "SHIP_EXCLUDES"]

# Never shipped with `code`: version control, caches and virtualenvs.
SHIP_EXCLUDES = (
    ".git",
    "__pycache__",
    ".venv",
    "venv",
    ".tox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "*.pyc",
    ".hypothesis",
    "env",
)


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class ShipReport:
    sent: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)


class HostConnection(Protocol):
    """One host, reached however it is reached."""

    name: str

    def connect(self) -> None:
        """Open the connection (idempotent); raise a LaunchError subclass naming the host."""

    def run(
        self,
        argv: list[str],
        *,
        stdin: bytes = b"",
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> CommandResult:
        """Run a command to completion (argv is quoted for the remote shell)."""

    def ship(self, local_dir: Path, remote_dir: str) -> ShipReport:
        """Make ``remote_dir`` a copy of ``local_dir`` (minus SHIP_EXCLUDES), sending changes."""

    def read_file(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""

    def follow(self, argv: list[str]) -> Iterator[str]:
        """Stream a long-running command's stdout lines (``tail -F``) until closed."""

    def close(self) -> None:
        """Release the connection."""
