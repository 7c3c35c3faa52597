"""How the operator's watches and Lease report a failure and how long they wait."""

from __future__ import annotations

from kubernetes.client.exceptions import ApiException

from vallum.operator import retrying


def test_the_wait_doubles_with_each_failure_in_a_row_up_to_the_cap() -> None:
    waits = [retrying.delay(n) for n in range(1, 9)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert retrying.delay(10_000) == retrying.MAX


def test_a_refusal_is_said_in_one_line_with_its_status() -> None:
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = '{"kind":"Status","message":"ingresses is forbidden: ..."}\n' * 20
    assert retrying.brief(exc) == "403 Forbidden"
    assert retrying.brief(ConnectionError("refused\nmore")) == "refused"
    assert retrying.brief(TimeoutError()) == "TimeoutError"
