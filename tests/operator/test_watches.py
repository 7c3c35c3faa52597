"""The pure parts of :mod:`vallum.operator.watches` (the watches themselves run against a real
API server in ``e2e/test_watches.py``)."""

from __future__ import annotations

from kubernetes.client.exceptions import ApiException

from vallum.operator import watches


def test_the_wait_doubles_with_each_failure_in_a_row_up_to_the_cap() -> None:
    waits = [watches.retry_delay(n) for n in range(1, 9)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert watches.retry_delay(10_000) == watches.MAX_RETRY


def test_a_refusal_is_logged_as_one_line_with_its_status() -> None:
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = '{"kind":"Status","message":"ingresses is forbidden: ..."}\n' * 20
    assert watches._first_line(exc) == "403 Forbidden"
    assert watches._first_line(ConnectionError("refused\nmore")) == "refused"
    assert watches._first_line(TimeoutError()) == "TimeoutError"
