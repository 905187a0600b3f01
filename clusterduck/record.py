"""Frozen value objects that cost nothing to define.

A frozen ``@dataclass`` compiles half a dozen methods with ``exec`` when its class is
created: about 1 ms each on Python 3.11, paid by every interpreter that imports the
module. ``protocol.py`` defines two dozen of them and every supervisor and process
imports it on every start (issue 12: per-host CPU of ``up``). A :class:`Record` gives the
same API — keyword or positional construction with defaults, read-only fields, ``==``,
``hash``, ``repr`` — from methods written once here, so defining a record class costs a
few microseconds; building one costs about as much as a dataclass.

    class Point(Record):
        x: int
        y: int = 0
        tags: Mapping[str, str] = EMPTY  # each instance gets a new empty dict

``replace(**changes)`` is ``dataclasses.replace``; ``as_dict()`` the fields as a shallow
dict (what ``dataclasses.asdict`` gave for flat fields). The type checker sees a frozen
dataclass (PEP 681 ``dataclass_transform``). Standard library only: hosts import it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from typing import Self

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # Python 3.10 hosts: the decorator only informs type checkers
    _T = TypeVar("_T")

    def dataclass_transform(**_: Any) -> Callable[[_T], _T]:
        return lambda cls: cls


__all__ = ["EMPTY", "Record", "FrozenRecordError"]

# The default of a mapping field: each instance gets a new empty dict (a dataclass's
# ``field(default_factory=dict)``).
EMPTY: Mapping[str, Any] = MappingProxyType({})
_MISSING = object()


class FrozenRecordError(AttributeError):
    """A field of a record was assigned after construction (records are frozen)."""


@dataclass_transform(frozen_default=True)
class Record:
    """Base of the frozen value types: fields are the class's annotations (not
    ``ClassVar``), in order; a class attribute of the same name is the default."""

    _fields: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, Any]] = {}
    # Fields left out of repr() (keys, secrets).
    _hidden: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, *, hidden: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = list(cls._fields)
        defaults = dict(cls._defaults)
        for name, kind in cls.__dict__.get("__annotations__", {}).items():
            if str(kind).startswith(("ClassVar", "typing.ClassVar")):
                continue
            if name not in names:
                names.append(name)
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
            elif defaults:
                raise TypeError(f"{cls.__name__}.{name}: a field without a default after one with")
        cls._fields = tuple(names)
        cls._defaults = defaults
        cls._hidden = cls._hidden | frozenset(hidden)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fields = self._fields
        if len(args) > len(fields):
            raise TypeError(
                f"{type(self).__name__}() takes {len(fields)} arguments, got {len(args)}"
            )
        values = dict(zip(fields, args, strict=False))
        defaults = self._defaults
        for name in fields[len(args) :]:
            value = kwargs.pop(name, _MISSING)
            if value is _MISSING:
                value = defaults.get(name, _MISSING)
                if value is _MISSING:
                    raise TypeError(f"{type(self).__name__}() missing argument {name!r}")
                if value is EMPTY:
                    value = {}
            values[name] = value
        if kwargs:
            extra = ", ".join(map(repr, kwargs))
            if any(k in values for k in kwargs):
                raise TypeError(f"{type(self).__name__}() got {extra} twice")
            raise TypeError(f"{type(self).__name__}() got unexpected argument(s) {extra}")
        self.__dict__.update(values)

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenRecordError(f"cannot assign {name!r}: a {type(self).__name__} is frozen")

    def __delattr__(self, name: str) -> None:
        raise FrozenRecordError(f"cannot delete {name!r}: a {type(self).__name__} is frozen")

    def _values(self) -> tuple[Any, ...]:
        d = self.__dict__
        return tuple(d[name] for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={self.__dict__[name]!r}" for name in self._fields if name not in self._hidden
        )
        return f"{type(self).__name__}({shown})"

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (as ``dataclasses.replace``)."""
        unknown = set(changes) - set(self._fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(unknown)}")
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.__dict__.update(changes)
        return copy

    def as_dict(self) -> dict[str, Any]:
        """The fields, in order (shallow: nested values are not converted)."""
        return dict(self.__dict__)
