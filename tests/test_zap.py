"""CURVE servers fail closed: a client is let in only on our ZAP handler's say-so.

libzmq asks the handler bound at ``inproc://zeromq.zap.01`` about every CURVE client.
If nothing is bound there (our handler thread is gone), libzmq by default lets *any*
client in, for the "Stonehouse" pattern; ``ZMQ_ZAP_ENFORCE_DOMAIN`` makes it refuse
instead. These tests watch the server socket's handshake events on real sockets."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from clusterduck.runtime.transport import Socket, Transport, generate_curve_keys

HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)


@pytest.fixture
def server() -> Iterator[tuple[Transport, Socket]]:
    keys = generate_curve_keys(["sink/0", "src/0"])
    transport = Transport(keys, me="sink/0")
    inbox = transport.receiver("127.0.0.1", "127.0.0.1")
    yield transport, inbox
    transport.close(linger_ms=0)


def first_handshake(transport: Transport, inbox: Socket, public: str, secret: str) -> int:
    """Connect a DEALER with this keypair to the inbox, send a frame, and return the
    first handshake event the server reports (polled with a deadline, never slept)."""
    # An address of its own: pyzmq's default (per file descriptor) may still be held
    # by the previous call's monitor, which libzmq releases asynchronously.
    address = f"inproc://zap-test-monitor-{time.monotonic_ns()}"
    monitor = inbox.raw.get_monitor_socket(HANDSHAKE_EVENTS, addr=address)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        client = ctx.socket(zmq.DEALER)
        client.linger = 0
        assert transport.curve is not None
        client.curve_serverkey = transport.curve.members["sink/0"].encode()
        client.curve_publickey = public.encode()
        client.curve_secretkey = secret.encode()
        assert inbox.endpoint is not None
        client.connect(inbox.endpoint)
        client.send(b"hello")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if monitor.poll(100):
                event = recv_monitor_message(monitor)["event"]
                if event & HANDSHAKE_EVENTS:
                    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                        # Take the accepted client's frame, so the next call starts empty.
                        assert inbox.raw.poll(30_000), "accepted, but its frame never came"
                        frames = inbox.recv()
                        assert frames is not None and frames[-1] == b"hello"
                    else:
                        assert inbox.recv(block=False) is None
                    return int(event)
        raise AssertionError("the server reported no handshake within 30 s")
    finally:
        ctx.destroy(linger=0)
        inbox.raw.disable_monitor()
        monitor.close(linger=0)


def test_a_member_key_is_accepted_and_an_unknown_key_refused(
    server: tuple[Transport, Socket],
) -> None:
    transport, inbox = server
    assert transport.curve is not None
    member = (transport.curve.members["src/0"], transport.curve.secrets["src/0"])
    assert first_handshake(transport, inbox, *member) == zmq.EVENT_HANDSHAKE_SUCCEEDED
    stranger = tuple(k.decode() for k in zmq.curve_keypair())
    assert first_handshake(transport, inbox, *stranger) == zmq.EVENT_HANDSHAKE_FAILED_AUTH


def test_without_a_zap_handler_every_client_is_refused(
    server: tuple[Transport, Socket],
) -> None:
    """Our handler thread gone (its socket closed, nothing bound at the ZAP endpoint):
    libzmq must not fall back to accepting any client, not even a member."""
    transport, inbox = server
    assert transport._auth is not None
    transport._auth.stop()
    assert transport.curve is not None
    stranger = tuple(k.decode() for k in zmq.curve_keypair())
    assert first_handshake(transport, inbox, *stranger) == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    member = (transport.curve.members["src/0"], transport.curve.secrets["src/0"])
    assert first_handshake(transport, inbox, *member) == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
