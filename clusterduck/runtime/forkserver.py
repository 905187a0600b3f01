"""How a supervisor starts its processes: forked from a warm fork server, or fresh.

A fresh ``python -m clusterduck.runtime.process`` pays an interpreter start and the
runtime's imports (0.2–0.5 CPU-s) for every process and every restart; a fork of an
interpreter that has already imported them costs a few milliseconds. So the supervisor
starts a *fork server* once and asks it for each process:

- The fork server is forked from the supervisor **before** the supervisor creates its
  ZeroMQ context. A ZeroMQ context must not cross a fork (its I/O threads do not exist
  in the child, its sockets would be shared), and forking a process that runs threads
  copies locks that no thread will ever release. The fork server stays single-threaded,
  imports the runtime and pyzmq, and never creates a context or a socket: each process
  builds its own after the fork, exactly as a fresh interpreter would.
- It forks twice, so that each process is re-parented to the supervisor, which is a
  *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``): the supervisor waits for its
  processes like any child, sees ``kill -9`` as SIGKILL, and loses nothing if the fork
  server itself dies.
- The forked child looks like a fresh process to the runtime: its stdout and stderr go
  to the instance's log, its working directory and ``sys.path[0]`` are the code
  folder, the host's ``env`` is applied, and it exits through ``os._exit`` after the
  runtime's own exit path (never back into the fork server's loop).
- The fork server never sees a process's spec (which holds keys): the supervisor passes
  the log file and the read end of a pipe with each request (``SCM_RIGHTS``), the child
  takes them as its stdout/stderr and stdin, and the supervisor writes the spec into the
  pipe, as it would to a fresh interpreter's stdin. So no process inherits another's
  spec. What every forked process does inherit is the supervisor's memory from before
  its context existed, its own spec included (the topology's keys, which every process
  gets anyway); were a supervisor to hold secrets meant for one process only, the fork
  server would have to start as a fresh interpreter instead (``_start_server``).

The fresh-interpreter path stays, and is used when fork or the subreaper is not
available (not Linux), when ``CLUSTERDUCK_START=spawn`` (in the environment of the
supervisor or in the host's ``env``), when the host's ``env`` sets a variable that only
an interpreter start reads (``PYTHON*`` other than ``PYTHONPATH``, ``LD_*``), and for
every start after the fork server has died. The supervisor logs which one runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "SUPERVISOR_PID",
    "ChildProcess",
    "ForkedProcess",
    "Starter",
    "choose_mode",
    "die_with_supervisor",
]

log = logging.getLogger("clusterduck.supervisor")

FORK = "fork"
SPAWN = "spawn"
# The fork server answers a start within this time, or it is taken for dead.
REPLY_TIMEOUT = 30.0
# How long a supervisor that ends waits for its fork server to leave.
CLOSE_WITHIN = 2.0
# Variables an interpreter reads only when it starts: a forked process would not see
# them, so a host whose env sets one gets fresh interpreters (PYTHONPATH is applied).
_START_ONLY = ("PYTHON", "LD_")
_APPLIED = {"PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_PDEATHSIG = 1
#: The supervisor's pid, in the environment of every process it starts
#: (:func:`die_with_supervisor`).
SUPERVISOR_PID = "CLUSTERDUCK_SUPERVISOR_PID"
_MAX_MESSAGE = 1 << 20  # a request: a name, paths, the host's env


class ChildProcess(Protocol):
    """What the supervisor needs of a started process (``subprocess.Popen`` has it)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | Any: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


class ForkedProcess:
    """A process forked by the fork server and re-parented to us: Popen's interface."""

    def __init__(self, pid: int, name: str) -> None:
        self.pid = pid
        self.name = name
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # not ours (any more): nothing to learn
                self.returncode = -9
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                import subprocess  # Popen's exception (the module costs a start ~3 ms)

                raise subprocess.TimeoutExpired(self.name, timeout or 0.0)
            time.sleep(0.005)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(9)


def choose_mode(host_env: Mapping[str, str]) -> tuple[str, str]:
    """(``fork`` or ``spawn``, why) for a supervisor whose host has ``host_env``."""
    wanted = host_env.get("CLUSTERDUCK_START") or os.environ.get("CLUSTERDUCK_START") or FORK
    if wanted == SPAWN:
        return SPAWN, "CLUSTERDUCK_START=spawn"
    if wanted != FORK:
        return SPAWN, f"CLUSTERDUCK_START={wanted!r} is neither fork nor spawn"
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return SPAWN, f"no fork with a child subreaper on {sys.platform}"
    start_only = sorted(k for k in host_env if k.startswith(_START_ONLY) and k not in _APPLIED)
    if start_only:
        return SPAWN, f"the host's env sets {', '.join(start_only)}, read only at start"
    return FORK, "forked from a warm fork server"


class Starter:
    """Starts this supervisor's processes; create it before any ZeroMQ context."""

    def __init__(self, host_env: Mapping[str, str]) -> None:
        self.env = dict(host_env)
        self.mode, self.reason = choose_mode(host_env)
        self._server: socket.socket | None = None
        self._server_pid: int | None = None
        if self.mode == FORK:
            try:
                self._start_server()
            except OSError as exc:
                self.mode, self.reason = SPAWN, f"the fork server did not start ({exc})"
        log.info("processes start %s (%s)", _describe(self.mode), self.reason)

    def _start_server(self) -> None:
        _become_subreaper()
        # SEQPACKET: one request or reply per message, and file descriptors travel with it.
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the fork server: never returns
            ours.close()
            _serve(theirs)
        theirs.close()
        ours.settimeout(REPLY_TIMEOUT)
        self._server, self._server_pid = ours, pid

    def start(
        self, name: str, spec_json: str, log_path: Path, cwd: str, marker: list[str]
    ) -> ChildProcess:
        """Start instance ``name`` with its ``ProcessSpec`` (JSON); OSError if it cannot."""
        if self._server is not None:
            request: dict[str, Any] = {
                "name": name,
                "cwd": cwd,
                "env": {**self.env, "PYTHONUNBUFFERED": "1", SUPERVISOR_PID: str(os.getpid())},
                "argv": [*marker, name],
            }
            log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            read_fd, write_fd = os.pipe()
            try:
                _send(self._server, request, [log_fd, read_fd])
                reply = _receive(self._server)
            except (OSError, ValueError) as exc:
                os.close(write_fd)
                self._server_died(f"{type(exc).__name__}: {exc}")
            else:
                if "pid" not in reply:
                    os.close(write_fd)
                    raise OSError(str(reply.get("error", "the fork server refused")))
                # The child reads its spec first thing; a child already dead reads nothing.
                with contextlib.suppress(BrokenPipeError), os.fdopen(write_fd, "wb") as pipe:
                    pipe.write(spec_json.encode())
                return ForkedProcess(int(reply["pid"]), name)
            finally:
                os.close(log_fd)
                os.close(read_fd)
        return self._spawn(name, spec_json, log_path, cwd, marker)

    def _server_died(self, why: str) -> None:
        log.warning("the fork server is gone (%s); processes start as fresh interpreters", why)
        self.close()
        self.mode, self.reason = SPAWN, "the fork server died"

    def _spawn(
        self, name: str, spec_json: str, log_path: Path, cwd: str, marker: list[str]
    ) -> ChildProcess:
        """The fallback: a fresh interpreter, the spec on its stdin."""
        import subprocess  # only here: forked processes need none of it

        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1", SUPERVISOR_PID: str(os.getpid())}
        with open(log_path, "ab", opener=_private) as logfile:
            popen = subprocess.Popen(
                [sys.executable, "-m", "clusterduck.runtime.process", *marker, name],
                stdin=subprocess.PIPE,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
            )
        assert popen.stdin is not None
        popen.stdin.write(spec_json.encode())
        popen.stdin.close()
        return popen

    def close(self, within: float = CLOSE_WITHIN) -> None:
        """Let the fork server go (it leaves at end of file) and reap it, waiting up to
        ``within`` seconds: a supervisor that exits leaves no fork server behind (one
        that outlived it for a moment was still there when ``up --wait`` returned)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._server_pid is not None:
            deadline = time.monotonic() + within
            with contextlib.suppress(ChildProcessError):
                while not os.waitpid(self._server_pid, os.WNOHANG)[0]:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.002)
            self._server_pid = None


def _describe(mode: str) -> str:
    return "by fork" if mode == FORK else "as fresh interpreters"


def _private(path: str, flags: int) -> int:
    """Open a new log file readable by its owner only (logs hold data and tracebacks)."""
    return os.open(path, flags, 0o600)


def die_with_supervisor(within: float = 5.0) -> None:
    """Have the kernel kill this process (SIGKILL) when its supervisor dies, on Linux:
    nothing would restart it, report for it or stop it gracefully any more, and
    ``status`` could not see it (it kept running, unseen, until ``down`` swept it).

    A forked process becomes the supervisor's child only once the fork server's middle
    process has left (the death signal follows the parent of the moment), so this waits
    for that first, up to ``within`` seconds. A supervisor already gone: the process
    leaves. Not on Linux, or without ``SUPERVISOR_PID`` (a process started by hand):
    nothing."""
    wanted = os.environ.get(SUPERVISOR_PID)
    if not wanted or not sys.platform.startswith("linux"):
        return
    supervisor = int(wanted)
    first = os.getppid()  # the fork server's middle process, or the supervisor itself
    deadline = time.monotonic() + within
    while (parent := os.getppid()) != supervisor:
        if parent != first or not _alive(supervisor):
            # Re-parented, but not to the supervisor, or it died (a dead process, even
            # one not reaped yet, adopts nobody): it is gone.
            os._exit(1)
        if time.monotonic() > deadline:
            _say(f"still the child of pid {parent}, not of the supervisor {supervisor}")
            return
        time.sleep(0.001)
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        _say(f"prctl(PR_SET_PDEATHSIG): {os.strerror(ctypes.get_errno())}")
        return
    if os.getppid() != supervisor:  # it died before the prctl: no signal will come
        os._exit(1)


def _alive(pid: int) -> bool:
    """``pid`` runs (a zombie does not: it died and waits to be reaped). Linux."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def _say(why: str) -> None:
    """die_with_supervisor could not arrange it: the process runs on; its log says so."""
    sys.stderr.write(f"clusterduck: this process will outlive its supervisor ({why})\n")


def _become_subreaper() -> None:
    """Orphaned descendants come to us instead of init: how forked processes become
    the supervisor's children. OSError where the kernel has no such thing."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(errno)}")


# -- the wire between supervisor and fork server: one JSON object per packet -------------


def _send(sock: socket.socket, obj: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(obj).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def _receive(sock: socket.socket, max_fds: int = 0) -> dict[str, Any]:
    """One message (with up to ``max_fds`` descriptors, in ``"fds"``); ValueError at end
    of file (the other side is gone)."""
    data, fds, _flags, _address = socket.recv_fds(sock, _MAX_MESSAGE, max_fds)
    if not data:
        for fd in fds:
            os.close(fd)
        raise ValueError("end of file")
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    obj["fds"] = fds
    return obj


# -- inside the fork server --------------------------------------------------------------


def _serve(sock: socket.socket) -> None:
    """The fork server's loop: one forked process per request, until end of file."""
    code = 0
    try:
        _close_fds_except({0, 1, 2, sock.fileno()})
        _set_comm("cd-forkserver")
        # What every process imports; it shares these pages with its siblings.
        import gc

        from . import process  # noqa: F401

        gc.freeze()  # objects from here on are not touched by the children's collector
        while True:
            try:
                request = _receive(sock, max_fds=2)
            except ValueError:
                break  # the supervisor is gone
            try:
                if len(request["fds"]) != 2:
                    raise OSError("a request comes with its log and its stdin")
                _send(sock, {"pid": _fork_process(request, sock)})
            except OSError as exc:
                _send(sock, {"error": f"fork failed: {exc}"})
            finally:
                for fd in request["fds"]:
                    os.close(fd)
    except BaseException:  # noqa: BLE001 - never return into the supervisor's stack
        log.exception("the fork server failed")
        code = 1
    finally:
        os._exit(code)


def _fork_process(request: dict[str, Any], server_sock: socket.socket) -> int:
    """Fork twice: the process's parent exits at once, so it is re-parented to the
    supervisor (the subreaper), which then waits for it. Returns its pid."""
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    middle = os.fork()
    if middle == 0:
        code = 0
        try:
            os.close(read_fd)
            pid = os.fork()
            if pid == 0:
                os.close(write_fd)
                _become_process(request, server_sock)
            os.write(write_fd, str(pid).encode())
        except BaseException:  # noqa: BLE001 - the reply says no pid
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(middle, 0)
    if not answer:
        raise OSError("the forked process did not start")
    return int(answer)


def _become_process(request: dict[str, Any], server_sock: socket.socket) -> None:
    """In the forked child: set up what a fresh interpreter would have, run the
    process's main, leave with its exit code. Never returns."""
    code = 1
    try:
        server_sock.close()
        log_fd, spec_fd = request["fds"]
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.dup2(spec_fd, 0)  # the supervisor writes the spec here, as to a fresh process
        _close_fds_except({0, 1, 2})
        _fresh_stdio()
        _set_comm(f"cd {request['name']}")
        env: dict[str, str] = request["env"]
        os.environ.update(env)
        cwd: str = request["cwd"]
        os.chdir(cwd)
        # `python -m` puts the working directory first on sys.path, PYTHONPATH next.
        extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[0:1] = [cwd, *extra]
        sys.argv = [sys.argv[0], *request["argv"]]
        logging.root.handlers.clear()  # the process sets up its own (the supervisor's are here)
        from .process import main

        code = main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - report like an uncaught exception would
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        _leave(code)


def _fresh_stdio() -> None:
    """New standard streams on fds 0-2 (nothing buffered by the fork server carries
    over), stdout and stderr unbuffered as ``PYTHONUNBUFFERED=1`` gives."""
    import io

    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)))
    for fd, attr in ((1, "stdout"), (2, "stderr")):
        raw = io.FileIO(fd, "w", closefd=False)
        setattr(sys, attr, io.TextIOWrapper(raw, write_through=True, errors="backslashreplace"))


def _leave(code: int) -> None:
    """What an interpreter does on exit (join threads that are not daemons, run atexit
    handlers, flush), then leave without unwinding into the fork server."""
    try:
        import atexit
        import threading

        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _close_fds_except(keep: set[int]) -> None:
    """Close what the supervisor had open (its readiness pipe, its log, …)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 256))
    for fd in fds:
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _set_comm(name: str) -> None:
    """The name ``top`` and ``ps -o comm`` show (15 bytes); the command line stays the
    supervisor's, with the topology marker that sweeps look for."""
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as fh:
        fh.write(name[:15])
