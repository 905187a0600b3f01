"""Import user entry points (``module:attr``) from a topology's code folder.

Used twice: by validation, to prove every entry imports and accepts the calls the
runtime will make, and by the runtime, to load user code inside each worker process.
Nothing here prints; every failure is an :class:`EntryError` carrying a one-line hint.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import inspect
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .exceptions import EntryError

__all__ = [
    "EntryError",
    "bind_problem",
    "init_problem",
    "positional_arity",
    "positional_range",
    "resolve_entry",
]


# Code folders this process put on sys.path; only the latest one stays there.
_CODE_DIRS: list[str] = []


def resolve_entry(entry: str, code_dir: Path) -> object:
    """The callable named by ``module:attr``, imported with ``code_dir`` first on sys.path."""
    module_name, sep, attr_path = entry.partition(":")
    if not sep or not module_name or not attr_path:
        raise EntryError(
            entry,
            f"entry {entry!r} is not module:attr",
            "write it as module:function or module:Class",
        )
    code_dir = Path(code_dir).resolve()
    _put_first_on_path(code_dir)
    _forget_stale_module(module_name, code_dir)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise _import_error(entry, module_name, code_dir, exc) from exc
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            import difflib  # only for the hint: every worker start would pay for it

            close = difflib.get_close_matches(
                part, [n for n in dir(obj) if not n.startswith("_")], n=1
            )
            hint = (
                f"did you mean {module_name}:{close[0]}?"
                if close
                else (f"define {part} in {module_name}, or fix the entry")
            )
            raise EntryError(entry, f"{module_name!r} has no attribute {part!r}", hint) from exc
    if not callable(obj):
        raise EntryError(
            entry,
            f"{entry} is a {type(obj).__name__}, not a function or class",
            "point the entry at a function or a class",
        )
    return obj


def positional_range(obj: object) -> tuple[int, int | None]:
    """(required, maximum) positional arguments one call takes; maximum None = unlimited.

    For a class this is about calling its *instances* (``__call__`` minus self), since
    the runtime instantiates a class once and then calls the instance per message.
    Callables without an introspectable signature are reported as ``(0, None)``.
    Raises ``TypeError`` for a class whose instances are not callable.
    """
    try:
        sig = _call_signature(obj)
    except (ValueError, TypeError) as exc:
        if isinstance(obj, type) and "not callable" in str(exc):
            raise
        return 0, None
    required, maximum = 0, 0
    for param in sig.parameters.values():
        if param.kind is param.VAR_POSITIONAL:
            return required, None
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            maximum += 1
            if param.default is param.empty:
                required += 1
    return required, maximum


def positional_arity(obj: object) -> int | None:
    """Number of positional parameters a call takes; None when ``*args`` makes it unlimited."""
    return positional_range(obj)[1]


def bind_problem(
    obj: object, positional: int, keywords: Mapping[str, Any] | None = None
) -> str | None:
    """Why calling ``obj`` (an instance, for a class) with these arguments would fail, or None."""
    try:
        sig = _call_signature(obj)
    except (ValueError, TypeError) as exc:
        return str(exc) if isinstance(obj, type) else None
    try:
        sig.bind(*([None] * positional), **dict(keywords or {}))
    except TypeError as exc:
        return str(exc)
    return None


def init_problem(cls: type, keywords: Mapping[str, Any]) -> str | None:
    """Why ``cls(**keywords)`` would fail, or None (the runtime instantiates with ``args``)."""
    try:
        sig = inspect.signature(cls)
    except (ValueError, TypeError):
        return None
    try:
        sig.bind(**dict(keywords))
    except TypeError as exc:
        return str(exc)
    return None


def _call_signature(obj: object) -> inspect.Signature:
    if not isinstance(obj, type):
        return inspect.signature(obj)  # type: ignore[arg-type]
    if not any("__call__" in vars(klass) for klass in obj.__mro__ if klass is not object):
        raise TypeError(f"instances of {obj.__name__} are not callable (no __call__ method)")
    sig = inspect.signature(obj.__call__)
    if isinstance(inspect.getattr_static(obj, "__call__"), (staticmethod, classmethod)):
        return sig
    params = list(sig.parameters.values())[1:]  # drop self
    return sig.replace(parameters=params)


def _put_first_on_path(code_dir: Path) -> None:
    """Make ``code_dir`` the first place imports look, and drop folders we added before."""
    entry = str(code_dir)
    for old in _CODE_DIRS:
        while old != entry and old in sys.path:
            sys.path.remove(old)
    if entry not in _CODE_DIRS:
        _CODE_DIRS.append(entry)
    if sys.path and sys.path[0] == entry:
        return
    while entry in sys.path:
        sys.path.remove(entry)
    sys.path.insert(0, entry)
    importlib.invalidate_caches()


def _forget_stale_module(module_name: str, code_dir: Path) -> None:
    """Drop a cached module that another code folder provided.

    Validating two topologies in one process (tests, an IDE, ``validate a.yaml b.yaml``)
    must not hand the second one the first one's module of the same name.
    """
    top = module_name.split(".")[0]
    origin = getattr(sys.modules.get(top), "__file__", None)
    if origin is None:
        return
    origin_path = Path(origin).resolve()
    from_other = any(origin_path.is_relative_to(d) for d in _CODE_DIRS if d != str(code_dir))
    spec = importlib.machinery.PathFinder.find_spec(top, [str(code_dir)])
    shadowed = (
        spec is not None and spec.origin is not None and Path(spec.origin).resolve() != origin_path
    )
    if from_other or shadowed:
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]


def _import_error(entry: str, module_name: str, code_dir: Path, exc: BaseException) -> EntryError:
    if (
        isinstance(exc, ModuleNotFoundError)
        and exc.name
        and (module_name == exc.name or module_name.startswith(exc.name + "."))
    ):
        return EntryError(
            entry,
            f"no module {module_name!r} in {code_dir}",
            "check the module name in entry, or the topology's code: folder",
        )
    summary = traceback.format_exception_only(type(exc), exc)[-1].strip()
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if Path(f.filename).resolve().is_relative_to(code_dir)]
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({Path(exc.filename).name}:{exc.lineno})"
    elif user:
        where = f" ({Path(user[-1].filename).name}:{user[-1].lineno})"
    if isinstance(exc, ModuleNotFoundError):
        hint = f"install {exc.name!r} into the Python that runs clusterduck"
    else:
        hint = f"fix {module_name}; `python -c 'import {module_name}'` in the code folder shows why"
    return EntryError(entry, f"importing {module_name!r} failed{where}: {summary}", hint)
