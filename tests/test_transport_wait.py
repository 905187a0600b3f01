"""``transport.wait`` on real sockets: the ZMQ_FD edges and the sockets' ``dirty`` flags
never lose a wake-up, whatever the reader does between two waits (reads part of a burst,
reads without asking first, sends on the socket it just read).

A worker sleeps on its sockets' file descriptors, which signal an edge only once a
socket was found empty: a lost edge is a worker asleep on messages it already holds.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import pytest
import zmq

from clusterduck.runtime.transport import Socket, wait

MESSAGES = 5_000
NOTHING_FOR = 10.0  # seconds without anything ready: a lost wake-up (a hang), not slowness


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


def _bound(ctx: zmq.Context[zmq.Socket[bytes]], kind: int) -> tuple[zmq.Socket[bytes], str]:
    sock = ctx.socket(kind)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    return sock, f"tcp://127.0.0.1:{port}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_wait_never_sleeps_on_messages_a_socket_holds(
    ctx: zmq.Context[zmq.Socket[bytes]], seed: int
) -> None:
    # The reader's three sockets, as a worker has them: an inbox (ROUTER), the socket
    # its downstream grants arrive on (DEALER) and its control socket (DEALER).
    raw_inbox, inbox_at = _bound(ctx, zmq.ROUTER)
    grants_from, grants_at = _bound(ctx, zmq.ROUTER)
    control_from, control_at = _bound(ctx, zmq.ROUTER)
    inbox = Socket(raw_inbox, inbox_at)
    grants = Socket(ctx.socket(zmq.DEALER), grants_at)
    grants.raw.connect(grants_at)
    control = Socket(ctx.socket(zmq.DEALER), control_at)
    control.raw.connect(control_at)
    upstream = ctx.socket(zmq.DEALER)
    upstream.connect(inbox_at)
    # The far ends learn the reader's identities from a first message.
    grants.send((b"hello",))
    control.send((b"hello",))
    grant_peer = grants_from.recv_multipart()[0]
    control_peer = control_from.recv_multipart()[0]
    finished = threading.Event()
    sent = {"data": 0, "other": 0}

    def produce() -> None:
        pick = random.Random(seed)
        for i in range(MESSAGES):
            roll = pick.random()
            if roll < 0.7:
                upstream.send_multipart([b"D", b"x" * pick.choice([1, 100, 5000])])
                sent["data"] += 1
                continue
            sent["other"] += 1
            if roll < 0.9:
                grants_from.send_multipart([grant_peer, b"G%d" % i])
            else:
                control_from.send_multipart([control_peer, b"C%d" % i])
        upstream.send_multipart([b"END", b""])
        grants_from.send_multipart([grant_peer, b"END"])
        control_from.send_multipart([control_peer, b"END"])
        finished.wait(60)  # keep the sockets open until everything was read

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    pick = random.Random(seed + 100)
    got = {"data": 0, "other": 0}
    ended: set[int] = set()
    try:
        while len(ended) < 3:
            ready = wait([control, inbox, grants], timeout=NOTHING_FOR)
            assert ready, (
                f"nothing ready for {NOTHING_FOR} s with {got} read and "
                f"{[inbox.has_input(), grants.has_input(), control.has_input()]} waiting"
            )
            for sock in ready:
                if sock is inbox:
                    # Part of a burst; the first read without asking (wait answered),
                    # sometimes a send on the inbox between two reads.
                    check = False
                    for _ in range(pick.choice([1, 2, 16])):
                        frames = sock.recv(block=False, check=check)
                        check = True
                        if frames is None:
                            break
                        if frames[1] == b"END":
                            ended.add(id(sock))
                            continue
                        got["data"] += 1
                        if pick.random() < 0.3:
                            sock.send((frames[0], b"grant"), block=False)
                else:
                    while (frames := sock.recv(block=False)) is not None:
                        if frames[-1] == b"END":
                            ended.add(id(sock))
                        else:
                            got["other"] += 1
                    if pick.random() < 0.3:
                        sock.send((b"report",), block=False)  # a send after reading
    finally:
        finished.set()
        producer.join(10)
    assert got == sent
