"""Remote hosts over SSH — the only module that imports paramiko.

``SSHHost`` opens ONE connection per host and reuses it for every step (ship, checks,
start, status, logs): a fresh handshake per command would make ``up`` on ten hosts slow
and hammer sshd's MaxStartups. The target is resolved like ``ssh`` does it (Host aliases,
HostName, User, Port, IdentityFile from ``~/.ssh/config``; explicit topology fields win),
host keys are checked against ``known_hosts`` and unknown ones are refused unless the user
said ``--accept-new-host-keys``. Every failure becomes a ``LaunchError`` subclass that
names the host and says what to do.
"""

from __future__ import annotations

import errno
import getpass
import importlib.util
import os
import posixpath
import re
import select
import shlex
import socket
import stat
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from clusterduck.exceptions import (
    AuthenticationFailed,
    HostKeyRefused,
    HostUnreachable,
    LaunchError,
)
from clusterduck.launch.base import CommandResult, ShipReport
from clusterduck.launch.filecache import FileCache
from clusterduck.launch.local import LineStream, is_excluded, local_tree
from clusterduck.topology import Host


def _import_paramiko_without_invoke() -> bool:
    """``paramiko.config`` imports ``invoke`` when it is installed (about 0.1 CPU-s, on
    every ``up``/``down``/``status`` over SSH), for ``Match exec`` in ~/.ssh/config only.
    Import paramiko with ``invoke`` hidden; ``_LazyInvoke`` imports it when a ``Match
    exec`` line is met. Returns whether that was done."""
    if "paramiko" in sys.modules or "invoke" in sys.modules:
        return False
    if importlib.util.find_spec("invoke") is None:
        return False  # paramiko finds none either and says so at a `Match exec`
    sys.modules["invoke"] = None  # type: ignore[assignment]  # makes `import invoke` fail
    try:
        import paramiko  # noqa: F401
    finally:
        del sys.modules["invoke"]
    return True


_DEFER_INVOKE = _import_paramiko_without_invoke()

import paramiko  # noqa: E402

__all__ = ["SSHHost"]


class _LazyInvoke:
    """Stands for the ``invoke`` module in ``paramiko.config`` until it is used."""

    def __getattr__(self, name: str) -> Any:
        import invoke

        paramiko.config.invoke = invoke  # type: ignore[attr-defined]
        return getattr(invoke, name)


if _DEFER_INVOKE:
    paramiko.config.invoke = _LazyInvoke()  # type: ignore[attr-defined]

_CHUNK = 65536
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"


@dataclass(frozen=True)
class _Target:
    """Where and as whom to connect, after ~/.ssh/config and the topology's fields."""

    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    missing_identity_files: tuple[str, ...]
    use_agent: bool

    @property
    def known_hosts_name(self) -> str:
        # The name OpenSSH (and paramiko) file the key under.
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


class _UnknownHostKey(Exception):
    """Raised inside paramiko's handshake; turned into HostKeyRefused by ``connect``."""

    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(hostname)
        self.hostname = hostname
        self.key = key


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse unknown host keys, or append them to known_hosts when the user allowed it."""

    def __init__(self, accept: bool, known_hosts: Path) -> None:
        self.accept = accept
        self.known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if not self.accept:
            raise _UnknownHostKey(hostname, key)
        # Append one line rather than paramiko's save_host_keys(), which rewrites the file
        # and would drop comments and entries it does not understand.
        self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as handle:
            if handle.tell() > 0 and not self.known_hosts.read_bytes().endswith(b"\n"):
                handle.write("\n")
            handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


def _parse_known_hosts(path: str) -> tuple[Any, ...]:
    """The entries (``paramiko.hostkeys.HostKeyEntry``) ``HostKeys.load`` keeps."""
    return tuple(cast(Any, paramiko.HostKeys(path))._entries)


# Parsed once per version of each file, shared by every host of an `up` (filecache.py).
_SSH_CONFIGS: FileCache[paramiko.SSHConfig] = FileCache(paramiko.SSHConfig.from_path)
_KNOWN_HOSTS: FileCache[tuple[Any, ...]] = FileCache(_parse_known_hosts)


def _load_known_hosts(keys: paramiko.HostKeys, path: str) -> None:
    """Add to ``keys`` what ``keys.load(path)`` would, from the cache.

    ``HostKeys`` has no public way to add parsed entries as they are (``add`` keeps one
    key per host and type, ``load`` keeps every line), hence its private ``_entries``;
    tests/test_ssh_files.py checks that the result looks up like ``load``'s. Each client
    gets its own list (the host key policy adds to it); the entries are only read."""
    cast(Any, keys)._entries.extend(
        # Fresh entries: HostKeys.add replaces an entry's key in place, and the cached
        # ones are shared by every client.
        paramiko.hostkeys.HostKeyEntry(list(e.hostnames), e.key)
        for e in _KNOWN_HOSTS.get(path)
    )


def _fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


class SSHHost:
    """A remote machine reached over one reusable paramiko connection."""

    def __init__(
        self,
        name: str,
        host: Host,
        *,
        accept_new_host_keys: bool = False,
        ssh_config_path: str = "~/.ssh/config",
        known_hosts_path: str = "~/.ssh/known_hosts",
        connect_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.host = host
        self.accept_new_host_keys = accept_new_host_keys
        self.ssh_config_path = Path(os.path.expanduser(ssh_config_path))
        self.known_hosts_path = Path(os.path.expanduser(known_hosts_path))
        self.connect_timeout = connect_timeout
        self._target: _Target | None = None
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._home: str | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"SSHHost({self.name!r}, {self.host.address or self.name!r})"

    def __enter__(self) -> SSHHost:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- where to connect ------------------------------------------------------------

    @property
    def target(self) -> _Target:
        """The resolved destination (read from ~/.ssh/config once)."""
        if self._target is None:
            self._target = self._resolve()
        return self._target

    @property
    def resolved_address(self) -> str:
        """The HostName actually connected to: what other hosts' processes dial."""
        return self.target.hostname

    def _resolve(self) -> _Target:
        alias = self.host.address or self.name
        options: dict[str, object] = {}
        if self.ssh_config_path.is_file():
            try:
                config = _SSH_CONFIGS.get(str(self.ssh_config_path))
                options = dict(config.lookup(alias))
            except (OSError, paramiko.SSHException) as exc:
                raise LaunchError(
                    self.name,
                    f"cannot read {self.ssh_config_path}: {exc}",
                    "fix the ssh config file (`ssh -G HOST` shows how ssh reads it)",
                ) from exc
        hostname = str(options.get("hostname") or alias)
        port = self.host.port or int(str(options.get("port") or 22))
        user = self.host.user or str(options.get("user") or getpass.getuser())
        if self.host.identity_file:
            wanted = [self.host.identity_file]
        else:
            wanted = [str(f) for f in options.get("identityfile") or []]  # type: ignore[attr-defined]
        expanded = [os.path.expanduser(f) for f in wanted]
        present = tuple(f for f in expanded if os.path.isfile(f))
        missing = tuple(f for f in expanded if not os.path.isfile(f))
        only = str(options.get("identitiesonly", "no")).lower() == "yes"
        return _Target(hostname, port, user, present, missing, use_agent=not only)

    # -- the connection --------------------------------------------------------------

    def connect(self) -> None:
        """Open the connection once; later calls reuse it (and reopen it if it dropped)."""
        with self._lock:
            if self._client is not None:
                transport = self._client.get_transport()
                if transport is not None and transport.is_active():
                    return
                self._drop()
            target = self.target
            client = paramiko.SSHClient()
            self._load_host_keys(client)
            client.set_missing_host_key_policy(
                _HostKeyPolicy(self.accept_new_host_keys, self.known_hosts_path)
            )
            try:
                client.connect(
                    target.hostname,
                    port=target.port,
                    username=target.user,
                    key_filename=list(target.identity_files) or None,  # type: ignore[arg-type]
                    # Like ssh: the default ~/.ssh/id_* only when no IdentityFile is set.
                    look_for_keys=not (target.identity_files or target.missing_identity_files),
                    allow_agent=target.use_agent,
                    timeout=self.connect_timeout,
                    banner_timeout=self.connect_timeout,
                    auth_timeout=self.connect_timeout,
                )
            except BaseException as exc:
                client.close()
                self._raise_connect_error(exc)
                raise
            transport = client.get_transport()
            if transport is not None:
                transport.set_keepalive(15)  # notice a dead peer during a long `follow`
            self._client = client

    def _load_host_keys(self, client: paramiko.SSHClient) -> None:
        """The system's and the user's known hosts, as ``load_system_host_keys`` and
        ``load_host_keys`` would load them, parsed once per file version."""
        if os.path.isfile(_SYSTEM_KNOWN_HOSTS):
            _load_known_hosts(cast(Any, client)._system_host_keys, _SYSTEM_KNOWN_HOSTS)
        if self.known_hosts_path.is_file():
            _load_known_hosts(client.get_host_keys(), str(self.known_hosts_path))

    def _where(self) -> str:
        t = self.target
        return f"{t.user}@{t.hostname}:{t.port}"

    def _raise_connect_error(self, exc: BaseException) -> None:
        """Translate what paramiko or the socket raised; returns for anything unexpected."""
        t = self.target
        addr = f"{t.hostname}:{t.port}"
        if isinstance(exc, _UnknownHostKey):
            raise HostKeyRefused(
                self.name,
                f"unknown host key for {self._where_key(exc.hostname)}: {_fingerprint(exc.key)}",
                f"if you trust this host, rerun with --accept-new-host-keys (it is then "
                f"recorded in {self.known_hosts_path}), or add it yourself: "
                f"ssh-keyscan -p {t.port} {t.hostname} >> {self.known_hosts_path}",
                address=addr,
                fingerprint=_fingerprint(exc.key),
            ) from exc
        if isinstance(exc, paramiko.BadHostKeyException):
            raise HostKeyRefused(
                self.name,
                f"host key for {self._where_key(exc.hostname)} CHANGED: it offered "
                f"{_fingerprint(exc.key)}, known_hosts has {_fingerprint(exc.expected_key)}; "
                "someone may be intercepting the connection, or the host was reinstalled",
                f"if the change is expected, remove the old key with "
                f"`ssh-keygen -R {t.known_hosts_name} -f {self.known_hosts_path}` and connect "
                "again with --accept-new-host-keys",
                address=addr,
                fingerprint=_fingerprint(exc.key),
                expected=_fingerprint(exc.expected_key),
            ) from exc
        if isinstance(exc, paramiko.AuthenticationException) or (
            isinstance(exc, paramiko.SSHException)
            and "no authentication methods" in str(exc).lower()
        ):
            raise AuthenticationFailed(
                self.name,
                f"{t.user}@{t.hostname} refused every key we offered ({self._tried_keys()}): {exc}",
                f"add one of these keys' .pub to ~{t.user}/.ssh/authorized_keys on "
                f"{t.hostname}, or set identity_file/user for host {self.name!r} "
                "(or IdentityFile/User in ~/.ssh/config), or load the key into ssh-agent",
                address=addr,
                user=t.user,
            ) from exc
        hint = (
            f"check that {t.hostname} is up, sshd listens on port {t.port} and no "
            "firewall is in the way (try `ssh -v` with the same host)"
        )
        if isinstance(exc, socket.gaierror):
            raise HostUnreachable(
                self.name,
                f"cannot resolve {t.hostname!r}: {exc.strerror or exc}",
                f"fix hosts.{self.name}.address in the topology file (or HostName in "
                "~/.ssh/config)",
                address=t.hostname,
            ) from exc
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            reasons = "; ".join(
                sorted({getattr(e, "strerror", None) or str(e) for e in exc.errors.values()})
            )
            raise HostUnreachable(
                self.name, f"cannot connect to {addr}: {reasons}", hint, address=addr
            ) from exc
        if isinstance(exc, (TimeoutError, socket.timeout)):
            raise HostUnreachable(
                self.name,
                f"connecting to {addr} timed out after {self.connect_timeout:g}s",
                hint,
                address=addr,
            ) from exc
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise HostUnreachable(
                self.name, f"cannot connect to {addr}: {reason}", hint, address=addr
            ) from exc
        if isinstance(exc, (paramiko.SSHException, EOFError)):
            raise HostUnreachable(
                self.name,
                f"SSH handshake with {addr} failed: {exc or type(exc).__name__}",
                hint,
                address=addr,
            ) from exc

    def _where_key(self, known_hosts_name: str) -> str:
        t = self.target
        addr = f"{t.hostname}:{t.port}"
        same = known_hosts_name in (t.hostname, t.known_hosts_name)
        return addr if same else f"{known_hosts_name} ({addr})"

    def _tried_keys(self) -> str:
        t = self.target
        parts = []
        if t.identity_files:
            parts.append("identity files " + ", ".join(t.identity_files))
        elif not t.missing_identity_files:
            parts.append("default ~/.ssh/id_* keys")
        if t.missing_identity_files:
            parts.append("missing identity files " + ", ".join(t.missing_identity_files))
        if t.use_agent:
            try:
                count = len(paramiko.Agent().get_keys())
            except (paramiko.SSHException, OSError):
                count = 0
            parts.append(f"{count} ssh-agent key{'s' if count != 1 else ''}")
        return "; ".join(parts)

    def _transport(self) -> paramiko.Transport:
        self.connect()
        assert self._client is not None
        transport = self._client.get_transport()
        assert transport is not None
        return transport

    def _open_session(self) -> paramiko.Channel:
        """A new channel on the shared connection, reconnecting once if it had dropped."""
        try:
            return self._transport().open_session(timeout=self.connect_timeout)
        except paramiko.ChannelException as exc:
            raise LaunchError(
                self.name,
                f"sshd on {self._where()} refused a new session: {exc}",
                "too many sessions on one connection? raise MaxSessions in its sshd_config",
            ) from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise HostUnreachable(
                self.name,
                f"lost the SSH connection to {self._where()}: {exc}",
                "check the host and the network, then retry",
            ) from exc

    def _command(self, argv: list[str], env: dict[str, str] | None) -> str:
        # `env K=V cmd` rather than paramiko's set_environment: sshd drops variables that
        # AcceptEnv does not list, silently. `exec`: the user's login shell replaces
        # itself with the command instead of waiting beside it (dash forks otherwise), so
        # one process fewer per remote command and the command is sshd's direct child.
        if not env:
            return "exec " + shlex.join(argv)
        bad = [k for k in env if not _ENV_NAME.match(k)]
        if bad:
            raise LaunchError(
                self.name,
                f"invalid environment variable name(s): {bad}",
                "use letters, digits and underscores",
            )
        return "exec " + shlex.join(["env", *(f"{k}={v}" for k, v in env.items()), *argv])

    # -- commands --------------------------------------------------------------------

    def run(
        self,
        argv: list[str],
        *,
        stdin: bytes = b"",
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> CommandResult:
        """Run ``argv`` remotely to completion, feeding ``stdin``; never waits past timeout."""
        command = self._command(argv, env)
        chan = self._open_session()
        try:
            return self._exchange(chan, command, stdin, timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise HostUnreachable(
                self.name,
                f"lost the SSH connection to {self._where()} while running {command!r}: {exc}",
                "check the host and the network, then retry",
                command=command,
            ) from exc
        finally:
            chan.close()

    def _exchange(
        self, chan: paramiko.Channel, command: str, stdin: bytes, timeout: float
    ) -> CommandResult:
        deadline = time.monotonic() + timeout
        chan.exec_command(command)
        pending = memoryview(stdin)
        if not pending:
            chan.shutdown_write()
        out: list[bytes] = []
        err: list[bytes] = []
        while True:
            # Sending and receiving interleave: a command that writes a lot before reading
            # its stdin must not deadlock against us.
            if pending and chan.send_ready():
                sent = chan.send(pending[:_CHUNK].tobytes())
                pending = pending[sent:]
                if not pending:
                    chan.shutdown_write()
                continue
            if chan.recv_ready():
                out.append(chan.recv(_CHUNK))
                continue
            if chan.recv_stderr_ready():
                err.append(chan.recv_stderr(_CHUNK))
                continue
            if chan.exit_status_ready() and (chan.eof_received or chan.closed):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LaunchError(
                    self.name,
                    f"command {command!r} did not finish within {timeout:g}s",
                    "raise the timeout, or check why the command blocks on that host",
                )
            if chan.eof_received:  # output is over; only the exit status is missing
                chan.status_event.wait(min(remaining, 1.0))
            else:
                select.select([chan], [], [], min(remaining, 0.05 if pending else 1.0))
        transport = chan.get_transport()
        if chan.exit_status == -1 and (transport is None or not transport.is_active()):
            raise HostUnreachable(
                self.name,
                f"connection to {self._where()} dropped while running {command!r}",
                "check the host and the network, then retry",
                command=command,
            )
        return CommandResult(
            chan.recv_exit_status(),
            b"".join(out).decode("utf-8", "replace"),
            b"".join(err).decode("utf-8", "replace"),
        )

    def follow(self, argv: list[str], *, env: dict[str, str] | None = None) -> LineStream:
        """Stream stdout lines of a long-running remote command; closing closes the channel.

        The command gets a pty so that closing the channel hangs it up: without one, a
        remote ``tail -F`` would linger until its next write failed. Its stderr is
        discarded (a pty would mix it into the lines).
        """
        command = self._command(["sh", "-c", 'exec "$@" 2>/dev/null', "sh", *argv], env)
        chan = self._open_session()
        try:
            chan.get_pty(term="dumb", width=4096)
            chan.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            chan.close()
            raise HostUnreachable(
                self.name,
                f"cannot start {command!r} on {self._where()}: {exc}",
                "check the host and the network, then retry",
                command=command,
            ) from exc
        return LineStream(lambda: chan.recv(_CHUNK), chan.close)

    # -- files -----------------------------------------------------------------------

    def _sftp_client(self) -> paramiko.SFTPClient:
        with self._lock:
            self.connect()
            if self._sftp is None or self._sftp.get_channel().closed:  # type: ignore[union-attr]
                assert self._client is not None
                try:
                    self._sftp = self._client.open_sftp()
                except (paramiko.SSHException, EOFError, OSError) as exc:
                    raise LaunchError(
                        self.name,
                        f"cannot open SFTP on {self._where()}: {exc}",
                        "enable it in the host's sshd_config: `Subsystem sftp internal-sftp`",
                    ) from exc
            return self._sftp

    def _remote_path(self, sftp: paramiko.SFTPClient, path: str) -> str:
        """Expand ``~`` against the remote home (SFTP sessions start there)."""
        if path.startswith("/"):
            return posixpath.normpath(path)
        if self._home is None:
            self._home = sftp.normalize(".")
        if path == "~":
            return self._home
        if path.startswith("~/"):
            path = path[2:]
        elif path.startswith("~"):
            raise LaunchError(
                self.name,
                f"cannot expand {path!r}: only ~ and ~/… are supported",
                "use an absolute path or one under ~/",
            )
        return posixpath.normpath(posixpath.join(self._home, path))

    def read_file(self, path: str) -> bytes | None:
        """The remote file's bytes, or None when it does not exist."""
        with self._lock:
            sftp = self._sftp_client()
            full = self._remote_path(sftp, path)
            try:
                with sftp.open(full, "rb") as handle:
                    handle.prefetch()
                    return handle.read()
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    return None
                raise LaunchError(
                    self.name,
                    f"cannot read {full!r} on {self._where()}: {exc}",
                    "check the path and its permissions on that host",
                ) from exc

    def ship(self, local_dir: Path, remote_dir: str) -> ShipReport:
        """Mirror ``local_dir`` (minus SHIP_EXCLUDES) into ``remote_dir``, sending only changes.

        A file counts as unchanged when size and whole-second mtime match; uploads get the
        local mtime, so shipping twice sends nothing. Remote files and directories that no
        longer exist locally are removed; excluded names (``__pycache__`` …) are left alone.
        """
        source = Path(local_dir).expanduser().resolve()
        if not source.is_dir():
            raise LaunchError(
                self.name,
                f"code folder {str(source)!r} is not a directory",
                "fix `code:` in the topology file",
            )
        with self._lock:
            sftp = self._sftp_client()
            root = self._remote_path(sftp, remote_dir)
            try:
                return self._mirror(sftp, source, root)
            except OSError as exc:
                raise LaunchError(
                    self.name,
                    f"shipping {source} to {self._where()}:{root} failed: {exc}",
                    "check permissions and free space on that host",
                ) from exc

    def _mirror(self, sftp: paramiko.SFTPClient, source: Path, root: str) -> ShipReport:
        files, dirs = local_tree(source)
        report = ShipReport()
        self._makedirs(sftp, root)
        there_files, there_dirs = self._remote_tree(sftp, root, "")
        for rel in dirs:
            if rel in there_files:
                sftp.remove(f"{root}/{rel}")
            if rel not in there_dirs:
                sftp.mkdir(f"{root}/{rel}")
        for rel, info in files.items():
            mtime = info.mtime_ns // 1_000_000_000
            attrs = there_files.get(rel)
            if (
                attrs is not None
                and attrs.st_mode is not None
                and stat.S_ISREG(attrs.st_mode)
                and attrs.st_size == info.size
                and attrs.st_mtime == mtime
            ):
                report.unchanged += 1
                continue
            if rel in there_dirs:
                self._rmtree(sftp, f"{root}/{rel}")
            # Upload beside, then rename over: a process importing the module meanwhile
            # never sees half a file.
            tmp = f"{root}/{rel}.cdtmp"
            sftp.put(str(info.path), tmp)
            sftp.chmod(tmp, stat.S_IMODE(info.mode))
            sftp.utime(tmp, (mtime, mtime))
            sftp.posix_rename(tmp, f"{root}/{rel}")
            report.sent.append(rel)
        for rel in sorted(set(there_files) - set(files)):
            sftp.remove(f"{root}/{rel}")
            report.removed.append(rel)
        for rel in sorted(set(there_dirs) - set(dirs), reverse=True):
            self._rmtree(sftp, f"{root}/{rel}")
        return report

    def _makedirs(self, sftp: paramiko.SFTPClient, path: str) -> None:
        try:  # the usual case on a re-run: one round trip instead of one per level
            attrs = sftp.stat(path)
            if attrs.st_mode is not None and stat.S_ISDIR(attrs.st_mode):
                return
        except FileNotFoundError:
            pass
        parts = path.strip("/").split("/")
        current = ""
        for part in parts:
            current += "/" + part
            try:
                attrs = sftp.stat(current)
            except FileNotFoundError:
                sftp.mkdir(current)
                continue
            if attrs.st_mode is not None and not stat.S_ISDIR(attrs.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, f"{current} is not a directory")

    def _remote_tree(
        self, sftp: paramiko.SFTPClient, root: str, rel: str
    ) -> tuple[dict[str, paramiko.SFTPAttributes], set[str]]:
        """Non-excluded files (with their attributes) and directories below ``root``."""
        files: dict[str, paramiko.SFTPAttributes] = {}
        dirs: set[str] = set()
        for attrs in sftp.listdir_attr(f"{root}/{rel}" if rel else root):
            child = f"{rel}/{attrs.filename}" if rel else attrs.filename
            if is_excluded(child):
                continue
            if attrs.st_mode is not None and stat.S_ISDIR(attrs.st_mode):
                dirs.add(child)
                sub_files, sub_dirs = self._remote_tree(sftp, root, child)
                files.update(sub_files)
                dirs |= sub_dirs
            else:
                files[child] = attrs
        return files, dirs

    def _rmtree(self, sftp: paramiko.SFTPClient, path: str) -> None:
        for attrs in sftp.listdir_attr(path):
            child = f"{path}/{attrs.filename}"
            if attrs.st_mode is not None and stat.S_ISDIR(attrs.st_mode):
                self._rmtree(sftp, child)
            else:
                sftp.remove(child)
        sftp.rmdir(path)

    # -- teardown --------------------------------------------------------------------

    def _drop(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except (paramiko.SSHException, OSError, EOFError):
                pass
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        """Close the connection; open ``follow`` streams end. ``connect()`` may reopen it."""
        with self._lock:
            self._drop()
