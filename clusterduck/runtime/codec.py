"""Serializers for batches of messages: ``pickle``, ``msgpack`` and ``json``.

A batch is a list of ``(seq_id, value)`` pairs and is encoded in one call, which is what
makes batching pay off on the hot path. What comes back from :meth:`Codec.loads`:

* ``pickle`` (protocol 5): exactly what was sent (tuples stay tuples), any picklable value.
  Only ever read from authenticated peers (docs/reference.md §6).
* ``msgpack``: pairs come back as 2-item *lists*, and so does every tuple inside a value;
  ``bytes`` stay ``bytes``; dict keys may be any msgpack type (a tuple key comes back as a
  tuple). Ints must fit in 64 bits.
* ``json`` (stdlib, compact): pairs and tuples come back as lists; dict keys come back as
  ``str`` (JSON only has string keys); no ``bytes``.

Values msgpack/json cannot encode raise :class:`CodecError` naming the seq id, where in
the value the offending object sits, its type, and suggesting ``serializer: pickle``.
"""

from __future__ import annotations

import json
import pickle
from abc import ABC, abstractmethod
from typing import Any

import msgpack

from clusterduck.exceptions import CodecError
from clusterduck.protocol import Batch

__all__ = ["CODECS", "Codec", "CodecError", "get_codec"]


class Codec(ABC):
    """Turns a batch of ``(seq_id, value)`` pairs into bytes and back."""

    name: str

    @abstractmethod
    def dumps(self, batch: Batch) -> bytes:
        """Encode a whole batch in one call."""

    @abstractmethod
    def loads(self, data: bytes) -> list[Any]:
        """Decode a batch; pairs may come back as 2-item lists (see the module docstring)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class PickleCodec(Codec):
    """Any picklable value, round-tripped exactly; the default."""

    name = "pickle"

    def dumps(self, batch: Batch) -> bytes:
        try:
            return pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            seq = _first_failing_seq(batch)
            raise CodecError(
                self.name,
                f"cannot pickle a value: {exc}",
                seq=seq,
                hint="return plain data, or instances of module-level classes "
                "(no lambdas, local classes, locks, sockets or open files)",
            ) from exc

    def loads(self, data: bytes) -> list[Any]:
        try:
            batch = pickle.loads(data)
        except Exception as exc:  # unpickling can raise almost anything
            raise CodecError(
                self.name,
                f"cannot unpickle a batch of {len(data)} bytes: {type(exc).__name__}: {exc}",
                hint="every class in a message must be importable in the receiving process "
                "(ship it in the topology's `code` folder)",
            ) from exc
        return _check_batch(self.name, batch)


class MsgpackCodec(Codec):
    """Compact and language-neutral; tuples come back as lists."""

    name = "msgpack"

    def dumps(self, batch: Batch) -> bytes:
        try:
            data: bytes = msgpack.packb(batch, use_bin_type=True)
            return data
        except (TypeError, ValueError, OverflowError) as exc:
            raise _unsupported(self.name, batch, exc, _msgpack_scalar, _msgpack_key) from exc

    def loads(self, data: bytes) -> list[Any]:
        try:
            try:
                batch = msgpack.unpackb(data, raw=False, strict_map_key=False)
            except TypeError:
                # A tuple dict key decodes as an (unhashable) list; the slower hook fixes it.
                batch = msgpack.unpackb(
                    data, raw=False, strict_map_key=False, object_pairs_hook=_dict_with_keys
                )
        except Exception as exc:  # msgpack raises several unrelated types on bad input
            raise CodecError(
                self.name, f"cannot decode a batch of {len(data)} bytes: {exc}"
            ) from exc
        return _check_batch(self.name, batch)


class JsonCodec(Codec):
    """Human-readable, stdlib only; tuples come back as lists, dict keys as str."""

    name = "json"

    def dumps(self, batch: Batch) -> bytes:
        try:
            return json.dumps(batch, separators=(",", ":")).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise _unsupported(self.name, batch, exc, _json_scalar, _json_key) from exc

    def loads(self, data: bytes) -> list[Any]:
        try:
            batch = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise CodecError(
                self.name, f"cannot decode a batch of {len(data)} bytes: {exc}"
            ) from exc
        return _check_batch(self.name, batch)


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


def _check_batch(codec: str, batch: Any) -> list[Any]:
    if not isinstance(batch, list):
        raise CodecError(codec, f"decoded a {type(batch).__name__}, expected a list of pairs")
    return batch


def _freeze(key: Any) -> Any:
    return tuple(_freeze(k) for k in key) if isinstance(key, list) else key


def _dict_with_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    return {_freeze(k): v for k, v in pairs}


def _first_failing_seq(batch: Batch) -> int | None:
    """On the error path only: which pair of the batch does not pickle."""
    for pair in batch:
        try:
            pickle.dumps(pair, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # only looking for the culprit
            try:
                return int(pair[0])
            except (TypeError, ValueError, IndexError):
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
    codec: str, batch: Batch, exc: BaseException, scalar: Any, key_check: Any
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
