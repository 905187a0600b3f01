"""This machine as a host: commands are plain subprocesses, shipping is a local copy.

``LocalHost`` implements ``base.HostConnection`` without SSH, so the orchestrator treats
``localhost`` like any other host. The helpers that walk a ``code`` folder and stream a
command's lines live here too, since ``ssh.SSHHost`` shares them (they need no paramiko).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import signal
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from clusterduck.exceptions import LaunchError
from clusterduck.launch.base import SHIP_EXCLUDES, CommandResult, ShipReport
from clusterduck.launch.spawn import start_piped

__all__ = ["LineStream", "LocalFile", "LocalHost", "is_excluded", "local_tree"]

_CHUNK = 65536


def is_excluded(relpath: str) -> bool:
    """True when any component of ``relpath`` matches SHIP_EXCLUDES (never shipped)."""
    return any(
        fnmatch.fnmatchcase(part, pattern)
        for part in relpath.split("/")
        for pattern in SHIP_EXCLUDES
    )


@dataclass(frozen=True)
class LocalFile:
    """What shipping compares: a file's size and modification time."""

    path: Path
    size: int
    mtime_ns: int
    mode: int


def local_tree(root: Path) -> tuple[dict[str, LocalFile], list[str]]:
    """Files and directories under ``root`` (relative, '/'-separated) minus SHIP_EXCLUDES.

    Symlinks to files are shipped as their content; symlinked directories are not
    followed, so a link loop cannot make shipping run forever.
    """
    files: dict[str, LocalFile] = {}
    dirs: list[str] = []
    for current, dirnames, filenames in os.walk(root):
        base = Path(current)
        rel_base = base.relative_to(root).as_posix()
        prefix = "" if rel_base == "." else rel_base + "/"
        dirnames[:] = sorted(d for d in dirnames if not is_excluded(prefix + d))
        for d in dirnames:
            if not (base / d).is_symlink():
                dirs.append(prefix + d)
        dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]
        for name in sorted(filenames):
            rel = prefix + name
            if is_excluded(rel):
                continue
            try:
                st = (base / name).stat()
            except OSError:  # dangling symlink: nothing to ship
                continue
            if stat.S_ISREG(st.st_mode):
                files[rel] = LocalFile(base / name, st.st_size, st.st_mtime_ns, st.st_mode)
    return files, dirs


class LineStream(Iterator[str]):
    """Lines of a long-running command, closable from any thread.

    ``read`` blocks for the next chunk and returns b"" at end of stream; ``stop`` makes a
    blocked ``read`` return b"" and releases the command. A generator could not be closed
    while another thread is blocked inside it, and ``logs --follow`` of several hosts
    needs exactly that.
    """

    def __init__(self, read: Callable[[], bytes], stop: Callable[[], None]) -> None:
        self._read = read
        self._stop = stop
        self._buffer = b""
        self._done = False
        self._lock = threading.Lock()
        self._stopped = False

    def __iter__(self) -> LineStream:
        return self

    def __next__(self) -> str:
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line, self._buffer = self._buffer[:newline], self._buffer[newline + 1 :]
                return line.rstrip(b"\r").decode("utf-8", "replace")
            if self._done:
                self.close()
                raise StopIteration
            try:
                chunk = self._read()
            except (OSError, ValueError):  # closed under us by close() from another thread
                chunk = b""
            if chunk:
                self._buffer += chunk
                continue
            self._done = True
            if self._buffer:
                line, self._buffer = self._buffer, b""
                return line.decode("utf-8", "replace")

    def close(self) -> None:
        """Stop the command; a reader blocked in another thread sees end of stream."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._done = True
        self._stop()

    def __enter__(self) -> LineStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Never leave a ``tail -F`` running because a caller forgot to close.
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown; nothing left to do
            pass


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process and everything it started (it leads its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class LocalHost:
    """This machine, reached without SSH."""

    def __init__(self, name: str = "localhost") -> None:
        self.name = name

    def connect(self) -> None:
        """Nothing to open; present so callers treat every host alike."""

    def close(self) -> None:
        """Nothing to release."""

    def _env(self, env: dict[str, str] | None) -> dict[str, str]:
        merged = dict(os.environ)
        merged.update(env or {})
        return merged

    def run(
        self,
        argv: list[str],
        *,
        stdin: bytes = b"",
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> CommandResult:
        """Run ``argv`` to completion; a missing program gives exit 127 as a shell would."""
        try:
            proc = start_piped(argv, self._env(env))
        except FileNotFoundError as exc:
            return CommandResult(127, "", f"{argv[0]}: command not found ({exc.strerror})\n")
        except PermissionError as exc:
            return CommandResult(126, "", f"{argv[0]}: cannot execute ({exc.strerror})\n")
        return self.finish(proc, argv, stdin=stdin, timeout=timeout)

    def finish(
        self,
        proc: subprocess.Popen[bytes],
        argv: list[str],
        *,
        stdin: bytes = b"",
        timeout: float = 60.0,
    ) -> CommandResult:
        """Feed ``stdin`` to a command already started by ``spawn.start_piped`` and wait
        for it, as ``run`` does (see clusterduck/prestart.py)."""
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            # Kill the whole group: a grandchild holding the pipes would hang communicate().
            _kill_group(proc)
            try:
                proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            raise LaunchError(
                self.name,
                f"command {' '.join(argv)!r} did not finish within {timeout:g}s (killed)",
                "raise the timeout, or check why the command blocks",
            ) from exc
        return CommandResult(
            proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        )

    def ship(self, local_dir: Path, remote_dir: str) -> ShipReport:
        """Copy changed files to ``remote_dir``; a no-op when it is ``local_dir`` itself."""
        source = Path(local_dir).expanduser().resolve()
        target = Path(os.path.expanduser(remote_dir)).resolve()
        if source == target:
            return ShipReport()
        if not source.is_dir():
            raise LaunchError(
                self.name,
                f"code folder {str(source)!r} is not a directory",
                "fix `code:` in the topology file",
            )
        try:
            return self._copy_tree(source, target)
        except OSError as exc:
            raise LaunchError(
                self.name,
                f"cannot copy {source} to {target}: {exc}",
                "check permissions and free space of the target",
            ) from exc

    def _copy_tree(self, source: Path, target: Path) -> ShipReport:
        files, dirs = local_tree(source)
        report = ShipReport()
        target.mkdir(parents=True, exist_ok=True)
        for rel in dirs:
            path = target / rel
            if path.exists() and not path.is_dir():
                path.unlink()
            path.mkdir(exist_ok=True)
        for rel, info in files.items():
            dest = target / rel
            try:
                st = dest.lstat()
            except FileNotFoundError:
                st = None
            if (
                st is not None
                and stat.S_ISREG(st.st_mode)
                and st.st_size == info.size
                and st.st_mtime_ns == info.mtime_ns
            ):
                report.unchanged += 1
                continue
            if st is not None and stat.S_ISDIR(st.st_mode):
                shutil.rmtree(dest)
            tmp = dest.with_name(dest.name + ".cdtmp")
            shutil.copy2(info.path, tmp)  # copies the mtime, so a re-run skips the file
            os.replace(tmp, dest)
            report.sent.append(rel)
        there_files, there_dirs = local_tree(target)
        keep_dirs = set(dirs)
        for rel in sorted(set(there_files) - set(files)):
            (target / rel).unlink()
            report.removed.append(rel)
        for rel in sorted(set(there_dirs) - keep_dirs, reverse=True):
            # Whatever is left below a directory deleted locally is excluded junk
            # (__pycache__ …) that belonged to it.
            shutil.rmtree(target / rel, ignore_errors=True)
        report.removed.sort()
        return report

    def read_file(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        try:
            return Path(os.path.expanduser(path)).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise LaunchError(self.name, f"cannot read {path!r}: {exc}") from exc

    def follow(self, argv: list[str], *, env: dict[str, str] | None = None) -> LineStream:
        """Stream stdout lines of ``argv``; closing the stream kills the command."""
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=self._env(env),
                start_new_session=True,
            )
        except OSError as exc:
            raise LaunchError(self.name, f"cannot start {argv[0]!r}: {exc}") from exc
        assert proc.stdout is not None
        fd = proc.stdout.fileno()

        def stop() -> None:
            # Killing the group gives a reader blocked in another thread end of file;
            # the pipe itself is closed with the Popen object, never under a reader.
            _kill_group(proc)
            proc.wait()

        def read() -> bytes:
            chunk = os.read(fd, _CHUNK)
            if not chunk:  # only the reading thread gets here, and reads no more
                proc.stdout.close()  # type: ignore[union-attr]
            return chunk

        return LineStream(read, stop)
