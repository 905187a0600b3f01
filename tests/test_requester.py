"""transport.Requester: control requests reuse one connection per endpoint, and a
request that timed out never hands its late answer to the next one."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from clusterduck.exceptions import ControlTimeout
from clusterduck.protocol import CurveKeys
from clusterduck.runtime.transport import Requester, Socket, Transport, generate_curve_keys, poll


class Server:
    """A CURVE control ROUTER answering each request with its number and the identity
    of the connection it came on (unless told to hold the answer)."""

    def __init__(self, keys: CurveKeys | None) -> None:
        self.transport = Transport(keys)
        self.sock: Socket = self.transport.router("127.0.0.1", "127.0.0.1")
        self.identities: list[bytes] = []
        self.held: list[list[bytes]] = []
        self.hold = False
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop.is_set():
            readable, _ = poll([self.sock], timeout=0.02)
            with self.lock:
                if self.sock in readable:
                    frames = self.sock.recv()
                    assert frames is not None
                    self.identities.append(frames[0])
                    if self.hold:
                        self.held.append(frames)
                        continue
                    self.answer(frames)

    def answer(self, frames: list[bytes]) -> None:
        n = len(self.identities)
        self.sock.send_json({"n": n, "id": frames[0].hex()}, prefix=[frames[0], b""])

    def release(self) -> None:
        with self.lock:
            self.hold = False
            for frames in self.held:
                self.sock.send_json({"late": True}, prefix=[frames[0], b""])
            self.held.clear()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.transport.close(linger_ms=0)


@pytest.fixture
def keys() -> CurveKeys:
    return generate_curve_keys(["w/0"])


@pytest.fixture
def server(keys: CurveKeys) -> Iterator[Server]:
    srv = Server(keys)
    yield srv
    srv.close()


def test_requests_to_one_endpoint_share_one_connection(server: Server, keys: CurveKeys) -> None:
    requester = Requester(keys)
    try:
        answers = [requester.request(server.sock.endpoint, {"op": "status"}) for _ in range(3)]
    finally:
        requester.close()
    assert [a["n"] for a in answers] == [1, 2, 3]
    assert len(set(server.identities)) == 1, server.identities


def test_a_timed_out_request_does_not_answer_the_next(server: Server, keys: CurveKeys) -> None:
    requester = Requester(keys)
    try:
        requester.request(server.sock.endpoint, {"op": "status"})
        server.hold = True
        with pytest.raises(ControlTimeout):
            requester.request(server.sock.endpoint, {"op": "spawn"}, timeout=0.2)
        server.release()  # the late answer goes to a connection that is closed
        answer = requester.request(server.sock.endpoint, {"op": "status"})
    finally:
        requester.close()
    assert "late" not in answer
    assert answer["n"] == 3
    # the connection that timed out was dropped: the third request came on a new one
    assert server.identities[0] == server.identities[1] != server.identities[2]


def test_a_requester_without_curve_talks_to_a_plain_server() -> None:
    srv = Server(None)
    requester = Requester(None)
    try:
        assert requester.request(srv.sock.endpoint, {"op": "status"})["n"] == 1
    finally:
        requester.close()
        srv.close()
