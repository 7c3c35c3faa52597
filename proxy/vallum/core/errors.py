"""The exception tree of Vallum's pure core.

Every error a user can cause carries a *place* they can find: a file and line for configuration,
a path inside the policy for policy errors. The shell turns them into exit codes, status
conditions and log lines; it never shows a traceback for one of these.

    VallumError
    ├── ConfigError        one or more problems in a config file or route table
    │                      (``.problems`` holds every message, each with its place)
    ├── PolicyError        a policy that does not compile (``.path`` inside the policy)
    └── IdentityError      a token, cookie or assertion that is not acceptable
"""

from __future__ import annotations

from collections.abc import Sequence


class VallumError(Exception):
    """Base of every error Vallum raises on purpose."""


class ConfigError(VallumError):
    """A configuration that cannot be used. Collects every problem, not just the first."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems) or ("invalid configuration",)
        super().__init__("\n".join(self.problems))


class PolicyError(VallumError):
    """A policy that does not compile; ``path`` names the place inside the policy."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class IdentityError(VallumError):
    """A credential (cookie, bearer token, assertion) that is not acceptable."""
