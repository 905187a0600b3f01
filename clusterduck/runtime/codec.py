"""Serializers for batches of messages: ``pickle``, ``msgpack`` and ``json``.

A batch is a list of ``(seq_id, value)`` pairs and is encoded in one call, which is what
makes batching pay off on the hot path. On the wire it travels as two *columns*,
``[ids, values]`` (docs/reference.md, "Frames"): ``ids`` is the first seq id (an int)
when the ids are consecutive — what a spout's stream and every worker that passes each
message on send — else the list of ids; ``values`` is the plain list of values. So the
serializer sees one list of values, as a hand-batched pipeline's would, and checking a
decoded frame's shape is a type and length comparison, not a look at every pair.

:meth:`Codec.loads_columns` gives the columns back (ids as a ``range`` or a list of
ints); :meth:`Codec.loads` zips them into ``(seq_id, value)`` tuples. What comes back
for a *value*:

* ``pickle`` (protocol 5): exactly what was sent (tuples stay tuples), any picklable value.
  Only ever read from authenticated peers (docs/reference.md §6).
* ``msgpack``: every tuple inside a value comes back as a list; ``bytes`` stay ``bytes``;
  dict keys may be any msgpack type (a tuple key comes back as a tuple). Ints (seq ids
  too) must fit in 64 bits.
* ``json`` (stdlib, compact): tuples come back as lists; dict keys come back as ``str``
  (JSON only has string keys); no ``bytes``.

Values msgpack/json cannot encode raise :class:`CodecError` naming the seq id, where in
the value the offending object sits, its type, and suggesting ``serializer: pickle``.
"""

from __future__ import annotations

import json
import operator
import pickle
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

from clusterduck.exceptions import CodecError
from clusterduck.protocol import Batch, Columns, batch_columns

__all__ = ["CODECS", "Codec", "CodecError", "Columns", "get_codec"]

_first = operator.itemgetter(0)
_second = operator.itemgetter(1)


class Codec(ABC):
    """Turns a batch of ``(seq_id, value)`` pairs into bytes and back."""

    name: str

    def dumps(self, batch: Batch) -> bytes:
        """Encode a whole batch of pairs in one call."""
        return self.dumps_columns(list(map(_first, batch)), list(map(_second, batch)))

    def dumps_columns(self, seqs: Sequence[int], values: list[Any]) -> bytes:
        """Encode a batch given as its ids and its values (``len(seqs) == len(values)``)."""
        return self._encode([_ids(seqs), values], seqs, values)

    @abstractmethod
    def _encode(self, wire: list[Any], seqs: Sequence[int], values: list[Any]) -> bytes:
        """``wire`` in one call; errors name the seq id of the value that failed."""

    @abstractmethod
    def decode(self, data: bytes) -> Any:
        """The decoded object, whatever its shape; CodecError when it does not decode."""

    def loads_columns(self, data: bytes) -> Columns:
        """A batch as its two columns; CodecError when it does not decode or is no batch."""
        decoded = self.decode(data)
        cols = batch_columns(decoded)
        if cols is None:
            raise CodecError(
                self.name, f"decoded a {type(decoded).__name__}, expected seq ids and values"
            )
        return cols

    def loads(self, data: bytes) -> list[Any]:
        """A batch as ``(seq_id, value)`` tuples."""
        seqs, values = self.loads_columns(data)
        return list(zip(seqs, values, strict=True))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _ids(seqs: Sequence[int]) -> int | list[int]:
    """The first id when the ids are consecutive (checked in C), else the list of ids."""
    n = len(seqs)
    if type(seqs) is range:
        if seqs.step == 1 and n:
            return seqs.start
        return list(seqs)
    if n:
        first, last = seqs[0], seqs[-1]
        if (
            type(first) is int
            and type(last) is int
            and last - first == n - 1
            and (n < 3 or seqs == list(range(first, last + 1)))
        ):
            return first
    return seqs if type(seqs) is list else list(seqs)


class PickleCodec(Codec):
    """Any picklable value, round-tripped exactly; the default."""

    name = "pickle"

    def _encode(self, wire: list[Any], seqs: Sequence[int], values: list[Any]) -> bytes:
        try:
            return pickle.dumps(wire, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            seq = _first_failing_seq(seqs, values)
            raise CodecError(
                self.name,
                f"cannot pickle a value: {exc}",
                seq=seq,
                hint="return plain data, or instances of module-level classes "
                "(no lambdas, local classes, locks, sockets or open files)",
            ) from exc

    def decode(self, data: bytes) -> Any:
        try:
            return pickle.loads(data)
        except Exception as exc:  # unpickling can raise almost anything
            raise CodecError(
                self.name,
                f"cannot unpickle a batch of {len(data)} bytes: {type(exc).__name__}: {exc}",
                hint="every class in a message must be importable in the receiving process "
                "(ship it in the topology's `code` folder)",
            ) from exc


class MsgpackCodec(Codec):
    """Compact and language-neutral; tuples come back as lists."""

    name = "msgpack"

    def _encode(self, wire: list[Any], seqs: Sequence[int], values: list[Any]) -> bytes:
        import msgpack  # here only: 4 ms of every process start under pickle or json

        try:
            data: bytes = msgpack.packb(wire, use_bin_type=True)
            return data
        except (TypeError, ValueError, OverflowError) as exc:
            raise _unsupported(
                self.name, zip(seqs, values, strict=False), exc, _msgpack_scalar, _msgpack_key
            ) from exc

    def decode(self, data: bytes) -> Any:
        import msgpack  # see _encode

        try:
            try:
                return msgpack.unpackb(data, raw=False, strict_map_key=False)
            except TypeError:
                # A tuple dict key decodes as an (unhashable) list; the slower hook fixes it.
                return msgpack.unpackb(
                    data, raw=False, strict_map_key=False, object_pairs_hook=_dict_with_keys
                )
        except Exception as exc:  # msgpack raises several unrelated types on bad input
            raise CodecError(
                self.name, f"cannot decode a batch of {len(data)} bytes: {exc}"
            ) from exc


class JsonCodec(Codec):
    """Human-readable, stdlib only; tuples come back as lists, dict keys as str."""

    name = "json"

    def _encode(self, wire: list[Any], seqs: Sequence[int], values: list[Any]) -> bytes:
        try:
            return json.dumps(wire, separators=(",", ":")).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise _unsupported(
                self.name, zip(seqs, values, strict=False), exc, _json_scalar, _json_key
            ) from exc

    def decode(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise CodecError(
                self.name, f"cannot decode a batch of {len(data)} bytes: {exc}"
            ) from exc


_CODECS: dict[str, Codec] = {c.name: c for c in (PickleCodec(), MsgpackCodec(), JsonCodec())}
#: The serializer names a topology's ``settings.serializer`` accepts.
CODECS = tuple(_CODECS)


def get_codec(name: str) -> Codec:
    """The (stateless, shared) codec called ``name``."""
    try:
        return _CODECS[name]
    except KeyError:
        raise CodecError(
            str(name),
            "unknown serializer",
            hint=f"use one of: {', '.join(CODECS)}",
        ) from None


# ---------------------------------------------------------------------- helpers


def _freeze(key: Any) -> Any:
    return tuple(_freeze(k) for k in key) if isinstance(key, list) else key


def _dict_with_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    return {_freeze(k): v for k, v in pairs}


def _first_failing_seq(seqs: Sequence[int], values: list[Any]) -> int | None:
    """On the error path only: the id of the first value that does not pickle."""
    for seq, value in zip(seqs, values, strict=False):
        try:
            pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # only looking for the culprit
            try:
                return int(seq)
            except (TypeError, ValueError):
                return None
    return None


_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def _msgpack_scalar(value: Any) -> str | None:
    """None if msgpack encodes this leaf, else why not."""
    if value is None or isinstance(value, (bool, float, bytes, bytearray, memoryview)):
        return None
    if isinstance(value, int):
        if _INT64_MIN <= value <= _UINT64_MAX:
            return None
        return "an int that does not fit in 64 bits"
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return "a str that is not valid UTF-8 (lone surrogates)"
        return None
    return f"a {type(value).__name__!r} object"


def _msgpack_key(key: Any) -> str | None:
    return None if isinstance(key, tuple) else _msgpack_scalar(key)


def _json_scalar(value: Any) -> str | None:
    if value is None or isinstance(value, (bool, int, float, str)):
        return None
    return f"a {type(value).__name__!r} object"


def _json_key(key: Any) -> str | None:
    if key is None or isinstance(key, (bool, int, float, str)):
        return None
    return f"a dict key of type {type(key).__name__!r} (JSON keys are str)"


def _find(
    value: Any, path: str, scalar: Any, key_check: Any, ancestors: set[int]
) -> tuple[str, str] | None:
    """Depth-first search for the first object the codec cannot encode: (path, why)."""
    if isinstance(value, (list, tuple, dict)):
        if id(value) in ancestors:
            return path, "a circular reference"
        ancestors.add(id(value))
        try:
            if isinstance(value, dict):
                for k, v in value.items():
                    if isinstance(k, tuple):
                        found = _find(k, f"{path} key {k!r}", scalar, key_check, ancestors)
                        if found:
                            return found
                    why = key_check(k)
                    if why:
                        return f"{path} key {k!r}", why
                    found = _find(v, f"{path}[{k!r}]", scalar, key_check, ancestors)
                    if found:
                        return found
            else:
                for i, v in enumerate(value):
                    found = _find(v, f"{path}[{i}]", scalar, key_check, ancestors)
                    if found:
                        return found
        finally:
            ancestors.discard(id(value))
        return None
    why = scalar(value)
    return (path, why) if why else None


def _unsupported(
    codec: str, batch: Iterable[Any], exc: BaseException, scalar: Any, key_check: Any
) -> CodecError:
    """Build the error for a value msgpack/json cannot encode, naming seq, place and type."""
    hint = (
        "set `serializer: pickle` in the topology's settings, or convert the value to "
        "lists, dicts, str, int, float" + (", bytes" if codec == "msgpack" else "")
    )
    try:
        for pair in batch:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                return CodecError(codec, f"a batch item is not a (seq_id, value) pair: {pair!r}")
            seq, value = pair
            found = _find(value, "value", scalar, key_check, set())
            if found:
                where, why = found
                return CodecError(codec, f"cannot encode {why} at {where}", seq=seq, hint=hint)
    except RecursionError:
        pass
    return CodecError(codec, f"cannot encode the batch: {type(exc).__name__}: {exc}", hint=hint)
