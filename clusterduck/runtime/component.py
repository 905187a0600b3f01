"""What one worker instance does with its messages, without any socket.

``WorkerLogic`` takes batches per input and returns the batch to forward: it calls the
user's function (plainly, per bundle, or in strict id order), turns generators into
several outputs, counts and logs errors, and drains bundler and sequencer at end of
stream. The process loop (``process.py``) feeds it from sockets; ``testing.py`` feeds it
directly. Keeping it pure is what lets both share one behaviour.
"""

from __future__ import annotations

import functools
import inspect
import logging
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import is_not
from pathlib import Path
from types import GeneratorType
from typing import Any

from ..entries import resolve_entry
from ..exceptions import EntryError, FatalError
from ..protocol import MAX_PENDING, Batch, Columns, ComponentSpec
from .anomalies import Anomalies
from .bundler import Bundler
from .context import _running
from .context import _seq as _current_seq
from .metrics import Metrics
from .sequencer import Sequencer

__all__ = ["FatalError", "UserCode", "WorkerLogic", "load_user_code", "message_failed"]

log = logging.getLogger("clusterduck.runtime")


def message_failed(
    component: str, seq: int, exc: Exception, metrics: Metrics, *, stop: bool, where: str = ""
) -> None:
    """docs/reference.md §1 for one message: traceback logged with its seq id, counted, dropped —
    or, under ``on_error: stop``, the end of the topology."""
    metrics.errors += 1
    metrics.last_error = f"seq {seq}: {where}{type(exc).__name__}: {exc}"
    log.error(
        "%s raised on seq %d%s (message dropped):\n%s",
        component,
        seq,
        f" in {where.rstrip(': ')}" if where else "",
        "".join(traceback.format_exception(exc)).rstrip(),
    )
    if stop:
        raise FatalError(
            component, f"{component} raised on seq {seq}: {exc!r} (on_error: stop)", seq=seq
        ) from exc


@dataclass
class UserCode:
    """The user's callable for one instance, ready to call, and its optional close()."""

    call: Callable[..., Any]
    close: Callable[[], Any] | None
    is_async: bool = False


def load_user_code(component: ComponentSpec, code_dir: Path) -> UserCode:
    """Import the entry and bind ``args``: a class is instantiated once, a function
    gets ``args`` as keyword arguments on every call."""
    target = resolve_entry(component.entry, code_dir)
    args = dict(component.args)
    if not callable(target):  # validation checked it; a changed file may not be
        raise EntryError(component.entry, f"{component.entry} is not callable")
    if inspect.isclass(target):
        instance = target(**args)
        if not callable(instance):
            raise EntryError(
                component.entry,
                f"instances of {component.entry} are not callable",
                "give the class a __call__ method",
            )
        close = getattr(instance, "close", None)
        is_async = inspect.iscoroutinefunction(type(instance).__call__)
        return UserCode(instance, close if callable(close) else None, is_async)
    is_async = inspect.iscoroutinefunction(target)
    call = functools.partial(target, **args) if args else target
    return UserCode(call, None, is_async)


class _Failed:
    """The result recorded for a call that raised (``WorkerLogic._map_plain``)."""


_FAILED = _Failed()
_SPECIAL = frozenset({type(None), GeneratorType, _Failed})


class WorkerLogic:
    """Bundling, sequencing and calling for one worker instance."""

    def __init__(
        self,
        worker: ComponentSpec,
        call: Callable[..., Any],
        *,
        metrics: Metrics | None = None,
        anomalies: Anomalies | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.name = worker.name
        self.call = call
        self.metrics = metrics or Metrics()
        self.anomalies = anomalies or Anomalies()
        self.stop_on_error = worker.on_error == "stop"
        self.bundler = (
            Bundler(worker.inputs, max_pending=max_pending, anomalies=self.anomalies)
            if worker.bundle
            else None
        )
        self.sequencer = (
            Sequencer(
                worker.sequence_start,
                gap_timeout=worker.gap_timeout,
                max_pending=max_pending,
                anomalies=self.anomalies,
            )
            if worker.sequential
            else None
        )
        # at-least-once: the ids called since the caller set it (runtime/guarantee.py
        # acknowledges a held message once its id left the worker); None otherwise.
        self.released: list[int] | None = None

    # -- feeding -------------------------------------------------------------------

    def feed(self, input_name: str, batch: Batch) -> Batch:
        """Process one received batch; return what to forward downstream."""
        self.metrics.received += len(batch)
        out: Batch = []
        if self.bundler is None and self.sequencer is None:
            self._call_plain(batch, out)
        elif self.bundler is None:
            sequencer = self.sequencer
            assert sequencer is not None
            for seq, value in batch:
                for ready_seq, args in sequencer.add(seq, (value,)):
                    self._invoke(ready_seq, args, out)
        else:
            bundler = self.bundler
            for seq, value in batch:
                values = bundler.add(input_name, seq, value)
                if values is not None:
                    self._release(seq, values, out)
        self.metrics.emitted += len(out)
        return out

    def feed_columns(self, input_name: str, seqs: Sequence[int], values: list[Any]) -> Columns:
        """``feed`` for a batch as its two columns (a decoded frame, runtime/codec.py);
        what to forward comes back as columns too (for ``Outbox.emit_columns``)."""
        if self.bundler is not None or self.sequencer is not None:
            out = self.feed(input_name, list(zip(seqs, values, strict=True)))
            return [seq for seq, _ in out], [value for _, value in out]
        self.metrics.received += len(values)
        ids, results = self._map_plain(seqs, values)
        self.metrics.emitted += len(results)
        return ids, results

    def poll_timers(self) -> Batch:
        """Release what an expired ``gap_timeout`` allows."""
        if self.sequencer is None:
            return []
        out: Batch = []
        for seq, args in self.sequencer.poll():
            self._invoke(seq, args, out)
        self.metrics.emitted += len(out)
        return out

    def next_deadline(self) -> float | None:
        return self.sequencer.next_deadline() if self.sequencer is not None else None

    def finish(self) -> Batch:
        """End of stream: drop incomplete bundles, run the rest in order past gaps."""
        out: Batch = []
        if self.bundler is not None:
            self.bundler.finish()
        if self.sequencer is not None:
            for seq, args in self.sequencer.finish():
                self._invoke(seq, args, out)
        self.metrics.emitted += len(out)
        return out

    def holds(self, seq: int) -> bool:
        """Is a message with this id still waiting here (a bundle part, an early id)?"""
        if self.bundler is not None and self.bundler.holds(seq):
            return True
        return self.sequencer is not None and self.sequencer.holds(seq)

    def should_pause(self, input_name: str) -> bool:
        return self.bundler is not None and self.bundler.should_pause(input_name)

    def backlog(self) -> int:
        held = self.bundler.pending() if self.bundler is not None else 0
        waiting = self.sequencer.waiting() if self.sequencer is not None else 0
        return held + waiting

    # -- calling -------------------------------------------------------------------

    def _release(self, seq: int, values: tuple[Any, ...], out: Batch) -> None:
        if self.sequencer is None:
            self._invoke(seq, values, out)
        else:
            for ready_seq, args in self.sequencer.add(seq, values):
                self._invoke(ready_seq, args, out)

    def _call_plain(self, batch: Batch, out: Batch) -> None:
        # The hot path: one call per message, no tuple packing.
        call = self.call
        append = out.append
        current = _current_seq  # context().seq_id
        for seq, value in batch:
            try:
                current[0] = seq
                result = call(value)
                if result is None:
                    continue
                if type(result) is GeneratorType:
                    for item in result:
                        append((seq, item))
                else:
                    append((seq, result))
            except Exception as exc:  # noqa: BLE001 - user code may raise anything
                self._failed(seq, exc)

    def _map_plain(self, seqs: Sequence[int], values: list[Any]) -> Columns:
        """The hot path: the user's function over a whole slice with ``map``, so the loop
        runs in C and only the calls themselves run Python. ``context().seq_id`` reads
        the id being called from how many results there are so far (runtime/context.py).

        A call that raises is recorded as ``_FAILED`` in its place and the map goes on
        after it; a StopIteration ends ``map`` like the end of its input, so a result
        list shorter than the slice means the call after its end raised one. A returned
        generator is consumed once every call of the slice was made."""
        results: list[Any] = []
        extend, n = results.extend, len(values)
        call = self.call
        rest = iter(values)
        _running[0] = (seqs, results)
        try:
            while True:
                try:
                    extend(map(call, rest))
                except Exception as exc:  # noqa: BLE001 - user code may raise anything
                    self._failed(seqs[len(results)], exc)
                    results.append(_FAILED)
                    continue
                if len(results) == n:
                    break
                self._failed(seqs[len(results)], RuntimeError("the function raised StopIteration"))
                results.append(_FAILED)
        finally:
            _running[0] = None
        if results and results[0] is None and not any(map(is_not, results, repeat(None))):
            # A sink: identity only, in C. Not list.count(None), which also calls a
            # result's __eq__ (a numpy array's raises; one equal to anything is dropped).
            return [], []
        if _SPECIAL.isdisjoint(set(map(type, results))):
            return seqs, results  # one result per call, under the ids of the input
        ids: list[int] = []
        out: list[Any] = []
        for seq, result in zip(seqs, results, strict=True):
            if result is None or result is _FAILED:
                continue
            if type(result) is GeneratorType:
                _current_seq[0] = seq
                try:
                    for item in result:
                        ids.append(seq)
                        out.append(item)
                except Exception as exc:  # noqa: BLE001
                    self._failed(seq, exc)
            else:
                ids.append(seq)
                out.append(result)
        return ids, out

    def _invoke(self, seq: int, args: tuple[Any, ...], out: Batch) -> None:
        if self.released is not None:
            self.released.append(seq)
        try:
            _current_seq[0] = seq
            result = self.call(*args)
            if result is None:
                return
            if type(result) is GeneratorType:
                for item in result:
                    out.append((seq, item))
            else:
                out.append((seq, result))
        except Exception as exc:  # noqa: BLE001
            self._failed(seq, exc)

    def _failed(self, seq: int, exc: Exception) -> None:
        message_failed(self.name, seq, exc, self.metrics, stop=self.stop_on_error)
