r"""The settings one editor family reads: a frozen dataclass per family, typed, validated, parsed from text.

Every editor module declares the settings that only its family reads as a subclass of
:class:`EditorSettings` (LoRA's ranks, Adam-NSCL's threshold, the closed-form editors' :math:`\lambda`,
UltraEdit's step size, ...) and names it in its :class:`~crispedit_lite.editing.registry.Editor`
record; what more than one family reads (learning rate, :math:`\gamma`, layers, chunk size, ...) stays
a field of :class:`~crispedit_lite.editing.config.EditConfig`. A field's type annotation is its
contract: :meth:`EditorSettings.__post_init__` checks every value against it (``int``, ``float``,
``bool``, ``str``, ``Literal`` choices, ``tuple[...]``, ``X | None``) and turns lists into tuples, and
:func:`parse_value` reads the same types from command-line text (``--set lora_targets=q_proj,v_proj``).
A subclass adds its range checks in its own ``__post_init__`` after ``super().__post_init__()``.

Described on the book page ``running``.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Union

__all__ = ["EditorSettings", "check", "field_types", "parse_value"]

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def field_types(cls: type) -> dict[str, Any]:
    """``{field: type}`` of a dataclass, with its string annotations resolved.

    Described on the book page ``running``.
    """
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _optional(tp: Any) -> tuple[bool, Any]:
    """``(allows None, the other type)`` of ``X | None`` (``(False, tp)`` for any other type)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def expected(tp: Any) -> str:
    """What a value of type ``tp`` looks like, in words (for error messages)."""
    optional, tp = _optional(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        text = "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    elif origin is tuple:
        text = f"a comma list of {expected(typing.get_args(tp)[0])}s"
    else:
        text = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))
    return text + (" or none" if optional else "")


def coerce_value(name: str, value: Any, tp: Any) -> Any:
    """``value`` checked against the annotation ``tp`` (lists become tuples, integers floats).

    Raises ``ValueError("<name> must be <expected>, got <value>")``.
    """
    optional, inner = _optional(tp)
    if value is None and optional:
        return None
    origin = typing.get_origin(inner)
    bad = ValueError(f"{name} must be {expected(tp)}, got {value!r}")
    if inner is Any:
        return value
    if origin is Literal:
        if value not in typing.get_args(inner) or isinstance(value, bool):
            raise bad
        return value
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise bad
        return tuple(coerce_value(name, v, typing.get_args(inner)[0]) for v in value)
    if inner is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if inner is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise bad
        return int(value)
    if inner is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise bad
        return float(value)
    if inner is str and not isinstance(value, str):
        raise bad
    return value


def parse_value(name: str, text: str, tp: Any) -> Any:
    """Command-line ``text`` as a value of the annotation ``tp``, then :func:`coerce_value`.

    ``none`` / ``null`` for ``X | None``; ``true`` / ``false`` (``yes``, ``no``, ``1``, ``0``) for a
    ``bool``; a comma list for a ``tuple``. Raises ``ValueError("<name>=<text>: expected ...")``.
    Described on the book page ``running``.
    """
    optional, inner = _optional(tp)
    raw = text.strip()
    if optional and raw.lower() in ("none", "null"):
        return None
    bad = ValueError(f"{name}={text!r}: expected {expected(tp)}")
    origin = typing.get_origin(inner)
    try:
        if origin is Literal:
            choices = {str(a): a for a in typing.get_args(inner)}
            if raw not in choices:
                raise bad
            value: Any = choices[raw]
        elif origin is tuple:
            elem = typing.get_args(inner)[0]
            value = tuple(parse_value(name, part, elem) for part in raw.split(",") if part.strip())
        elif inner is bool:
            if raw.lower() not in _TRUE + _FALSE:
                raise bad
            value = raw.lower() in _TRUE
        elif inner is int:
            value = int(raw)
        elif inner is float:
            value = float(raw)
        else:
            value = raw
    except ValueError as err:
        raise (err if err is bad or str(err).startswith(f"{name}=") else bad) from None
    return coerce_value(name, value, tp)


@dataclasses.dataclass(frozen=True)
class EditorSettings:
    """Base of every editor family's settings: values checked against their annotations.

    Subclasses are frozen dataclasses whose fields carry defaults; ``paper`` maps field names to the
    paper's or the official code's values where they exist (documentation and tests: the defaults
    are the values this library runs with).

    Described on the book page ``running``.
    """

    paper: ClassVar[Mapping[str, Any]] = {}

    def __post_init__(self) -> None:
        for name, tp in field_types(type(self)).items():
            object.__setattr__(self, name, coerce_value(name, getattr(self, name), tp))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The settings' names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{field: value}`` (tuples as lists)."""
        return {name: list(v) if isinstance(v, tuple) else v
                for name in self.field_names() for v in [getattr(self, name)]}


def check(ok: bool, name: str, what: str, value: Any) -> None:
    """Raise ``ValueError("<name> must be <what>, got <value>")`` unless ``ok`` (for ``__post_init__``).

    Described on the book page ``running``.
    """
    if not ok:
        raise ValueError(f"{name} must be {what}, got {value!r}")
