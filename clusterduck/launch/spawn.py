"""How this machine starts a command for ``LocalHost``: the one ``subprocess.Popen`` call.

Pipes on all three streams, and a session of its own, so that a timeout can kill the
command with everything it started (``local._kill_group``). ``LocalHost.run`` starts
commands with it, and so does ``prestart.EarlySupervisor`` for the supervisor it starts
before validation, which ``LocalHost.finish`` then completes as if ``run`` had started
it: the two must not drift apart. Standard library only, so that ``prestart`` can import
it before ``up`` imports anything of weight.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping

__all__ = ["start_piped"]


def start_piped(argv: list[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` with pipes on stdin, stdout and stderr, leading its own session;
    ``env`` None inherits this process's environment. Raises OSError as Popen does."""
    return subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
