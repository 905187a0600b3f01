"""A rogue peer, run as another local user (tests/test_security.py) or from another host
(tests/test_security_multihost.py), with the system python: clusterduck is not imported.

    python rogue_peer.py DATA_ENDPOINT CONTROL_ENDPOINT MARKER
    ROGUE_CURVE='{"server": Z85, "data_server": Z85, "public": Z85, "secret": Z85}' \
        python rogue_peer.py ...

Sends what broke clusterduck before issue 10 to a worker's data inbox (a ROUTER: it
connects a DEALER named like the spout, ``ROGUE_IDENTITY``, default ``numbers/0``) — a
pickle that creates MARKER when loaded, and a non-UTF-8 end of stream — and non-JSON
control frames to a supervisor's control socket, then prints one JSON line saying what it
could do: whether a control request got an answer, and the error of any ipc path it
could not reach. With ROGUE_CURVE it is a CurveZMQ client with those keys (another
topology's, say)."""

from __future__ import annotations

import json
import os
import pickle
import struct
import sys

import zmq


class Payload:
    """Loading this pickle opens MARKER for writing: it runs code as the loader."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def reach(endpoint: str) -> str | None:
    """For ipc: why this user cannot open the socket file (None: it can)."""
    if not endpoint.startswith("ipc://"):
        return None
    try:
        os.stat(endpoint[len("ipc://") :])
    except OSError as exc:
        return type(exc).__name__
    return None


def socket(
    ctx: zmq.Context[zmq.Socket[bytes]], kind: int, *, data: bool = False
) -> zmq.Socket[bytes]:
    """With ROGUE_CURVE, a CURVE client; a worker's inbox has its instance's own key
    (``data_server``), a control socket the topology's (``server``)."""
    sock = ctx.socket(kind)
    keys = json.loads(os.environ.get("ROGUE_CURVE") or "null")
    if keys:
        server = keys.get("data_server", keys["server"]) if data else keys["server"]
        sock.curve_serverkey = server.encode()
        sock.curve_publickey = keys["public"].encode()
        sock.curve_secretkey = keys["secret"].encode()
    return sock


def main() -> int:
    data, control, marker = sys.argv[1:4]
    identity = os.environ.get("ROGUE_IDENTITY", "numbers/0")
    evil = pickle.dumps(Payload(marker))
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = socket(ctx, zmq.DEALER, data=True)
    dealer.identity = identity.encode()
    dealer.connect(data)
    one = struct.pack("<q", 1 << 40)
    for frames in ([b"D" + identity.encode(), evil, one], [b"E\xff\xfe"]):
        try:
            dealer.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            pass
    ctl = socket(ctx, zmq.DEALER)
    ctl.connect(control)
    for frames in ([b"", b"\xff\xfe not json"], [b"", evil], [b"", b'{"op": "status"}']):
        try:
            ctl.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            pass
    answered = bool(ctl.poll(2000))
    dealer.close(linger=2000)
    ctl.close(linger=0)
    ctx.term()
    print(
        json.dumps(
            {
                "control_answered": answered,
                "data_unreachable": reach(data),
                "control_unreachable": reach(control),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
