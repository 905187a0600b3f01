"""Every error clusterduck raises, as one tree.

    ClusterduckError
    ├── TopologyError          the YAML file or its graph is wrong (exit 1)
    ├── EntryError             an entry (module:attr) does not import or is not callable
    ├── StateError             unknown / ambiguous / already running topology (exit 1)
    ├── LaunchError            a host or process could not be started (exit 2)
    │   ├── HostUnreachable        TCP/SSH connection to a host failed
    │   ├── HostKeyRefused         the host key is unknown or does not match
    │   ├── AuthenticationFailed   SSH refused every key we offered
    │   ├── RemotePythonError      the host's interpreter lacks clusterduck or zmq
    │   ├── StartFailed            a supervisor or component died while starting
    │   └── SlurmError             Slurm refused or could not grant a group's job
    │       ├── SlurmNotFound          no sbatch/squeue/scancel on the PATH
    │       ├── SlurmRefused           sbatch rejected it (partition, account, option)
    │       ├── AllocationTimeout      still queued after --wait-for-allocation
    │       └── AllocationImpossible   the request can never be granted
    └── RuntimeFault           a running topology misbehaved (exit 2)
        ├── ControlTimeout         a supervisor did not answer a control request
        ├── ProtocolError          a message or spec across a process boundary is malformed
        ├── CodecError             a batch could not be encoded or decoded
        └── FatalError             a user function raised under ``on_error: stop``

The library raises; only ``cli/`` turns these into messages and exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AllocationImpossible",
    "AllocationTimeout",
    "AuthenticationFailed",
    "ClusterduckError",
    "CodecError",
    "ControlTimeout",
    "EntryError",
    "FatalError",
    "HostKeyRefused",
    "HostUnreachable",
    "LaunchError",
    "Problem",
    "ProtocolError",
    "RemotePythonError",
    "RuntimeFault",
    "SlurmError",
    "SlurmNotFound",
    "SlurmRefused",
    "StartFailed",
    "StateError",
    "TopologyError",
]


class ClusterduckError(Exception):
    """Base of every error clusterduck raises on purpose."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One located finding in a topology file."""

    file: str
    line: int | None
    column: int | None
    message: str
    hint: str = ""
    component: str | None = None

    def location(self) -> str:
        if self.line is None:
            return self.file
        if self.column is None:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.column}"

    def __str__(self) -> str:
        who = f"[{self.component}] " if self.component else ""
        text = f"{self.location()}: {who}{self.message}"
        return f"{text}\n    hint: {self.hint}" if self.hint else text

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "component": self.component,
            "message": self.message,
            "hint": self.hint,
        }


class TopologyError(ClusterduckError):
    """A topology file failed to load or validate; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in topology"
        super().__init__(head + "\n" + "\n".join(str(p) for p in self.problems))


class EntryError(ClusterduckError):
    """An entry point does not import, does not exist, or is not callable."""

    def __init__(self, entry: str, message: str, hint: str = "") -> None:
        self.entry = entry
        self.message = message
        self.hint = hint
        super().__init__(f"{message}\n    hint: {hint}" if hint else message)


class StateError(ClusterduckError):
    """The named topology is unknown, ambiguous, or already running."""


class LaunchError(ClusterduckError):
    """Something could not be started on a host."""

    exit_code = 2

    def __init__(
        self, host: str, message: str, hint: str = "", *, command: str | None = None
    ) -> None:
        self.host = host
        self.hint = hint
        self.command = command  # the remote command involved, if any
        text = f"host {host!r}: {message}"
        super().__init__(f"{text}\n    hint: {hint}" if hint else text)


class HostUnreachable(LaunchError):
    """No TCP or SSH connection to ``address`` (the resolved one when known)."""

    def __init__(
        self,
        host: str,
        message: str,
        hint: str = "",
        *,
        address: str | None = None,
        command: str | None = None,
    ) -> None:
        self.address = address
        super().__init__(host, message, hint, command=command)


class HostKeyRefused(LaunchError):
    """The host key is unknown (``expected`` is None) or differs from the recorded one."""

    def __init__(
        self,
        host: str,
        message: str,
        hint: str = "",
        *,
        address: str | None = None,
        fingerprint: str | None = None,
        expected: str | None = None,
    ) -> None:
        self.address = address
        self.fingerprint = fingerprint
        self.expected = expected
        super().__init__(host, message, hint)


class AuthenticationFailed(LaunchError):
    """SSH refused every key offered for ``user`` at ``address``."""

    def __init__(
        self,
        host: str,
        message: str,
        hint: str = "",
        *,
        address: str | None = None,
        user: str | None = None,
    ) -> None:
        self.address = address
        self.user = user
        super().__init__(host, message, hint)


class RemotePythonError(LaunchError):
    """The host's interpreter ``python`` cannot run clusterduck."""

    def __init__(self, host: str, message: str, hint: str = "", *, python: str = "") -> None:
        self.python = python
        super().__init__(host, message, hint)


class StartFailed(LaunchError):
    """A supervisor or a component process died before reporting ready."""

    def __init__(
        self,
        host: str,
        message: str,
        *,
        component: str | None = None,
        log_tail: str = "",
        hint: str = "",
    ) -> None:
        self.component = component
        self.log_tail = log_tail
        body = message
        if log_tail:
            body += "\n--- last log lines ---\n" + log_tail.rstrip()
        super().__init__(host, body, hint)


class SlurmError(LaunchError):
    """Slurm refused or could not satisfy a group's job (see ``launch/slurm.py``).

    Carries the job id (when one was submitted), the partition, and the scheduler's own
    words, so the user sees what Slurm said and what to change."""

    def __init__(
        self,
        host: str,
        message: str,
        hint: str = "",
        *,
        job_id: str | None = None,
        partition: str | None = None,
        scheduler_message: str = "",
    ) -> None:
        self.job_id = job_id
        self.partition = partition
        self.scheduler_message = scheduler_message
        body = message
        if scheduler_message:
            body += f"\n    slurm: {scheduler_message.strip()}"
        super().__init__(host, body, hint)


class SlurmNotFound(SlurmError):
    """``sbatch`` (or another Slurm command) is not on this machine's PATH."""


class SlurmRefused(SlurmError):
    """``sbatch`` rejected the request (unknown partition or account, bad option)."""


class AllocationTimeout(SlurmError):
    """The job was still queued when ``--wait-for-allocation`` ran out (it is cancelled)."""


class AllocationImpossible(SlurmError):
    """The scheduler says the request can never be granted (e.g. more nodes than exist)."""


class RuntimeFault(ClusterduckError):
    """A running topology or its supervisors misbehaved."""

    exit_code = 2


class NeverStarted(RuntimeFault):
    """``logs`` of a run whose processes on ``hosts`` never started (``up`` failed while
    reaching them): there are no logs there, and ``why`` says what happened."""

    def __init__(self, topology: str, hosts: list[str], why: list[str], nothing: bool) -> None:
        self.topology = topology
        self.hosts = hosts
        self.why = why
        where = f"{topology} never started" + ("" if nothing else f" on {', '.join(hosts)}")
        reasons = "; ".join(why) or f"its run on {', '.join(hosts)} failed before it started"
        super().__init__(
            f"{where}: {reasons}; there are no logs there. See `clusterduck status {topology}`"
        )


class ControlTimeout(RuntimeFault):
    """A supervisor at ``endpoint`` did not answer ``op`` within ``timeout`` seconds."""

    def __init__(self, endpoint: str, op: str, timeout: float) -> None:
        self.endpoint = endpoint
        self.op = op
        self.timeout = timeout
        super().__init__(f"no answer to {op!r} from {endpoint} within {timeout:g}s")


class ProtocolError(RuntimeFault):
    """A control message, spec or status file does not have the documented shape."""


class CodecError(RuntimeFault):
    """A batch could not be encoded or decoded; carries the codec and the seq id if known."""

    def __init__(self, codec: str, message: str, *, seq: int | None = None, hint: str = "") -> None:
        self.codec = codec
        self.seq = seq
        self.hint = hint
        where = f" (seq {seq})" if seq is not None else ""
        text = f"{codec}{where}: {message}"
        super().__init__(f"{text}\n    hint: {hint}" if hint else text)


class FatalError(RuntimeFault):
    """A user function raised under ``on_error: stop``: the topology must end.

    ``component`` is ``name/index``; ``seq`` is the message's id when one was involved."""

    def __init__(self, component: str, message: str, *, seq: int | None = None) -> None:
        self.component = component
        self.seq = seq
        super().__init__(message)
