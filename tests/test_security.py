"""Issue 10: a running local topology against a rogue peer, hostile frames and key leaks.

The topology (``tests/topologies/gated.yaml``) sends half its stream, then waits for the
test to open a gate: every attack happens mid-stream, and the test then checks that the
stream still arrives exact and that no process died.
"""

from __future__ import annotations

import json
import os
import pickle
import pwd
import shutil
import stat
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zmq.utils.monitor import recv_monitor_message

from clusterduck import deploy
from clusterduck.loader import load
from clusterduck.protocol import (
    InstanceStatus,
    State,
    TopologyStatus,
    data_part,
    pack_count,
)
from clusterduck.runtime.codec import get_codec
from clusterduck.runtime.inbound import MAX_FRAME_BYTES, InboundGuard, Rejections
from clusterduck.state import TopologyRecord, load_all
from clusterduck.testing import TopologyResult, run_processes
from tests.lifecycle_fixtures import wait_until

HERE = Path(__file__).resolve().parent
TOPOLOGIES = HERE / "topologies"
ROGUE = HERE / "rogue_peer.py"
ROGUE_USER = "cdrogue"
ROGUE_PYTHON = "/usr/bin/python3"
N = 400
TIMEOUT = 120.0


@dataclass
class Live:
    """A gated topology running in a thread of this test."""

    home: Path
    gate: Path
    thread: threading.Thread
    outcome: dict[str, Any] = field(default_factory=dict)

    @property
    def record(self) -> TopologyRecord:
        (record,) = load_all()
        return record

    def status(self) -> TopologyStatus:
        cluster = deploy.Cluster(self.record)
        try:
            return cluster.status()
        finally:
            cluster.close()

    def relay(self) -> InstanceStatus:
        return self.status().component("relay").instances[0]

    def kill(self) -> None:
        """Stop the topology now (``down --force``); the run in the thread then ends."""
        cluster = deploy.Cluster(self.record)
        try:
            cluster.stop(timeout=5, force=True)
        finally:
            cluster.close()

    def open_gate_and_finish(self) -> TopologyResult:
        self.gate.touch()
        self.thread.join(TIMEOUT + 10)
        assert not self.thread.is_alive(), "the topology did not finish"
        if "error" in self.outcome:
            raise self.outcome["error"]
        result: TopologyResult = self.outcome["result"]
        assert result.status.state is State.FINISHED, result.status
        return result


@contextmanager
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, security: str) -> Iterator[Live]:
    home, gate = tmp_path / "home", tmp_path / "gate"
    monkeypatch.setenv("CLUSTERDUCK_HOME", str(home))
    tf = load(
        TOPOLOGIES / "gated.yaml", environ={**os.environ, "GATE": str(gate), "SECURITY": security}
    )
    live = Live(home, gate, threading.Thread(target=lambda: None))

    def body() -> None:
        try:
            live.outcome["result"] = run_processes(tf, timeout=TIMEOUT, home=home)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            live.outcome["error"] = exc

    live.thread = threading.Thread(target=body, daemon=True)
    live.thread.start()
    try:
        wait_until(lambda: _ready(live), TIMEOUT, 0.1, "the relay to run")
        yield live
    finally:
        gate.touch()  # never leave the spout waiting
        live.thread.join(TIMEOUT + 10)


def _ready(live: Live) -> bool:
    if "error" in live.outcome:
        raise live.outcome["error"]
    if not (live.home / "topologies" / "gated" / "state.json").exists():
        return False
    try:
        row = live.relay()
    except (ValueError, KeyError, OSError):
        return False
    return row.state is State.RUNNING and bool(row.endpoint) and row.received >= N // 2


def exact(result: TopologyResult) -> None:
    assert sorted(result.values("relay")) == list(range(N))


def no_restarts(result: TopologyResult) -> None:
    for row in result.status.instances():
        assert row.restarts == 0 and row.state is State.FINISHED, row


def relay_counts(live: Live, expected: dict[str, int]) -> None:
    """Wait until the relay counted exactly ``expected`` rejected frames (else say what
    it counted)."""
    seen: list[dict[str, int]] = [{}]

    def counted() -> bool:
        seen[0] = dict(live.relay().rejected_frames)
        return seen[0] == expected

    try:
        wait_until(counted, 60, 0.1, f"the relay to count {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; it counted {seen[0]}") from None


def finished_exact(live: Live, expected: dict[str, int]) -> None:
    """Open the gate: the stream arrives exact (nothing forged in it), nothing restarted,
    and the relay's final counts are ``expected``."""
    result = live.open_gate_and_finish()
    exact(result)
    no_restarts(result)
    assert result.status.component("relay").instances[0].rejected_frames == expected


# ---------------------------------------------------------------------- another local user


@pytest.fixture(scope="module")
def rogue_user() -> str:
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("runuser"):
        pytest.skip("needs root, useradd and runuser to act as another local user")
    probe = subprocess.run([ROGUE_PYTHON, "-c", "import zmq"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{ROGUE_PYTHON} cannot import zmq (apt-get install python3-zmq)")
    try:
        pwd.getpwnam(ROGUE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", ROGUE_USER], check=True)
    return ROGUE_USER


def attack_as(user: str, data: str, control: str, marker: Path) -> dict[str, Any]:
    """Run tests/rogue_peer.py as ``user`` with the system python (this venv may live in
    a home the other user cannot enter; the script goes in on stdin for the same reason)."""
    out = subprocess.run(
        ["runuser", "-u", user, "--", ROGUE_PYTHON, "-", data, control, str(marker)],
        input=ROGUE.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_another_local_user_cannot_feed_pickles_or_control_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rogue_user: str
) -> None:
    marker = tmp_path / "pwned"
    with running(tmp_path, monkeypatch, "auto") as live:
        data = live.relay().endpoint
        control = live.record.hosts["localhost"].control
        assert data is not None and data.startswith("ipc://") and control.startswith("ipc://")
        ipc_dir = live.record.hosts["localhost"].ipc_dir
        assert stat.S_IMODE(os.stat(ipc_dir).st_mode) == 0o700
        seen = attack_as(rogue_user, data, control, marker)
        result = live.open_gate_and_finish()
    assert seen == {
        "control_answered": False,
        "data_unreachable": "PermissionError",
        "control_unreachable": "PermissionError",
    }
    assert not marker.exists()
    exact(result)
    no_restarts(result)
    assert not Path(ipc_dir).exists()  # removed when the topology ended


def test_with_security_none_the_same_user_runs_code_as_you(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rogue_user: str
) -> None:
    """The documented cost of ``security: none``: the same attack works. The rogue's
    DEALER names itself like the spout, so its pickle is loaded (code ran as the
    topology's user) and the ROUTER hands the spout's connection over to it (the spout's
    later frames are lost: the topology is stopped here, not finished). The guard only
    keeps the process alive."""
    marker = tmp_path / "pwned"
    with running(tmp_path, monkeypatch, "none") as live:
        data = live.relay().endpoint
        control = live.record.hosts["localhost"].control
        assert data is not None and data.startswith("tcp://127.0.0.1:")
        seen = attack_as(rogue_user, data, control, marker)
        wait_until(marker.exists, 30, 0.05, "the rogue pickle to be loaded")
        # loading ran the pickle; the loaded object (a file, not a batch) is dropped
        expected = {"shape": 1, "header": 1}
        wait_until(lambda: live.relay().rejected_frames == expected, 30, 0.1, str(expected))
        relay = live.relay()
        assert relay.state is State.RUNNING and relay.restarts == 0, relay
        # the supervisor counted the two control frames that are not JSON
        assert live.status().rejected_frames == {"control_undecodable": 2}
        live.kill()
    assert seen["control_answered"] is True


# ---------------------------------------------------------------------- a peer with access


_pickled = st.one_of(
    st.integers(),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=4),
    st.tuples(st.integers(), st.integers()),
    st.lists(st.tuples(st.text(max_size=3), st.integers()), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
    st.none(),
    # [ids, values] shapes (runtime/codec.py), well formed or not
    st.tuples(st.integers(), st.lists(st.integers(), max_size=3)).map(list),
    st.tuples(st.lists(st.integers(), max_size=3), st.lists(st.integers(), max_size=3)).map(list),
).map(pickle.dumps)
_header = st.one_of(
    st.binary(max_size=16),
    st.sampled_from([b"D", b"E", b"P", b"X"]).flatmap(
        lambda kind: st.sampled_from(
            ["numbers/0", "numbers/1", "numbers/-1", "relay/0", "", "numbers/0\x00"]
        ).map(lambda s: kind + s.encode())
    ),
)
_count = st.one_of(
    st.integers(0, 2**62).map(pack_count), st.binary(max_size=9),
    st.integers(-(2**62), -1).map(lambda n: n.to_bytes(8, "little", signed=True)),
)  # fmt: skip
_message = st.lists(st.one_of(_header, _pickled, _count, st.binary(max_size=32)),
                    min_size=1, max_size=4)  # fmt: skip
_control = st.one_of(
    st.binary(max_size=24),
    st.sampled_from(
        [
            b"[]",
            b"null",
            b'{"op": 3}',
            b'"status"',
            b'{"op": "wire"}',
            b'{"op": "hello"}',
            b'{"no": "op"}',
            b'{"op": "nonsense"}',
        ]
    ),
)
# A well-formed batch of 3 messages (sent with a running count of 2: more than counted).
OVER_COUNT = get_codec("pickle").dumps([(1, 1)] * 3)
# Malformed end-of-stream frames and end of stream from senders that do not exist.
FORGED_EOS = [[b"E\xff\xfe"], [b"Enumbers/9"], [b"Enumbers/0", b"payload"], [b"Erelay/0"],
              [b"E"], [b"Enumbers/-1"]]  # fmt: skip
# Malformed probes, and data frames whose payload is not a batch (from a connection that
# is not the spout's, they are refused before decoding).
FORGED_DATA = [[b"Pnumbers/0", b"short"], [b"Pnumbers/0"],
               [b"Dnumbers/0", pickle.dumps([1, 2]), pack_count(5)],
               [b"Dnumbers/0", b"\x80not a pickle", pack_count(5)],
               [b"Dnumbers/0", OVER_COUNT, pack_count(2)]]  # fmt: skip
# The ROUTER names a connection without an identity of its own like this.
IDENTITY = b"\x00\x80\x00\x00\x29"
# A peer with access naming its connection like the spout, with a token of its own (the
# spout's is random, so this takes nothing over): it passes the connection check, and
# its payloads reach the decoder and the shape check.
ACCESS = b"numbers/0@hostile"
# Batches that are not batches, from ACCESS: undecodable, and decoded but wrongly shaped
# (in three parts, and in one: the guard has a fast path for each).
FORGED_PAYLOADS = [[b"Dnumbers/0", b"\x80not a pickle", pack_count(5)],
                   [b"Dnumbers/0", pickle.dumps([1, 2]), pack_count(5)],
                   [b"Dnumbers/0", pickle.dumps({"a": 1}), pack_count(5)],
                   [b"Dnumbers/0", OVER_COUNT, pack_count(2)],
                   [data_part(b"Dnumbers/0", 5, b"\x80not a pickle")],
                   [data_part(b"Dnumbers/0", 5, pickle.dumps([1, 2]))],
                   [data_part(b"Dnumbers/0", 2, OVER_COUNT)]]  # fmt: skip
_payload_message = st.tuples(
    st.one_of(_pickled, st.binary(max_size=32)), st.integers(1, 2**40), st.booleans()
).map(
    lambda t: (
        [data_part(b"Dnumbers/0", t[1], t[0])] if t[2] else [b"Dnumbers/0", t[0], pack_count(t[1])]
    )
)
# Since protocol 3 a small data frame travels as ONE part (protocol.data_part: ``d``, the
# running total, the sender's name and the payload), which the guard takes on a fast path
# of its own. A well-formed batch that claims numbers/0 (ids no real message has: were it
# taken, the relay's output would show them), from a connection that is not the spout's;
# one that names a sender that does not exist; and malformed ones: a head cut short, a
# name longer than the frame, a negative running total, a name that is not an instance,
# a second part.
FORGED_BATCH = get_codec("pickle").dumps([(10**6, -1), (10**6 + 1, -2)])
FORGED_ONE_PART = [[data_part(b"Dnumbers/0", 2, FORGED_BATCH)],
                   [data_part(b"Dnumbers/0", 10**9, FORGED_BATCH)],
                   [data_part(b"Dnumbers/1", 2, FORGED_BATCH)],
                   [data_part(b"Drelay/0", 2, FORGED_BATCH)],
                   [b"d\x02\x00"],
                   [b"d" + pack_count(2) + bytes([200]) + b"numbers/0"],
                   [data_part(b"Dnumbers/0", -1, FORGED_BATCH)],
                   [data_part(b"Dnumbers", 2, FORGED_BATCH)],
                   [data_part(b"D", 2, FORGED_BATCH)],
                   [data_part(b"Dnumbers/0", 2, FORGED_BATCH), b"second part"]]  # fmt: skip
_one_part = st.builds(
    lambda name, total, payload: [data_part(b"D" + name.encode(), total, payload)],
    st.sampled_from(["numbers/0", "numbers/1", "numbers/-1", "relay/0", "", "numbers/0\x00"]),
    st.integers(-(2**62), 2**62),
    st.one_of(_pickled, st.binary(max_size=32)),
)


@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_frames_from_a_peer_with_access_are_counted_and_dropped(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    tmp_path = tmp_path_factory.mktemp("hostile")
    messages = FORGED_EOS + FORGED_DATA + FORGED_ONE_PART
    messages += data.draw(st.lists(_message, min_size=80, max_size=150))
    messages += data.draw(st.lists(_one_part, min_size=20, max_size=40))
    control_frames = data.draw(st.lists(_control, min_size=20, max_size=40))
    # The oracle: the same guard, with what the relay expects. Frames it would accept
    # (a well-formed batch or end of stream of numbers/0) are forgeries the transport's
    # access check, not the guard, stops: they are not sent.
    counted = Rejections("oracle", log=lambda *a: None)
    oracle = InboundGuard("oracle", {"numbers/0"}, get_codec("pickle").decode, counted)
    hostile = []
    for message in messages:
        before = sum(counted.counts.values())
        item = oracle.check(IDENTITY, message)
        assert item is None and sum(counted.counts.values()) == before + 1
        hostile.append(message)
    # From ACCESS, only what the guard rejects (a batch that happens to be well formed
    # would be accepted: that is a forgery only the access check can stop).
    payloads = []
    for message in FORGED_PAYLOADS + data.draw(st.lists(_payload_message, max_size=40)):
        before = sum(counted.counts.values())
        oracle.check(ACCESS, message)
        if sum(counted.counts.values()) == before + 1:
            payloads.append(message)
    expected = Counter(counted.counts)
    assert expected["undecodable"] >= 2 and expected["shape"] >= 4
    assert expected["sender"] >= 4  # the one-part frames that claim numbers/0 among them
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        running(tmp_path, monkeypatch, "auto") as live,
    ):
        ctx = zmq.Context()
        try:
            push = ctx.socket(zmq.DEALER)
            endpoint = live.relay().endpoint
            assert endpoint is not None
            push.connect(endpoint)
            for frames in hostile:
                push.send_multipart(frames)
            access = ctx.socket(zmq.DEALER)
            access.identity = ACCESS
            access.connect(endpoint)
            for frames in payloads:
                access.send_multipart(frames)
            # A frame above the documented limit, on a connection of its own (libzmq
            # drops the connection it came on, and whatever followed it there): refused
            # before it is read, so counted nowhere, and the relay never holds it.
            big = ctx.socket(zmq.DEALER)
            dropped = big.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            big.connect(endpoint)
            big.send_multipart([b"Dnumbers/0", bytes(MAX_FRAME_BYTES + 1), pack_count(1)])
            assert dropped.poll(60_000), "the relay's side never dropped the oversized frame"
            assert recv_monitor_message(dropped)["event"] == zmq.EVENT_DISCONNECTED
            dropped.close(linger=0)
            dealers = []
            for endpoint in (
                live.record.hosts["localhost"].control,
                f"ipc://{live.record.hosts['localhost'].ipc_dir}/processes",
            ):
                dealer = ctx.socket(zmq.DEALER)
                dealer.connect(endpoint)
                for frame in control_frames:
                    dealer.send_multipart([b"", frame])
                dealers.append(dealer)
            wait_until(
                lambda: Counter(live.relay().rejected_frames) == expected,
                60,
                0.1,
                f"the relay to count {dict(expected)}",
            )
            # The supervisor still answers, and counted what it could not decode.
            assert live.status().state is State.RUNNING
            for sock in (push, access, big, *dealers):
                sock.close(linger=0)
        finally:
            ctx.destroy(linger=0)
        result = live.open_gate_and_finish()
    exact(result)
    no_restarts(result)
    relay = result.status.component("relay").instances[0]
    assert Counter(relay.rejected_frames) == expected
    assert sum(result.status.rejected_frames.values()) > 0


# ---------------------------------------------------------------------- CURVE: who sent it


def curve_dealer(
    ctx: zmq.Context[zmq.Socket[bytes]], server: str, public: str, secret: str, identity: bytes
) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.curve_serverkey = server.encode()
    sock.curve_publickey = public.encode()
    sock.curve_secretkey = secret.encode()
    sock.identity = identity
    return sock


def test_with_curve_a_member_cannot_speak_as_another_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``security: curve`` on loopback: every instance has a keypair of its own, and the
    relay checks the sender a frame names against the key its connection authenticated
    with (ZAP ``User-Id``). Peers holding relay/0's keys or the topology's own keys forge
    numbers/0's end of stream, a batch and a probe, over connections named like numbers/0:
    each frame is counted as ``peer`` and dropped; a peer with no key of this topology is
    refused at the handshake; the real stream is exact and nothing restarts."""
    forged = [
        [b"Enumbers/0"],
        [b"Dnumbers/0", get_codec("pickle").dumps([(10**6, 1)]), pack_count(1)],
        [b"Pnumbers/0", pack_count(0)],
        [data_part(b"Dnumbers/0", 2, FORGED_BATCH)],  # one part (protocol 3)
    ]
    with running(tmp_path, monkeypatch, "curve") as live:
        keys = json.loads((live.home / "topologies" / "gated" / "keys.json").read_text())
        assert set(keys["members"]) == set(keys["secrets"]) == {"numbers/0", "relay/0"}
        relay_key = keys["members"]["relay/0"]
        endpoint = live.relay().endpoint
        assert endpoint is not None and endpoint.startswith("tcp://127.0.0.1:")
        relay_pair = (keys["members"]["relay/0"], keys["secrets"]["relay/0"])
        topology_pair = (keys["public"], keys["secret"])
        stranger = tuple(k.decode() for k in zmq.curve_keypair())
        # Named like the spout, or like it with a guessed token; distinct names (a second
        # connection of one name would take the first over, losing what it queued).
        peers = [
            (relay_pair, b"numbers/0"),
            (relay_pair, b"numbers/0@0123456789abcdef"),
            (topology_pair, b"numbers/0@fedcba9876543210"),
            (topology_pair, b"numbers/0@"),
            (stranger, b"numbers/0@1"),
            (stranger, b"numbers/0@2"),
        ]
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            socks = []
            for (public, secret), identity in peers:
                sock = curve_dealer(ctx, relay_key, public, secret, identity)
                sock.connect(endpoint)
                for frames in forged:
                    sock.send_multipart(frames)
                socks.append(sock)
            expected = {"peer": 4 * len(forged)}  # the stranger's were never read
            relay_counts(live, expected)
            for sock in socks:
                sock.close(linger=0)
        finally:
            ctx.destroy(linger=0)
        finished_exact(live, expected)


# ------------------------------------------------- without keys: the connection's name


# Connections that are not the spout's, named or not: a ROUTER without an identity of its
# own, another instance, a sender that does not exist, and names that only look like the
# spout's (the guard compares what precedes the last ``@`` with the sender's name).
NOT_THE_SPOUT = [None, b"relay/0@1", b"numbers/1@2", b"numbers/00@3", b"@numbers/0",
                 b"numbers/0x", b"numbers/0@4@5", b"xnumbers/0@6"]  # fmt: skip


@pytest.mark.parametrize("security", ["auto", "none"])
def test_one_part_frames_that_claim_another_sender_are_counted_and_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, security: str
) -> None:
    """Without CURVE (ipc on this machine under ``auto``, tcp under ``none``) the relay
    checks the sender a frame names against the name of the connection it came on.
    One-part data frames (protocol 3, the guard's fast path) that claim numbers/0, or
    name a sender that does not exist, from connections that are not the spout's: each is
    counted as ``sender`` and dropped (their ids never reach the relay's output), and the
    real stream is exact."""
    with running(tmp_path, monkeypatch, security) as live:
        endpoint = live.relay().endpoint
        assert endpoint is not None
        assert endpoint.startswith("ipc://" if security == "auto" else "tcp://127.0.0.1:")
        forged = [
            [data_part(b"Dnumbers/0", 2, FORGED_BATCH)],
            [data_part(b"Dnumbers/0", 10**9, FORGED_BATCH)],
            [data_part(b"Dnumbers/1", 2, FORGED_BATCH)],
        ]
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            socks = []
            for identity in NOT_THE_SPOUT:
                sock = ctx.socket(zmq.DEALER)
                sock.linger = 0
                if identity is not None:
                    sock.identity = identity
                sock.connect(endpoint)
                for frames in forged:
                    sock.send_multipart(frames)
                socks.append(sock)
            expected = {"sender": len(NOT_THE_SPOUT) * len(forged)}
            relay_counts(live, expected)
            for sock in socks:
                sock.close(linger=0)
        finally:
            ctx.destroy(linger=0)
        finished_exact(live, expected)  # (the forged ids, 10**6 on, would be there)


# ---------------------------------------------------------------------- keys


def test_keys_are_private_absent_from_ps_logs_status_and_removed_by_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(tmp_path, monkeypatch, "curve") as live:
        record = live.record
        keys = live.home / "topologies" / "gated" / "keys.json"
        assert stat.S_IMODE(keys.stat().st_mode) == 0o600
        stored = json.loads(keys.read_text())
        secret = stored["secret"]
        assert record.curve is not None and record.curve["secret"] == secret
        # one keypair per instance besides the topology's, every secret kept as private
        secrets = [secret, *stored["secrets"].values()]
        assert len(set(secrets)) == 3
        # ps: no process's command line or environment holds the secret.
        for pid in filter(str.isdigit, os.listdir("/proc")):
            for part in ("cmdline", "environ"):
                try:
                    text = Path(f"/proc/{pid}/{part}").read_bytes()
                except OSError:
                    continue
                for key in secrets:
                    assert key.encode() not in text, f"/proc/{pid}/{part}"
        status = live.status().to_json()
        assert not any(key in status for key in secrets)
        run_dir = Path(record.hosts["localhost"].run_dir)
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
        result = live.open_gate_and_finish()
    exact(result)
    assert not any(key in result.status.to_json() for key in secrets)
    for path in run_dir.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not any(key in text for key in secrets), path
            if path.suffix == ".log":
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert not keys.exists()  # run_processes stops the topology as `down` does
