"""ZAP for CURVE connections: who may connect, and what their frames' ``User-Id`` says.

ZAP (ZeroMQ RFC 27) is a REP socket at ``inproc://zeromq.zap.01`` in the context of the
server sockets: libzmq asks it about every new connection and waits for the answer. This
is the whole handler: a thread answering from a dict of known public keys. pyzmq's
``ThreadAuthenticator`` does the same through an asyncio loop, and importing asyncio
cost every supervisor about 30 ms of CPU at each start (issue 12).

Answers: a CURVE client whose public key is the topology's or an instance's is accepted
(``200``) and its connection's ``User-Id`` is the name that key belongs to; any other key
is refused (``400``). NULL connections are accepted as ``anonymous``, as pyzmq's
authenticator does (a CURVE server socket never has one). Anything else is refused.
When this thread is gone, libzmq refuses every client: the server sockets set a ZAP
domain and ``ZMQ_ZAP_ENFORCE_DOMAIN`` (transport.py).
"""

from __future__ import annotations

import logging
import threading

import zmq
from zmq.utils import z85

__all__ = ["MemberAuthenticator", "ZAP_ENDPOINT"]

log = logging.getLogger("clusterduck.transport")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_VERSION = b"1.0"


class MemberAuthenticator:
    """Accept a CURVE client only if it holds one of the topology's public keys, and name
    the connection (its frames' ``User-Id``) after whose key it is."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], users: dict[str, str]) -> None:
        self.context = context
        self._users = dict(users)  # z85 public key -> user id
        self._pipe: zmq.Socket[bytes] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind the ZAP socket (before any server socket exists) and answer in a thread."""
        zap = self.context.socket(zmq.REP)
        zap.linger = 1
        zap.bind(ZAP_ENDPOINT)
        endpoint = f"inproc://clusterduck-zap-{id(self)}"
        self._pipe = self.context.socket(zmq.PAIR)
        self._pipe.linger = 1
        self._pipe.bind(endpoint)
        stop = self.context.socket(zmq.PAIR)
        stop.linger = 1
        stop.connect(endpoint)
        self._thread = threading.Thread(
            target=self._serve, args=(zap, stop), name="clusterduck-zap", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """End the thread; its sockets are closed before the context is terminated."""
        if self._pipe is None:
            return
        self._pipe.send(b"TERMINATE")
        if self._thread is not None:
            self._thread.join()
        self._pipe.close()
        self._pipe = None
        self._thread = None

    def _serve(self, zap: zmq.Socket[bytes], stop: zmq.Socket[bytes]) -> None:
        poller = zmq.Poller()
        poller.register(zap, zmq.POLLIN)
        poller.register(stop, zmq.POLLIN)
        try:
            while True:
                events = dict(poller.poll())
                if stop in events:
                    return
                if zap in events:
                    zap.send_multipart(self.answer(zap.recv_multipart()))
        except BaseException:
            # Fail closed: the server sockets enforce their ZAP domain (transport.py),
            # so without this thread every new connection is refused; say so.
            log.exception("the ZAP handler stopped: new CURVE connections are refused")
            raise
        finally:
            zap.close()
            stop.close()

    def answer(self, msg: list[bytes]) -> list[bytes]:
        """The ZAP reply to one request: ``[version, request id, status, text, user id,
        metadata]``."""
        if len(msg) < 6 or msg[0] != _VERSION:
            request_id = msg[1] if len(msg) > 1 else b""
            return [_VERSION, request_id, b"400", b"malformed ZAP request", b"", b""]
        request_id, mechanism, credentials = msg[1], msg[5], msg[6:]
        if mechanism == b"NULL":
            return [_VERSION, request_id, b"200", b"OK", b"anonymous", b""]
        if mechanism == b"CURVE" and len(credentials) == 1 and len(credentials[0]) == 32:
            user = self._users.get(z85.encode(credentials[0]).decode("ascii"))
            if user is not None:
                return [_VERSION, request_id, b"200", b"OK", user.encode(), b""]
            log.warning("refused a connection from a peer without the topology's keys")
            return [_VERSION, request_id, b"400", b"Unknown key", b"", b""]
        return [_VERSION, request_id, b"400", b"mechanism not allowed", b"", b""]
