"""ZAP for CURVE connections: who may connect, and what their frames' ``User-Id`` says.

Its own module because ``zmq.auth.thread`` imports asyncio (~40 ms): only processes of a
topology that uses CURVE import it.
"""

from __future__ import annotations

import logging

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

__all__ = ["MemberAuthenticator"]

log = logging.getLogger("clusterduck.transport")


class MemberAuthenticator(ThreadAuthenticator):
    """Accept a CURVE client only if it holds one of the topology's public keys, and name
    the connection (its frames' ``User-Id``) after whose key it is."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], users: dict[str, str]) -> None:
        super().__init__(context, log=log)
        self._users = dict(users)  # z85 public key -> user id

    def callback(self, domain: str, key: bytes | str) -> bool:
        if isinstance(key, bytes):
            key = key.decode("ascii", "replace")
        ok = key in self._users
        if not ok:
            log.warning("refused a connection from a peer without the topology's keys")
        return ok

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self._users[z85.encode(client_public_key).decode("ascii")]
