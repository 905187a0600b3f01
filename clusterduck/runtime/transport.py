"""ZeroMQ, and nothing else, lives here: sockets, frames, polling, CURVE.

Data travels over DEALER → ROUTER: every worker instance binds one ROUTER socket *per
input component* (so a bundled worker can stop reading an input that runs ahead while it
keeps reading the lagging one), and each upstream instance connects one DEALER socket,
with its ``component/index`` as identity, per downstream instance (so routing — key,
``seq % k``, least loaded — is ours, not ZeroMQ's blind round-robin). The receiver
sends credit back on the same connection (runtime/credit.py says why). The test
collector is a plain PULL fed by PUSH. Control travels over ROUTER/DEALER.

Loss pitfalls handled here: a PUSH socket queues for a peer that is not connected yet
or restarting (we never set ZMQ_IMMEDIATE, so a restarted peer on the same port gets
what was queued); ``wait_connected`` lets a process report ready only once every peer
completed its handshake (the slow joiner); sockets close with a bounded linger that
still flushes in normal operation.

Who sent a frame, with CURVE: every instance has its own keypair (protocol.CurveKeys).
A worker's inbox is a CURVE server under its instance's key; the ZAP handler accepts the
topology's key and every instance's, and sets the connection's ``User-Id`` to the
instance the key belongs to (``TOPOLOGY_USER`` for the topology's own key). Every frame
read from an inbox carries it (``Socket.peer``), so the inbound guard checks the sender a
frame names against the key that sent it, not against a header or a ZeroMQ identity any
peer may choose. A sender's DEALER identity is ``component/index@token``, the token
random per socket: a ROUTER hands a connection over to a newcomer with the same
identity (a sender reconnecting after a network fault takes its route back), and a peer
that does not know the token — only that one receiver ever sees it — cannot take an
instance's route and its credit over. Reading ``User-Id`` costs about 14 µs per frame,
so an inbox remembers it per identity (bounded): a newcomer could only inherit an entry
by reusing an identity, which it would have to know.

Size limits: every socket that receives sets ZMQ_MAXMSGSIZE (per frame) to the limit
the inbound guard documents (``MAX_FRAME_BYTES`` for data, ``MAX_CONTROL_BYTES`` for
control and credit), so a peer cannot make a process allocate a frame it will refuse
anyway: libzmq reads the frame's length, drops that peer's connection and never reads
the body. The peer's socket reconnects by itself; what it had written behind the
oversized frame is lost with that connection. A refused connection is not a frame, so it
is not in ``rejected_frames``: libzmq tells us nothing but "disconnected".
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import zmq

from ..exceptions import ControlTimeout, ProtocolError
from ..protocol import CurveKeys, decode_json
from .inbound import MAX_CONTROL_BYTES, MAX_FRAME_BYTES

if TYPE_CHECKING:  # imported when CURVE is on (a server socket needs it)
    from .zap import MemberAuthenticator

__all__ = [
    "TOPOLOGY_USER",
    "CurveKeys",
    "Requester",
    "Socket",
    "Transport",
    "generate_curve_keys",
    "ipc_path",
    "poll",
    "poll_signals",
    "private_dir",
    "request",
    "wait",
]

log = logging.getLogger("clusterduck.transport")

# High-water marks count frames (batches), not messages: memory stays bounded by
# HWM x batch size per peer, plus kernel socket buffers.
DATA_HWM = 8
# On credit-controlled sockets the credit bounds what is queued; the HWM only has to stay
# out of its way (frames of one message each, up to the largest grant).
FLOW_HWM = 10_000
CONTROL_HWM = 1000
# Linger on close: long enough to flush the last batches and EOS to a live peer,
# bounded so that a process whose peer is gone for good still exits.
DATA_LINGER_MS = 30_000
CONTROL_LINGER_MS = 1000
# CURVE wraps each frame in a MESSAGE command ("\x07MESSAGE", an 8-byte nonce, a 16-byte
# MAC, a flags byte): ZMQ_MAXMSGSIZE sees the wrapped size, 33 bytes above the payload
# (RFC 26; tests/test_transport_limits.py checks the limit is exact with CURVE too).
CURVE_FRAME_OVERHEAD = 33
# Plain ints: the enum members cost a conversion on every call of the hot path.
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
# Parts below this size are copied into libzmq (pyzmq copies them even when asked not
# to, after building a zmq.Frame for nothing); larger ones are sent without a copy.
_COPY_BELOW = zmq.COPY_THRESHOLD
# pyzmq's own send and receive of one part, without its Python layer: send_multipart
# type-checks every part and ORs enum flags per part (enum.Flag arithmetic runs in
# Python), which cost a three-part frame about 11 us against 2.5 us this way; a
# four-part receive costs 9 us instead of 14.
_send_part: Callable[..., object] = zmq.backend.Socket.send
_recv_part: Callable[..., zmq.Frame] = zmq.backend.Socket.recv
# sun_path holds 108 bytes on Linux (104 on macOS), terminator included.
IPC_PATH_MAX = 100


# How many identities an inbox remembers the User-Id of (then it starts over).
PEER_CACHE = 4096
# The User-Id of a connection made with the topology's own key (the CLI, a supervisor,
# the test collector): never an instance name, which always holds a "/".
TOPOLOGY_USER = "(topology)"


def generate_curve_keys(instances: Iterable[str] = ()) -> CurveKeys:
    """The topology's keypair and one keypair per instance (``component/index``)."""
    public, secret = (k.decode("ascii") for k in zmq.curve_keypair())
    members: dict[str, str] = {}
    own: dict[str, str] = {}
    for name in instances:
        members[name], own[name] = (k.decode("ascii") for k in zmq.curve_keypair())
    return CurveKeys(public, secret, members, own)


def _fail_closed(raw: zmq.Socket[bytes]) -> None:
    """Refuse every CURVE client when no ZAP handler answers (tests/test_zap.py).

    By default libzmq lets *any* client in when nothing is bound at the ZAP endpoint
    (our handler thread gone). ``ZMQ_ZAP_ENFORCE_DOMAIN`` refuses instead, but libzmq
    asks ZAP at all only on a socket with a ZAP domain, so both are set."""
    try:
        raw.zap_domain = b"clusterduck"
        raw.zap_enforce_domain = True
    except zmq.ZMQError as exc:
        raise ProtocolError(
            f"libzmq {zmq.zmq_version()} cannot refuse CURVE clients when ZAP is down "
            "(ZMQ_ZAP_ENFORCE_DOMAIN needs libzmq >= 4.3.0): install pyzmq from its wheel, "
            "which bundles a recent libzmq, or upgrade the system libzmq"
        ) from exc


class Socket:
    """A thin wrapper so that callers never touch zmq constants."""

    def __init__(self, raw: zmq.Socket[bytes], endpoint: str, port: int | None = None) -> None:
        self.raw = raw
        self.endpoint = endpoint
        self.port = port
        # A CURVE inbox reads each message with its connection's User-Id (the instance
        # whose key sent it) into ``peer``; None elsewhere.
        self.authenticated = False
        self.peer: str | None = None
        self._peers: dict[bytes, str | None] = {}
        # Handshake monitor, attached before connect() so no event can be missed.
        self.monitor: zmq.Socket[bytes] | None = None
        self._fd: int | None = None
        # Used since it was last found empty (see :func:`wait`): False only while its
        # ZMQ_FD is sure to signal whatever arrives next.
        self.dirty = True

    def send(self, frames: Sequence[bytes], *, block: bool = True) -> bool:
        """Send a multipart message; False when ``block`` is off and the peer is full."""
        self.dirty = True  # sending may process the commands that signal input
        raw, flags = self.raw, 0 if block else _NOBLOCK
        try:
            # libzmq takes the rest of a message once it took its first part.
            for part in frames[:-1]:
                _send_part(raw, part, flags | _SNDMORE, len(part) < _COPY_BELOW, False)
            part = frames[-1]
            _send_part(raw, part, flags, len(part) < _COPY_BELOW, False)
        except zmq.Again:
            return False
        return True

    def recv(self, *, block: bool = True, check: bool = True) -> list[bytes] | None:
        """A multipart message; None when ``block`` is off and nothing is waiting.

        Non-blocking reads ask ZMQ_EVENTS first: most of them find nothing (a loop turn
        looks at every grant and control socket), and the ``zmq.Again`` that an empty
        read raises costs several microseconds of Python exception handling. ``check``
        False skips that question, for a read that will most likely find a message (the
        socket's FD just signalled, see :func:`wait`): each question is two system calls
        in libzmq (a getpid and a poll)."""
        raw = self.raw
        if not block and check and not int(raw.getsockopt(_EVENTS)) & _POLLIN:
            self.dirty = False
            return None
        self.dirty = True
        try:
            if self.authenticated:
                parts = raw.recv_multipart(flags=0 if block else _NOBLOCK, copy=False)
                frames = [part.bytes for part in parts]
                if frames[0] in self._peers:
                    self.peer = self._peers[frames[0]]
                else:
                    user = parts[-1].get("User-Id")
                    self.peer = user if isinstance(user, str) else None
                    if len(self._peers) >= PEER_CACHE:
                        self._peers.clear()
                    self._peers[frames[0]] = self.peer
                return frames
            # Each part as a zmq.Frame, which says whether more follow: getsockopt
            # (RCVMORE) turns its option into an enum first, in Python.
            flags = 0 if block else _NOBLOCK
            part = _recv_part(raw, flags, False)
            message = [part.bytes]
            while part.more:
                part = _recv_part(raw, flags, False)
                message.append(part.bytes)
            return message
        except zmq.Again:
            # libzmq processed the socket's commands before saying so: its FD signals
            # whatever comes next.
            self.dirty = False
            return None

    def has_input(self) -> bool:
        """A message is waiting (never blocks)."""
        waiting = bool(int(self.raw.getsockopt(_EVENTS)) & _POLLIN)
        self.dirty = waiting
        return waiting

    def signal_fd(self) -> int:
        """The socket's ZMQ_FD (see :func:`poll_signals`); read once, then remembered."""
        if self._fd is None:
            self._fd = int(self.raw.getsockopt(zmq.FD))
        return self._fd

    def send_json(self, obj: Any, *, prefix: Sequence[bytes] = ()) -> None:
        self.dirty = True
        self.raw.send_multipart([*prefix, json.dumps(obj).encode()])

    def close(self, linger_ms: int | None = None) -> None:
        self.raw.close(linger=linger_ms)


class Transport:
    """One ZeroMQ context per process, optionally with CURVE on every socket."""

    def __init__(
        self, curve: CurveKeys | None = None, ipc_dir: str | None = None, me: str | None = None
    ) -> None:
        self.context = zmq.Context()
        self.curve = curve
        # Our own keypair: instance ``me``'s in a process, else the topology's.
        self._keypair: tuple[bytes, bytes] | None = None
        if curve is not None:
            if me is not None and me in curve.secrets:
                pair = (curve.members[me], curve.secrets[me])
            elif curve.secret:
                pair = (curve.public, curve.secret)
            else:
                raise ProtocolError(f"no CURVE secret key for {me or 'this process'}")
            self._keypair = (pair[0].encode("ascii"), pair[1].encode("ascii"))
        # Frames on inboxes carry the sending instance (User-Id): only with instance keys.
        self.identifies = curve is not None and bool(curve.members)
        # Private local mode: every bound socket is a file in this 0700 directory, so
        # only the topology's user (and root) can connect (see private_dir).
        self.ipc_dir = ipc_dir
        self._auth: MemberAuthenticator | None = None
        self._sockets: list[Socket] = []

    def _ensure_auth(self) -> None:
        """Servers check every client's key; started lazily, clients need none."""
        if self.curve is not None and self._auth is None:
            from .zap import MemberAuthenticator  # only for CURVE

            users = {self.curve.public: TOPOLOGY_USER}
            users.update({key: name for name, key in self.curve.members.items()})
            self._auth = MemberAuthenticator(self.context, users)
            self._auth.start()

    # -- socket factories --------------------------------------------------------------

    def _make(self, kind: int, *, server: bool, peer: str | None = None) -> zmq.Socket[bytes]:
        """A socket with our keypair; a client checks the server's key: instance
        ``peer``'s (a worker's inbox), else the topology's (control, the collector)."""
        raw = self.context.socket(kind)
        if self.curve is not None and self._keypair is not None:
            raw.curve_publickey, raw.curve_secretkey = self._keypair
            if server:
                self._ensure_auth()
                raw.curve_server = True
                _fail_closed(raw)
            else:
                key = self.curve.public
                if peer is not None and peer in self.curve.members:
                    key = self.curve.members[peer]
                raw.curve_serverkey = key.encode("ascii")
        return raw

    def _limit(self, raw: zmq.Socket[bytes], max_frame: int) -> None:
        """Refuse frames above ``max_frame`` before they are read (set before bind or
        connect: libzmq copies the option into each new connection)."""
        raw.maxmsgsize = max_frame + (CURVE_FRAME_OVERHEAD if self.curve is not None else 0)

    def _bind(
        self,
        raw: zmq.Socket[bytes],
        bind_host: str,
        port: int | None,
        advertise: str,
        name: str,
    ) -> Socket:
        if self.ipc_dir is not None:
            # The same name binds the same path again: a restarted process takes over
            # its predecessor's inbox (libzmq replaces the stale socket file).
            path = ipc_path(self.ipc_dir, name)
            raw.bind(f"ipc://{path}")
            sock = Socket(raw, f"ipc://{path}", None)
        else:
            if port:
                raw.bind(f"tcp://{_bracket(bind_host)}:{port}")
            else:
                port = raw.bind_to_random_port(f"tcp://{_bracket(bind_host)}")
            sock = Socket(raw, f"tcp://{_bracket(advertise)}:{port}", port)
        self._sockets.append(sock)
        return sock

    def pull(
        self,
        bind_host: str,
        advertise: str,
        port: int | None = None,
        *,
        name: str = "inbox",
        max_frame: int = MAX_FRAME_BYTES,
    ) -> Socket:
        """A bound data inbox; ``port`` (tcp) or ``name`` (ipc) re-binds the address a
        crashed predecessor had."""
        raw = self._make(zmq.PULL, server=True)
        # No receive limit: over ipc, libzmq (4.3.x, zeromq/libzmq#4660) drops what a
        # closing peer still had in the socket once this side's queue is at its HWM
        # (the last frames and the end of stream of a finished sink were lost, and the
        # reader waited forever). The only PULL is the test collector, which keeps every
        # result in memory anyway; data inboxes are ROUTERs whose queue credit bounds.
        raw.rcvhwm = 0
        raw.linger = 0
        self._limit(raw, max_frame)
        return self._bind(raw, bind_host, port, advertise, name)

    def push(self, endpoint: str) -> Socket:
        """A data outbox connected to exactly one downstream instance."""
        raw = self._make(zmq.PUSH, server=False)
        raw.sndhwm = DATA_HWM
        raw.linger = DATA_LINGER_MS
        raw.reconnect_ivl = 100
        raw.reconnect_ivl_max = 2000
        sock = Socket(raw, endpoint)
        sock.monitor = raw.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        raw.connect(endpoint)
        self._sockets.append(sock)
        return sock

    def receiver(
        self,
        bind_host: str,
        advertise: str,
        port: int | None = None,
        *,
        name: str = "inbox",
        max_frame: int = MAX_FRAME_BYTES,
    ) -> Socket:
        """A bound data inbox that answers each sender with credit (ROUTER); ``port``
        (tcp) or ``name`` (ipc) re-binds the address a crashed predecessor had."""
        raw = self._make(zmq.ROUTER, server=True)
        raw.rcvhwm = raw.sndhwm = FLOW_HWM
        raw.linger = 0
        raw.router_handover = True  # a reconnecting sender takes its identity back
        self._limit(raw, max_frame)
        sock = self._bind(raw, bind_host, port, advertise, name)
        sock.authenticated = self.identifies
        return sock

    def sender(self, endpoint: str, identity: str, peer: str | None = None) -> Socket:
        """A data outbox to exactly one downstream instance (``peer``, whose key its
        inbox has with CURVE), receiving its credit. The DEALER's identity is
        ``identity@token``, the token random for this socket (module docstring)."""
        raw = self._make(zmq.DEALER, server=False, peer=peer)
        raw.sndhwm = raw.rcvhwm = FLOW_HWM
        raw.linger = DATA_LINGER_MS
        raw.reconnect_ivl = 100
        raw.reconnect_ivl_max = 2000
        # What comes back is credit (a few dozen bytes), bounded like control.
        self._limit(raw, MAX_CONTROL_BYTES)
        # os.urandom is what secrets.token_hex reads (that module costs a start ~1 ms).
        raw.identity = f"{identity}@{os.urandom(8).hex()}".encode()
        sock = Socket(raw, endpoint)
        sock.monitor = raw.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        raw.connect(endpoint)
        self._sockets.append(sock)
        return sock

    def router(
        self, bind_host: str, advertise: str, port: int | None = None, *, name: str = "control"
    ) -> Socket:
        raw = self._make(zmq.ROUTER, server=True)
        raw.sndhwm = raw.rcvhwm = CONTROL_HWM
        raw.linger = CONTROL_LINGER_MS
        raw.router_mandatory = False
        self._limit(raw, MAX_CONTROL_BYTES)
        return self._bind(raw, bind_host, port, advertise, name)

    def dealer(self, endpoint: str, identity: str | None = None) -> Socket:
        raw = self._make(zmq.DEALER, server=False)
        raw.sndhwm = raw.rcvhwm = CONTROL_HWM
        raw.linger = CONTROL_LINGER_MS
        self._limit(raw, MAX_CONTROL_BYTES)
        if identity:
            raw.identity = identity.encode()
        raw.connect(endpoint)
        sock = Socket(raw, endpoint)
        self._sockets.append(sock)
        return sock

    def pair_signal(self, name: str) -> tuple[Socket, Socket]:
        """An inproc wake-up channel between two threads of this process."""
        recv = self.context.socket(zmq.PAIR)
        recv.bind(f"inproc://{name}")
        send = self.context.socket(zmq.PAIR)
        send.connect(f"inproc://{name}")
        pair = (Socket(recv, name), Socket(send, name))
        self._sockets.extend(pair)
        return pair

    @staticmethod
    def poll(
        readers: Iterable[Socket], writers: Iterable[Socket] = (), timeout: float | None = None
    ) -> tuple[set[Socket], set[Socket]]:
        """:func:`poll`, reachable through the transport a loop was given."""
        return poll(readers, writers, timeout)

    @staticmethod
    def wait(readers: Sequence[Socket], timeout: float | None = None) -> list[Socket]:
        """:func:`wait`, reachable through the transport a loop was given."""
        return wait(readers, timeout)

    @staticmethod
    def poll_signals(
        readers: Iterable[Socket], signalling: Iterable[Socket], timeout: float | None = None
    ) -> set[Socket]:
        """:func:`poll_signals`, reachable through the transport a loop was given."""
        return poll_signals(readers, signalling, timeout)

    # -- connection checks -------------------------------------------------------------

    def wait_connected(self, sockets: Iterable[Socket], timeout: float) -> list[Socket]:
        """Block until every pushed socket completed a handshake; return those that did not.

        Monitoring stops afterwards: later reconnects need no watching."""
        monitors = {s: s.monitor for s in sockets if s.monitor is not None}
        waiting = dict(monitors)
        deadline = time.monotonic() + timeout
        poller = zmq.Poller()
        for mon in waiting.values():
            poller.register(mon, zmq.POLLIN)
        while waiting and time.monotonic() < deadline:
            remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
            for mon, _ in poller.poll(remaining_ms):
                # Subscribed to handshakes only, so any event is the one awaited. (Not
                # zmq.utils.monitor: it imports zmq.asyncio, hence asyncio, ~20 ms.)
                mon.recv_multipart()
                for sock, m in list(waiting.items()):
                    if m is mon:
                        del waiting[sock]
                        poller.unregister(mon)
        for sock, mon in monitors.items():
            sock.raw.disable_monitor()
            mon.close(linger=0)
            sock.monitor = None
        return list(waiting)

    def close(self, *, linger_ms: int | None = None) -> None:
        for sock in self._sockets:
            if not sock.raw.closed:
                sock.raw.close(linger=linger_ms)
        if self._auth is not None:
            self._auth.stop()
        self.context.term()


def poll(
    readers: Iterable[Socket], writers: Iterable[Socket] = (), timeout: float | None = None
) -> tuple[set[Socket], set[Socket]]:
    """Wait until some reader has input or some writer has room (timeout in seconds).

    Straight to ``zmq_poll`` rather than through a ``zmq.Poller``: the loops call this
    on every turn, and building and registering a Poller each time cost more than the
    poll itself."""
    flags: dict[Socket, int] = {}
    for sock in readers:
        flags[sock] = _POLLIN
    for sock in writers:
        flags[sock] = flags.get(sock, 0) | _POLLOUT
    ms = -1 if timeout is None else max(0, int(timeout * 1000))
    by_raw: dict[Any, Socket] = {sock.raw: sock for sock in flags}
    readable: set[Socket] = set()
    writable: set[Socket] = set()
    for raw, ev in zmq.zmq_poll([(sock.raw, f) for sock, f in flags.items()], ms):
        if ev & _POLLIN:
            sock = by_raw[raw]
            sock.dirty = True  # zmq_poll took its FD's signal: see wait()
            readable.add(sock)
        if ev & _POLLOUT:
            writable.add(by_raw[raw])
    return readable, writable


def wait(readers: Sequence[Socket], timeout: float | None = None) -> list[Socket]:
    """The readers that may have input: waits up to ``timeout`` (seconds) while none has.

    :func:`poll` for a loop that reads what it is given until the socket is empty (or
    marks it ``dirty``), at a fraction of the system calls: ``zmq_poll`` asks every
    socket for ZMQ_EVENTS before and again after it sleeps, each question a getpid and
    a poll in libzmq, some ten system calls per wake-up of a worker with three sockets.
    Here only a socket used since it was last found empty (``Socket.dirty``) is asked;
    the others' ZMQ_FDs are watched (not waiting when some socket is ready), which
    signal any change once a socket was found empty (an edge: the next reader must read
    until empty); and what they signal comes back unasked, to be read with
    ``recv(check=False)`` (it may still be nothing: a read then finds the socket empty,
    and clean again). Not for sockets another thread may use meanwhile."""
    ready = [sock for sock in readers if sock.dirty and sock.has_input()]
    # The others' FDs are looked at even when some socket is ready (without waiting
    # then): a busy inbox must not hide a grant or a control message.
    by_fd = {sock.signal_fd(): sock for sock in readers if not sock.dirty}
    if not by_fd:
        return ready
    ms = 0 if ready else -1 if timeout is None else max(0, int(timeout * 1000))
    for fd, ev in zmq.zmq_poll([(fd, _POLLIN) for fd in by_fd], ms):
        if ev:
            sock = by_fd[fd]
            sock.dirty = True  # unasked: whoever is given it reads it, or asks next time
            ready.append(sock)
    return ready


def poll_signals(
    readers: Iterable[Socket], signalling: Iterable[Socket], timeout: float | None = None
) -> set[Socket]:
    """Wait until a reader has input or a ``signalling`` socket's state may have changed.

    ``signalling`` sockets are watched through their ZMQ_FD, not polled: ``zmq_poll`` on
    a socket reads its state, which must not happen while another thread uses it (a
    spout thread sending under the I/O loop's lock), while its FD may be watched from
    any thread. The FD is an edge: whoever uses such a socket must read it until empty
    before anyone waits on it again, or a later arrival may wake no one."""
    ms = -1 if timeout is None else max(0, int(timeout * 1000))
    items: list[tuple[Any, int]] = [(sock.raw, _POLLIN) for sock in readers]
    by_key: dict[Any, Socket] = {sock.raw: sock for sock in readers}
    for sock in signalling:
        fd = sock.signal_fd()
        items.append((fd, _POLLIN))
        by_key[fd] = sock
    return {by_key[key] for key, ev in zmq.zmq_poll(items, ms) if ev & _POLLIN}


def request(
    endpoint: str,
    message: dict[str, Any],
    *,
    timeout: float = 5.0,
    curve: CurveKeys | None = None,
) -> dict[str, Any]:
    """One JSON request to a ROUTER control socket; raises ControlTimeout.

    A context of its own each time: callers are threads of the CLI and the supervisor,
    and a request is rare enough (a status poll) that the millisecond does not matter."""
    tr = Transport(curve)
    sock = tr.dealer(endpoint)
    try:
        sock.send_json(message, prefix=[b""])
        if not sock.raw.poll(int(timeout * 1000)):
            raise ControlTimeout(endpoint, str(message.get("op")), timeout)
        frames = sock.raw.recv_multipart()
        return decode_json(frames[-1])
    finally:
        tr.close(linger_ms=0)


class Requester:
    """Control requests over one connection per endpoint, kept for the next request.

    A new connection costs a context, a CURVE handshake and a ZAP round on the server:
    about 3 ms of CPU on the two sides, where a request on an open one costs 0.3 ms.
    ``up`` asks every supervisor three times, ``down`` more (issue 12: CPU per host).
    Thread-safe: a request takes its endpoint's socket out while it runs (requests to the
    same endpoint at once get a socket each). A socket whose request failed or timed out
    is closed, so a late answer is never read as the next request's."""

    def __init__(self, curve: CurveKeys | None = None) -> None:
        self.curve = curve
        self._transport: Transport | None = None
        self._idle: dict[str, list[Socket]] = {}
        # Requests running per transport: ``close`` never closes a socket another thread
        # is still polling (ZeroMQ sockets are not thread-safe); the last request does.
        self._busy: dict[Transport, int] = {}
        self._lock = threading.Lock()

    def request(
        self, endpoint: str, message: dict[str, Any], *, timeout: float = 5.0
    ) -> dict[str, Any]:
        """One JSON request, as :func:`request`; raises ControlTimeout."""
        with self._lock:
            if self._transport is None:
                self._transport = Transport(self.curve)
            transport = self._transport
            self._busy[transport] = self._busy.get(transport, 0) + 1
            idle = self._idle.get(endpoint)
            sock = idle.pop() if idle else transport.dealer(endpoint)
        answered = False
        try:
            sock.send_json(message, prefix=[b""])
            if not sock.raw.poll(int(timeout * 1000)):
                raise ControlTimeout(endpoint, str(message.get("op")), timeout)
            frames = sock.raw.recv_multipart()
            answered = True
        finally:
            self._give_back(transport, endpoint, sock, answered)
        return decode_json(frames[-1])

    def _give_back(self, transport: Transport, endpoint: str, sock: Socket, keep: bool) -> None:
        """Keep ``sock`` for the next request, or close it (failed, timed out, or the
        requester was closed meanwhile: then the last request closes the transport)."""
        with self._lock:
            self._busy[transport] -= 1
            last = not self._busy[transport]
            if last:
                del self._busy[transport]
            current = transport is self._transport
            if current and keep:
                self._idle.setdefault(endpoint, []).append(sock)
                return
        sock.close(linger_ms=0)
        if not current and last:
            transport.close(linger_ms=0)

    def close(self) -> None:
        with self._lock:
            transport, self._transport = self._transport, None
            self._idle.clear()
            busy = transport is not None and transport in self._busy
        if transport is not None and not busy:
            transport.close(linger_ms=0)


def private_dir(topology: str) -> str:
    """A new directory only this user can enter (mode 0700, from mkdtemp) for a local
    topology's ipc sockets. Under the temporary directory rather than the run directory:
    a unix socket path must stay under ~100 bytes, and $CLUSTERDUCK_HOME can be long."""
    return tempfile.mkdtemp(prefix=f"clusterduck-{topology[:24]}-")


def ipc_path(directory: str, name: str) -> str:
    """``directory/name``, with a digest for a name that would overflow sun_path."""
    path = os.path.join(directory, name)
    if len(path) > IPC_PATH_MAX:
        import hashlib  # rare: loads OpenSSL (~3 ms at every start when imported above)

        path = os.path.join(directory, hashlib.sha1(name.encode()).hexdigest()[:16])
    return path


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
