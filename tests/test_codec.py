"""Codecs: round trips for pickle, msgpack and json, and clear errors for what they refuse."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterduck.exceptions import ClusterduckError
from clusterduck.runtime.codec import CODECS, Codec, CodecError, get_codec


def pairs_of(batch: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """What msgpack/json give back for a batch: (seq, value) tuples, values as_lists."""
    return [(seq, as_lists(value)) for seq, value in batch]


def as_lists(value: Any) -> Any:
    """What msgpack/json give back for a value: tuples become lists."""
    if isinstance(value, (list, tuple)):
        return [as_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: as_lists(v) for k, v in value.items()}
    return value


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=20,
)
batches = st.lists(st.tuples(st.integers(0, 2**40), values), max_size=10)


def test_names_and_lookup() -> None:
    assert CODECS == ("pickle", "msgpack", "json")
    for name in CODECS:
        codec = get_codec(name)
        assert isinstance(codec, Codec) and codec.name == name
        assert get_codec(name) is codec
    with pytest.raises(CodecError, match="(?s)unknown serializer.*pickle, msgpack, json"):
        get_codec("yaml")


def test_codec_error_is_a_clusterduck_error() -> None:
    assert issubclass(CodecError, ClusterduckError)


@settings(max_examples=100, deadline=None)
@given(batches)
def test_pickle_round_trip_is_exact(batch: list[tuple[int, Any]]) -> None:
    codec = get_codec("pickle")
    assert codec.loads(codec.dumps(batch)) == batch


@settings(max_examples=100, deadline=None)
@given(batches)
def test_msgpack_round_trip(batch: list[tuple[int, Any]]) -> None:
    codec = get_codec("msgpack")
    assert codec.loads(codec.dumps(batch)) == pairs_of(batch)


@settings(max_examples=100, deadline=None)
@given(batches)
def test_json_round_trip(batch: list[tuple[int, Any]]) -> None:
    codec = get_codec("json")
    assert codec.loads(codec.dumps(batch)) == pairs_of(batch)


def test_pickle_uses_the_highest_protocol_and_keeps_types() -> None:
    batch = [(1, {"t": (1, 2), "s": {3}, "b": b"\x00"})]
    data = get_codec("pickle").dumps(batch)
    assert data[1] == pickle.HIGHEST_PROTOCOL >= 5
    assert get_codec("pickle").loads(data) == batch


def test_msgpack_specifics() -> None:
    codec = get_codec("msgpack")
    batch = [(3, {1: b"raw", "k": bytearray(b"ab")}), (4, {(1, (2, 3)): "tuple key"})]
    assert codec.loads(codec.dumps(batch)) == [
        (3, {1: b"raw", "k": b"ab"}),
        (4, {(1, (2, 3)): "tuple key"}),
    ]


def test_json_is_compact_and_keys_become_str() -> None:
    codec = get_codec("json")
    assert codec.dumps([(1, {"a": [1, 2]})]) == b'[1,[{"a":[1,2]}]]'
    assert codec.loads(codec.dumps([(1, {2: "x"})])) == [(1, {"2": "x"})]


@pytest.mark.parametrize(
    ("name", "value", "what", "where"),
    [
        ("msgpack", {"tags": [1, {2, 3}]}, "'set' object", "value['tags'][1]"),
        ("msgpack", 2**70, "int that does not fit in 64 bits", "at value"),
        ("msgpack", {"x": object()}, "'object' object", "value['x']"),
        ("json", {"blob": b"abc"}, "'bytes' object", "value['blob']"),
        ("json", {(1, 2): "v"}, "dict key of type 'tuple'", "value key (1, 2)"),
        ("json", [1.5, {1, 2}], "'set' object", "value[1]"),
    ],
)
def test_unencodable_value_names_type_place_seq_and_pickle(
    name: str, value: Any, what: str, where: str
) -> None:
    codec = get_codec(name)
    with pytest.raises(CodecError) as info:
        codec.dumps([(1, "fine"), (17, value)])
    message = str(info.value)
    assert what in message and where in message
    assert "seq 17" in message and info.value.seq == 17
    assert "serializer: pickle" in message
    assert isinstance(info.value.__cause__, (TypeError, ValueError, OverflowError))


def test_circular_value_is_reported() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(CodecError, match="circular reference"):
        get_codec("json").dumps([(2, loop)])


def test_unpicklable_value_names_the_seq() -> None:
    with pytest.raises(CodecError, match=r"pickle \(seq 9\): cannot pickle") as info:
        get_codec("pickle").dumps([(8, 1), (9, threading.Lock())])
    assert "module-level" in str(info.value)


@pytest.mark.parametrize("name", CODECS)
def test_garbage_does_not_decode(name: str) -> None:
    with pytest.raises(CodecError, match=f"^{name}"):
        get_codec(name).loads(b"\xc1\xff not a batch")


@pytest.mark.parametrize("name", CODECS)
def test_non_list_payload_is_refused(name: str) -> None:
    codec = get_codec(name)
    data = {"pickle": pickle.dumps(7), "msgpack": b"\x07", "json": b"7"}[name]
    with pytest.raises(CodecError, match="expected seq ids and values"):
        codec.loads(data)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(2**62), 2**62), max_size=20), st.sampled_from(CODECS))
def test_ids_travel_as_a_first_id_when_consecutive_else_as_a_list(
    ids: list[int], name: str
) -> None:
    """Columns on the wire (docs/reference.md, Frames): the ids come back exactly, as a
    range exactly when they are consecutive; the values as one list."""
    codec = get_codec(name)
    values = [str(i) for i in range(len(ids))]
    data = codec.dumps(list(zip(ids, values, strict=True)))
    seqs, got = codec.loads_columns(data)
    assert list(seqs) == ids and got == values
    consecutive = bool(ids) and ids == list(range(ids[0], ids[0] + len(ids)))
    assert isinstance(seqs, range) == consecutive
    assert codec.decode(data)[0] == (ids[0] if consecutive else ids)
    assert codec.dumps_columns(range(5, 5 + len(ids)), values) == codec.dumps(
        list(zip(range(5, 5 + len(ids)), values, strict=True))
    )
