"""vallum.core.regex: linear time, what it refuses and why, and Python ``re`` semantics kept."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.core.deadline import deadline
from vallum.core import errors, regex

# Patterns that take exponential time on a backtracking engine.
CATASTROPHIC = [
    r"^/repos/([\w.-]+/?)+/settings$",
    r"(a+)+$",
    r"(a|aa)+$",
    r"(x+x+)+y",
    r"^(([a-z])+.)+[A-Z]([a-z])+$",
]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_catastrophic_patterns_run_in_linear_time(pattern: str) -> None:
    compiled = regex.compile(pattern)
    text = "/repos/" + "a" * 50_000 + "!"
    with deadline(2.0):
        assert not compiled.matches(text)
        assert compiled.fullmatch(text) is None
        compiled.search(text)
        compiled.sub("x", text)


def test_matches_and_match_objects() -> None:
    p = regex.compile(r"/api/(?P<version>v[0-9]+)/(.*)")
    assert p.matches("/api/v2/users")
    assert not p.matches("/api/v2")
    m = p.fullmatch("/api/v2/users")
    assert m is not None
    assert m.group(1) == "v2" and m.group("version") == "v2" and m.group(2) == "users"
    assert m.span(2) == (8, 13)
    assert m.groups() == ("v2", "users")
    assert m.groupdict() == {"version": "v2"}
    assert p.groups == 2 and dict(p.groupindex) == {"version": 1}
    s = p.search("x/api/v1/y")
    assert s is not None and s.span() == (1, 10)
    assert p.search("/nothing") is None


def test_offsets_are_in_characters_for_non_ascii_text() -> None:
    m = regex.compile("(é+)x").search("aéééxz")
    assert m is not None and m.span() == (1, 5) and m.group(1) == "ééé"
    assert regex.compile("é.").matches("éü")
    assert regex.compile("(.)").sub(r"[\1]", "aé") == "[a][é]"


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        (r"(a)\1", "backreferences are not supported"),
        (r"(?P<n>a)(?P=n)", "backreferences are not supported"),
        (r"(?=a)", "lookahead is not supported"),
        (r"(?!a)", "lookahead is not supported"),
        (r"(?<=a)b", "lookbehind is not supported"),
        (r"(?<!a)b", "lookbehind is not supported"),
        (r"(?>a)", "atomic groups are not supported"),
        (r"a*+", "possessive quantifiers are not supported"),
        (r"a{1001}", "up to 1000"),
        (r"(?x) a", "invalid perl operator: (?x"),
        (r"a{,3}", "write {0,3}"),
        (r"a{,}", "write {0,}"),
        ("(", "missing )"),
        ("[a", "missing ]"),
        (r"((((a{1000}){1000}){1000}){1000})", "RE2"),
    ],
)
def test_refused_patterns_say_why(pattern: str, fragment: str) -> None:
    with pytest.raises(regex.RegexError) as info:
        regex.compile(pattern)
    assert fragment in str(info.value)
    assert str(info.value).startswith("invalid regular expression: ")
    assert info.value.pattern == pattern
    assert isinstance(info.value, errors.VallumError) and isinstance(info.value, ValueError)


def test_python_spellings_that_re2_lacks_or_reads_differently() -> None:
    assert regex.compile(r"a\Z").matches("a")  # Python's \Z is RE2's \z
    assert not regex.compile(r"a\Z").matches("a\n")
    assert regex.compile(r"a\\Z").matches("a\\Z")  # an escaped backslash, then Z
    assert regex.compile(r"a\{,3\}").matches("a{,3}")
    assert regex.compile(r"[{,3}]+").matches("{,3}")  # inside a class: plain characters
    assert regex.compile(r"[[:alpha:]]+").matches("abc")  # RE2 classes work
    with pytest.raises(regex.RegexError):
        regex.compile(r"[\Z]")  # an error in Python too
    assert not regex.compile("a$").matches("a\n")  # Python's $ also matches before a final \n


def test_classes_are_ascii_as_in_re2() -> None:
    """A deliberate choice (docs/configuration.md): paths are matched normalised, in ASCII."""
    assert not regex.compile(r"\d").matches("٣")
    assert not regex.compile(r"\w").matches("é")
    assert regex.compile(r"\w+").matches("Az_09")


@pytest.mark.parametrize(
    ("pattern", "template", "text", "want"),
    [
        ("^/api/(.*)$", r"/v1/\1", "/api/x/y", "/v1/x/y"),
        ("(a)(b)?", r"[\1\2]", "aac", "[a][a]c"),  # an unmatched group is empty
        ("(?P<n>a)", r"\g<n>\g<0>\0\\", "bab", "baaa\\b"),
        ("x*", "-", "abxd", "-a-b--d-"),
        (r"\b", "-", "ab cd", "-ab- -cd-"),
        ("", "-", "ab", "-a-b-"),
        ("é", "e", "café é", "cafe e"),
        ("/", "é", "/a/", "éaé"),
        ("^/old", "/new", "/old/old", "/new/old"),
        ("z", "y", "abc", "abc"),
    ],
)
def test_sub(pattern: str, template: str, text: str, want: str) -> None:
    assert regex.compile(pattern).sub(template, text) == want


def test_sub_count_and_prepared_substitution() -> None:
    p = regex.compile("(a)")
    prepared = p.substitution(r"<\1>")
    assert p.sub(prepared, "aaa") == "<a><a><a>"
    assert p.sub(prepared, "aaa", count=2) == "<a><a>a"


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        (r"\2", "refers to group 2, but the pattern has 1 group(s)"),
        (r"\g<3>", "refers to group 3"),
        (r"\g<x>", "no group named 'x'"),
        (r"\g<1", "expected \\g<number> or \\g<name>"),
        (r"\10", "ambiguous"),
        (r"\n", "unsupported escape \\n"),
        (r"\d", "unsupported escape \\d"),
        ("\\", "lone backslash"),
        ("a\r\nb", "control character"),
    ],
)
def test_refused_substitutions(template: str, fragment: str) -> None:
    p = regex.compile("(a)")
    with pytest.raises(regex.RegexError) as info:
        p.substitution(template)
    assert str(info.value).startswith("invalid substitution: ")
    assert fragment in str(info.value)
    with pytest.raises(regex.RegexError):
        p.sub(template, "a")


# Patterns valid in both engines that mean the same on ASCII text; the property checks the
# translation (\Z) and the substitution loop against Python's own.
SAME = [
    r"/a/.*",
    r"/[ab]+(/.*)?",
    r"(a|ab)(c|bcd)(d*)",
    r"^/api/v([0-9]+)/(\w+)\Z",
    r"(?i)/ADMIN(/.*)?",
    r"[^/]+",
    r"(a*)(b*)",
    r"\.",
    r"a|b|",
    r"(?:x|y){2,3}",
    r"\bab",
    r"(?P<seg>[a-z]+)/",
    r"^",
    r"$",
]
texts = st.text(alphabet="/abcdxy.A09_-", max_size=16)  # paths: no newline


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAME), texts)
def test_agrees_with_python_re(pattern: str, text: str) -> None:
    ours, theirs = regex.compile(pattern), re.compile(pattern)
    assert ours.matches(text) == (theirs.fullmatch(text) is not None)
    a, b = ours.search(text), theirs.search(text)
    assert (a is None) == (b is None)
    if a is not None and b is not None:
        assert a.span() == b.span() and a.groups() == b.groups()
    template = "<" + "".join(f"\\{i}" for i in range(1, theirs.groups + 1)) + ">"
    assert ours.sub(template, text) == theirs.sub(template, text)
