"""Transport, with real sockets. ZMQ_MAXMSGSIZE on receiving sockets: a frame above the
limit is refused by libzmq before it is read (the peer's connection is dropped and it
reconnects), a frame at the limit still arrives, with and without CURVE, over tcp and
ipc. Sender identities carry a token nobody else knows; with CURVE an inbox names each
message's sending instance (User-Id)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from clusterduck.protocol import data_header, pack_count
from clusterduck.runtime.transport import Socket, Transport, generate_curve_keys

LIMIT = 4096


@pytest.fixture(params=["tcp", "ipc", "curve"])
def transport(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Transport]:
    kind = request.param
    tr = Transport(
        generate_curve_keys() if kind == "curve" else None,
        ipc_dir=str(tmp_path) if kind == "ipc" else None,
    )
    yield tr
    tr.close(linger_ms=0)


def receive(sock: Socket, timeout: float = 5.0) -> list[bytes] | None:
    """The next message on ``sock`` within ``timeout`` seconds, or None."""
    if not sock.raw.poll(int(timeout * 1000)):
        return None
    return sock.recv(block=False)


def wait_event(monitor: zmq.Socket[bytes], event: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if monitor.poll(100) and recv_monitor_message(monitor)["event"] == event:
            return
    raise AssertionError(f"no monitor event {event} within {timeout}s")


def test_frames_at_the_limit_arrive_and_a_larger_one_drops_only_its_connection(
    transport: Transport,
) -> None:
    inbox = transport.receiver("127.0.0.1", "127.0.0.1", name="inbox", max_frame=LIMIT)
    legit = transport.sender(inbox.endpoint, "numbers/0")
    rogue = transport.sender(inbox.endpoint, "numbers/1")
    assert transport.wait_connected([legit, rogue], 10) == []
    events = rogue.raw.get_monitor_socket(
        zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED, addr="inproc://rogue-events"
    )
    try:
        header = data_header("numbers", 0)

        at_limit = b"x" * LIMIT
        legit.send((header, at_limit, pack_count(1)))
        got = receive(inbox)
        assert got is not None and got[2] == at_limit

        rogue.send((data_header("numbers", 1), b"y" * (LIMIT + 1), pack_count(1)))
        wait_event(events, zmq.EVENT_DISCONNECTED)  # libzmq dropped the rogue's connection
        wait_event(events, zmq.EVENT_HANDSHAKE_SUCCEEDED)  # and it came back by itself
        legit.send((header, b"after", pack_count(2)))
        rogue.send((data_header("numbers", 1), b"small", pack_count(2)))
        seen = sorted(bytes(m[2]) for m in iter(lambda: receive(inbox, 2.0), None))
        assert seen == [b"after", b"small"]  # the oversized frame never arrived
    finally:
        events.close(linger=0)


def test_control_sockets_refuse_frames_above_the_control_limit(tmp_path: Path) -> None:
    from clusterduck.runtime.inbound import MAX_CONTROL_BYTES

    tr = Transport(ipc_dir=str(tmp_path))
    try:
        router = tr.router("127.0.0.1", "127.0.0.1", name="control")
        assert router.raw.maxmsgsize == MAX_CONTROL_BYTES
        dealer = tr.dealer(router.endpoint)
        dealer.send((b"", b"z" * (MAX_CONTROL_BYTES + 1)))
        dealer.send((b"", b"{}"))
        got = receive(router)
        assert got is not None and got[-1] == b"{}"
    finally:
        tr.close(linger_ms=0)


def test_senders_are_named_with_a_token_and_curve_inboxes_know_the_sending_instance() -> None:
    keys = generate_curve_keys(["a/0", "a/1", "b/0"])
    inbound = Transport(keys.for_instance("b/0"), me="b/0")
    outbound = [Transport(keys.for_instance(n), me=n) for n in ("a/0", "a/1")]
    admin = Transport(keys)  # the topology's own key: a member, but no instance
    try:
        inbox = inbound.receiver("127.0.0.1", "127.0.0.1", name="inbox")
        senders = [tr.sender(inbox.endpoint, f"a/{i}", "b/0") for i, tr in enumerate(outbound)]
        senders.append(admin.sender(inbox.endpoint, "a/0", "b/0"))
        assert all(
            tr.wait_connected([s], 10) == []
            for tr, s in zip([*outbound, admin], senders, strict=True)
        )
        identities = [bytes(s.raw.identity) for s in senders]
        assert len(set(identities)) == 3
        assert [i.rpartition(b"@")[0] for i in identities] == [b"a/0", b"a/1", b"a/0"]
        seen = []
        for _ in range(2):  # the second time from the inbox's memory of each peer
            for sock in senders:
                sock.send((data_header("a", 0), b"x", pack_count(1)))
                got = receive(inbox)
                assert got is not None
                seen.append((got[0], inbox.peer))
        expected = list(zip(identities, ["a/0", "a/1", "(topology)"], strict=True))
        assert seen == expected * 2
    finally:
        for tr in (inbound, *outbound, admin):
            tr.close(linger_ms=0)
