"""Generators as Python expressions, compiled into one function per record schema.

A record has hundreds of leaf values; calling a closure for each one made generation too slow
for the volumes the simulator serves. So a generator here carries its *code*: an expression over
``c`` (the ``GenContext``), ``r()`` (a uniform draw) and ``$name`` placeholders bound to Python
objects. Composite generators (objects, arrays, nullable values) splice their children's code
into theirs, and :func:`compiled` turns the result into one function. Every generator is also a
plain callable, ``gen(c) -> value``, for the places that call rather than inline.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_PLACEHOLDER = re.compile(r"\$(\w+)")


@dataclass(frozen=True)
class Code:
    """A Python expression with ``$name`` placeholders and the objects they stand for."""

    text: str
    bindings: dict[str, Any]

    def renamed(self, prefix: str) -> Code:
        """The same code with every placeholder prefixed, so that siblings cannot collide."""
        text = _PLACEHOLDER.sub(lambda m: f"${prefix}{m.group(1)}", self.text)
        return Code(text, {prefix + name: value for name, value in self.bindings.items()})


def code_of(gen: Callable[[Any], Any]) -> Code:
    """The code of a generator: its own, or a call of it."""
    code = getattr(gen, "code", None)
    return code if code is not None else Code("$g(c)", {"g": gen})


def compiled(code: Code) -> Callable[[Any], Any]:
    """A function ``gen(c)`` evaluating ``code``, which keeps the code for further splicing."""
    text = _PLACEHOLDER.sub(lambda m: m.group(1), code.text)
    namespace = dict(code.bindings)
    # Placeholders only name objects in ``namespace``; the rest of the text is built by this
    # package from literals (numbers, repr()-quoted property names).
    exec(f"def gen(c):\n    r = c.r\n    return {text}\n", namespace)  # noqa: S102
    gen = namespace["gen"]
    gen.code = code
    return gen


def expression(text: str, **bindings: Any) -> Callable[[Any], Any]:
    """A generator given by one expression, e.g. ``expression("$values[int(r() * 3)]", …)``."""
    return compiled(Code(text, bindings))


def combine(template: str, *children: Callable[[Any], Any], **bindings: Any) -> Callable[[Any], Any]:
    """A generator whose code is ``template`` with ``{0}``, ``{1}``… replaced by the children's
    code (parenthesized). The template must not contain other braces; build literal braces
    with :func:`combine_object`.
    """
    parts: list[str] = []
    merged = dict(bindings)
    for index, child in enumerate(children):
        code = code_of(child).renamed(f"c{index}_")
        parts.append(f"({code.text})")
        merged.update(code.bindings)
    return compiled(Code(template.format(*parts), merged))


def combine_object(fields: tuple[tuple[str, Callable[[Any], Any]], ...]) -> Callable[[Any], Any]:
    """A generator of ``{name: value, …}`` with every field's code inlined."""
    items: list[str] = []
    merged: dict[str, Any] = {}
    for index, (name, child) in enumerate(fields):
        code = code_of(child).renamed(f"f{index}_")
        items.append(f"{name!r}: ({code.text})")
        merged.update(code.bindings)
    return compiled(Code("{" + ", ".join(items) + "}", merged))
