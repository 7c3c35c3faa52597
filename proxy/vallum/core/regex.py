"""Regular expressions from configuration, matched in linear time (RE2), never by backtracking.

Why a module of its own: route ``regex`` and ``regex_rewrite_pattern`` run on request paths
before sign-in. Python's ``re`` backtracks, so one pattern such as ``^/repos/([\\w.-]+/?)+/x$``
and a 40-byte path keep a worker busy for hours. Pomerium and Envoy match with RE2, whose time is
linear in the text; so does Vallum, through the ``google-re2`` binding. Everything that compiles
a configured pattern goes through :func:`compile`, so no configured pattern reaches ``re``.

The syntax is RE2's (https://github.com/google/re2/wiki/Syntax), which is Python's minus what
needs backtracking. Deliberate choices where the two differ:

* Refused (:class:`RegexError`, with RE2's reason and a hint): backreferences (``\\1``,
  ``(?P=name)``), lookaround (``(?=``, ``(?!``, ``(?<=``, ``(?<!``), atomic groups and
  possessive quantifiers, ``(?x)`` and the other flags RE2 lacks, repetition counts above 1000,
  and patterns whose compiled form exceeds RE2's 8 MiB budget.
* ``\\Z`` is read as Python reads it (end of text) and handed to RE2 as ``\\z``.
* ``{,n}`` is refused: Python reads it as ``{0,n}``, RE2 as the literal text; write ``{0,n}``
  (or ``\\{,n\\}`` for the text).
* ``\\d``, ``\\w``, ``\\s`` and ``\\b`` are ASCII classes, as in RE2 and Envoy (Python's are
  Unicode). Vallum matches the normalised request path, which is ASCII (other characters are
  percent-encoded), so on paths the two engines agree.
* ``$`` matches only at the very end (Python's also before a final newline; a normalised path
  has none).

Substitutions (:meth:`Pattern.sub`) take ``\\1`` … ``\\9``, ``\\g<n>``, ``\\g<name>``, ``\\0``
and ``\\g<0>`` for the whole match (``\\0`` as in RE2 and Envoy; Python's ``\\0`` is a NUL,
which no path wants), and ``\\\\`` for a backslash; every other backslash is refused, and so is
a reference to a group the pattern lacks and a two-digit ``\\10`` (RE2 reads group 1 then ``0``,
Python group 10: write ``\\g<1>0`` or ``\\g<10>``). Templates are checked when compiled, never
at request time. Every non-overlapping match is replaced, as by Python's ``re.sub`` (an empty
match right after a match counts); the one difference: after an empty match the search resumes
one character later, so an empty alternative preferred at a position hides a non-empty one there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, cast

import re2

from vallum.core.errors import VallumError

__all__ = ["Match", "Pattern", "RegexError", "Substitution", "compile"]


class RegexError(VallumError, ValueError):
    """A pattern or substitution that is refused. ``str(error)`` is the message for a config
    problem (``invalid regular expression: …``); ``pattern`` is what was given."""

    def __init__(self, pattern: str, message: str, *, what: str = "regular expression") -> None:
        self.pattern = pattern
        self.message = message
        super().__init__(f"invalid {what}: {message}")


class Match(Protocol):
    """A match, as ``re.Match`` offers it (positions are in characters of the text)."""

    def group(self, *groups: int | str) -> Any: ...
    def groups(self, default: Any = None) -> tuple[Any, ...]: ...
    def groupdict(self, default: Any = None) -> dict[str, Any]: ...
    def span(self, group: int | str = 0) -> tuple[int, int]: ...
    def start(self, group: int | str = 0) -> int: ...
    def end(self, group: int | str = 0) -> int: ...


_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the error goes into RegexError, not to stderr

_HINTS = (
    ("invalid perl operator: (?=", "lookahead is not supported (RE2 has no lookaround)"),
    ("invalid perl operator: (?!", "lookahead is not supported (RE2 has no lookaround)"),
    ("invalid perl operator: (?<=", "lookbehind is not supported (RE2 has no lookaround)"),
    ("invalid perl operator: (?<!", "lookbehind is not supported (RE2 has no lookaround)"),
    ("invalid perl operator: (?P=", "backreferences are not supported by RE2"),
    ("invalid perl operator: (?P", "backreferences are not supported by RE2"),
    ("invalid perl operator: (?>", "atomic groups are not supported by RE2"),
    ("bad repetition operator: *+", "possessive quantifiers are not supported by RE2"),
    ("bad repetition operator: ++", "possessive quantifiers are not supported by RE2"),
    ("bad repetition operator: ?+", "possessive quantifiers are not supported by RE2"),
    ("invalid repetition size", "RE2 allows repetition counts up to 1000"),
    ("pattern too large", "the compiled pattern exceeds RE2's 8 MiB limit"),
)


def _reason(raw: str) -> str:
    """RE2's message, with a hint for the errors people coming from Python's ``re`` meet."""
    if raw.startswith("invalid escape sequence: \\") and raw[-1:].isdigit():
        return f"{raw}: backreferences are not supported by RE2"
    for start, hint in _HINTS:
        if raw.startswith(start):
            return f"{raw}: {hint}"
    return raw


def _translate(pattern: str) -> str:
    """``pattern`` in RE2's spelling: ``\\Z`` outside a class becomes ``\\z``; ``{,n}`` is
    refused. One left-to-right pass that knows escapes and character classes."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    class_start = 0
    while i < n:
        c = pattern[i]
        if c == "\\":
            pair = pattern[i : i + 2]
            out.append("\\z" if pair == "\\Z" and not in_class else pair)
            i += 2
            continue
        if in_class:
            if c == "[" and pattern.startswith("[:", i):  # RE2's [[:alpha:]]
                end = pattern.find(":]", i + 2)
                if end != -1:
                    out.append(pattern[i : end + 2])
                    i = end + 2
                    continue
            if c == "]" and i > class_start:
                in_class = False
        elif c == "[":
            in_class = True
            class_start = i + 1
            if pattern.startswith("^", class_start):
                class_start += 1
        elif c == "{" and i + 1 < n and pattern[i + 1] == ",":
            j = i + 2
            while j < n and pattern[j].isdigit():
                j += 1
            if j < n and pattern[j] == "}":
                raise RegexError(
                    pattern,
                    f"{pattern[i : j + 1]} means {{0,{pattern[i + 2 : j]}}} in Python and the "
                    f"literal text in RE2; write {{0,{pattern[i + 2 : j]}}} (or escape the braces)",
                )
        out.append(c)
        i += 1
    return "".join(out)


def compile(pattern: str) -> Pattern:  # named after re.compile on purpose
    """Compile ``pattern`` for linear-time matching; :class:`RegexError` when it is refused."""
    if not isinstance(pattern, str):
        raise RegexError(str(pattern), f"expected a string, got {type(pattern).__name__}")
    source = _translate(pattern)
    try:
        compiled = re2.compile(source, _OPTIONS)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else "invalid pattern"
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        raise RegexError(pattern, _reason(text)) from None
    return Pattern(pattern, compiled)


class Substitution:
    """A checked replacement template: literal text and group numbers, in order."""

    __slots__ = ("_bytes_pieces", "pieces", "template")

    def __init__(self, template: str, pieces: tuple[str | int, ...]) -> None:
        self.template = template
        self.pieces = pieces
        self._bytes_pieces = tuple(p.encode() if isinstance(p, str) else p for p in pieces)

    def __repr__(self) -> str:
        return f"Substitution({self.template!r})"


class Pattern:
    """A compiled pattern: ``search``, ``fullmatch``, ``matches`` (a fast full-match test) and
    ``sub``, like ``re.Pattern``'s, in linear time."""

    __slots__ = ("_re", "_subs", "groupindex", "groups", "pattern")

    def __init__(self, pattern: str, compiled: Any) -> None:
        self.pattern = pattern
        self._re = compiled
        self.groups: int = compiled.groups
        self.groupindex: Mapping[str, int] = dict(compiled.groupindex)
        self._subs: dict[str, Substitution] = {}

    def __repr__(self) -> str:
        return f"vallum.core.regex.compile({self.pattern!r})"

    def search(self, text: str) -> Match | None:
        """The first match anywhere in ``text``, or None."""
        return cast("Match | None", self._re.search(text))

    def fullmatch(self, text: str) -> Match | None:
        """The match of the whole of ``text``, or None."""
        return cast("Match | None", self._re.fullmatch(text))

    def matches(self, text: str) -> bool:
        """Whether the whole of ``text`` matches (no match object: the routing hot path)."""
        if text.isascii():
            return self._re.fullmatch(text.encode("ascii")) is not None
        return self._re.fullmatch(text) is not None

    def substitution(self, template: str) -> Substitution:
        """``template`` checked against this pattern's groups; :class:`RegexError` if refused."""
        cached = self._subs.get(template)
        if cached is None:
            cached = Substitution(template, _parse_template(template, self))
            if len(self._subs) < 64:
                self._subs[template] = cached
        return cached

    def sub(self, repl: str | Substitution, text: str, count: int = 0) -> str:
        """``text`` with every non-overlapping match (at most ``count`` if > 0) replaced."""
        substitution = repl if isinstance(repl, Substitution) else self.substitution(repl)
        data = text.encode("utf-8")
        pieces = substitution._bytes_pieces
        out: list[bytes] = []
        search = self._re.search
        pos = last = done = 0
        end = len(data)
        while pos <= end and (count <= 0 or done < count):
            m = search(data, pos)
            if m is None:
                break
            start, stop = m.span()
            out.append(data[last:start])
            for piece in pieces:
                if type(piece) is int:
                    group = m.group(piece)
                    if group is not None:
                        out.append(group)
                else:
                    out.append(cast(bytes, piece))
            last = stop
            done += 1
            if stop == start:  # empty: resume one character later
                if stop >= end:
                    break
                pos = stop + _char_len(data[stop])
            else:
                pos = stop
        if not done:
            return text
        out.append(data[last:])
        return b"".join(out).decode("utf-8")


def _char_len(lead: int) -> int:
    """Length of the UTF-8 character starting with byte ``lead``."""
    if lead < 0x80:
        return 1
    if lead >= 0xF0:
        return 4
    if lead >= 0xE0:
        return 3
    return 2


def _parse_template(template: str, pattern: Pattern) -> tuple[str | int, ...]:
    """Split a substitution into literal text and group numbers (see the module docstring)."""

    def refuse(message: str) -> RegexError:
        return RegexError(template, message, what="substitution")

    def group(number: int, shown: str) -> int:
        if number > pattern.groups:
            raise refuse(
                f"{shown} refers to group {number}, but the pattern has {pattern.groups} group(s)"
            )
        return number

    pieces: list[str | int] = []
    literal: list[str] = []
    i, n = 0, len(template)
    while i < n:
        c = template[i]
        if c != "\\":
            if c < " " or c == "\x7f":
                raise refuse(f"control character {c!r} in the substitution")
            literal.append(c)
            i += 1
            continue
        if i + 1 >= n:
            raise refuse("a lone backslash at the end (write \\\\ for a backslash)")
        nxt = template[i + 1]
        if nxt == "\\":
            literal.append("\\")
            i += 2
            continue
        if nxt.isdigit() and nxt.isascii():
            if i + 2 < n and template[i + 2].isdigit():
                raise refuse(
                    f"{template[i : i + 3]} is ambiguous (group {nxt} then "
                    f"{template[i + 2]} in RE2, group {template[i + 1 : i + 3]} in Python); "
                    f"write \\g<{nxt}>{template[i + 2]} or \\g<{template[i + 1 : i + 3]}>"
                )
            number = group(int(nxt), template[i : i + 2])
            i += 2
        elif nxt == "g":
            close = template.find(">", i + 3) if template.startswith("<", i + 2) else -1
            if close == -1:
                raise refuse(f"{template[i : i + 3]}: expected \\g<number> or \\g<name>")
            name = template[i + 3 : close]
            shown = template[i : close + 1]
            if name.isascii() and name.isdigit():
                number = group(int(name), shown)
            elif name in pattern.groupindex:
                number = pattern.groupindex[name]
            else:
                raise refuse(f"{shown}: the pattern has no group named {name!r}")
            i = close + 1
        else:
            raise refuse(
                f"unsupported escape \\{nxt} (use \\1-\\9, \\g<n>, \\g<name>, or \\\\ for a "
                "backslash)"
            )
        if literal:
            pieces.append("".join(literal))
            literal = []
        pieces.append(number)
    if literal:
        pieces.append("".join(literal))
    return tuple(pieces)
