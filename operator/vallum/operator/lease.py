"""Which replica writes status and events: a ``coordination.k8s.io/v1`` Lease.

Every replica of ``vallum controller`` watches the cluster and serves the same routes, but only
one may write Ingress status, Policy and Settings conditions and Events; otherwise three
replicas write every status three times and race each other's ``resourceVersion``. The one that
holds the Lease writes; when it dies, another takes over once the Lease has not been renewed for
``duration`` seconds (10 by default: a takeover within 10 + ``retry`` = 12 s).

The rules are client-go's leader election, written small:

* The holder renews every ``renew`` seconds (``renewTime``, ``holderIdentity``).
* The others read it every ``retry`` seconds. Expiry is judged by *this* replica's clock: a Lease
  counts as expired when its record (``resourceVersion``) has not changed for ``duration``
  seconds since this replica first saw that record -- never by comparing the holder's
  ``renewTime`` with the local clock, so clock skew between nodes cannot cause two leaders.
* Every write carries the ``resourceVersion`` that was read: of two replicas taking an expired
  Lease at once, the API server lets one write and refuses the other (409).
* A replica that stops cleanly hands the Lease back (empty holder), so the next one takes it at
  its next read instead of waiting for expiry.
* A holder that cannot renew for ``duration`` seconds (API server unreachable) stops calling
  itself leader before anyone else may take over.

:func:`decide` is the pure part (tested without a cluster); :class:`Elector` runs it against the
API server with the ``kubernetes`` client (its calls run in a thread: they block).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from vallum.operator import retrying

log = logging.getLogger("vallum.operator.lease")

DURATION = 10
"""Seconds without a renewal after which another replica takes the Lease."""
RENEW = 3.0
"""Seconds between the holder's renewals."""
RETRY = 2.0
"""Seconds between the other replicas' reads."""

Action = Literal["create", "renew", "take", "wait"]


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """What this replica read of the Lease."""

    holder: str | None
    version: str
    """The object's ``resourceVersion``: changes with every write (a renewal included)."""
    transitions: int = 0


@dataclasses.dataclass(slots=True)
class Observed:
    """The record last seen and when (this replica's monotonic clock)."""

    version: str = ""
    since: float = 0.0


def decide(
    record: Record | None, me: str, observed: Observed, now: float, duration: float = DURATION
) -> Action:
    """What to do with the Lease as read (``None``: there is none). Updates ``observed``.

    ``now`` is a monotonic clock reading of this replica.
    """
    if record is None:
        return "create"
    if record.version != observed.version:
        observed.version, observed.since = record.version, now
    if record.holder == me:
        return "renew"
    if not record.holder:  # handed back by a holder that stopped cleanly
        return "take"
    if now - observed.since >= duration:
        return "take"
    return "wait"


class Elector:
    """Holds (or waits for) one Lease; ``leader`` says whether this replica writes status.

    ``coordination`` is a ``kubernetes.client.CoordinationV1Api``; ``on_change(leader)`` runs in
    the event loop whenever leadership is gained or lost.
    """

    def __init__(
        self,
        coordination: Any,
        namespace: str,
        name: str,
        identity: str,
        *,
        on_change: Callable[[bool], None] | None = None,
        duration: int = DURATION,
        renew: float = RENEW,
        retry: float = RETRY,
    ) -> None:
        self.api = coordination
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.on_change = on_change
        self.duration = duration
        self.renew = renew
        self.retry = retry
        self.leader = False
        self._observed = Observed()
        self._renewed_at = 0.0  # monotonic time of our last successful write

    async def run(self) -> None:
        """Take part in the election until cancelled; then hand the Lease back if held."""
        last_said = ""
        try:
            while True:
                try:
                    leader = await asyncio.to_thread(self.step)
                    last_said = ""
                except Exception as exc:  # the API server unreachable: keep trying
                    said = retrying.brief(exc)
                    if said != last_said:  # once per cause, not every retry
                        log.warning("lease %s/%s: %s", self.namespace, self.name, said)
                        last_said = said
                    leader = self.leader and time.monotonic() - self._renewed_at < self.duration
                self._set(leader)
                await asyncio.sleep(self.renew if self.leader else self.retry)
        finally:
            if self.leader:
                self._set(False)
                try:
                    await asyncio.shield(asyncio.to_thread(self.release))
                except Exception as exc:
                    log.warning("lease %s/%s: not handed back: %s", self.namespace, self.name, exc)

    def _set(self, leader: bool) -> None:
        if leader != self.leader:
            self.leader = leader
            log.info(
                "lease %s/%s: %s", self.namespace, self.name,
                "this replica now writes status and events" if leader else "no longer the leader",
            )
            if self.on_change is not None:
                self.on_change(leader)

    def step(self) -> bool:
        """One round (blocking): read the Lease, create, renew or take it, or wait. Whether this
        replica holds it afterwards."""
        from kubernetes.client.exceptions import ApiException

        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            lease = None
        record = None if lease is None else _record(lease)
        action = decide(record, self.identity, self._observed, time.monotonic(), self.duration)
        if action == "wait":
            return False
        body = self._body(lease, record, action)
        try:
            if lease is None:
                self.api.create_namespaced_lease(self.namespace, body)
            else:
                self.api.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status in (409, 422):  # another replica wrote first: not ours this round
                return False
            raise
        self._renewed_at = time.monotonic()
        return True

    def release(self) -> None:
        """Hand the Lease back (blocking): an empty holder, taken at the others' next read."""
        lease = self.api.read_namespaced_lease(self.name, self.namespace)
        if lease.spec is None or lease.spec.holder_identity != self.identity:
            return
        lease.spec.holder_identity = None
        lease.spec.renew_time = _now()
        self.api.replace_namespaced_lease(self.name, self.namespace, lease)

    def _body(self, lease: Any, record: Record | None, action: Action) -> Any:
        from kubernetes import client

        now = _now()
        transitions = record.transitions if record is not None else 0
        if action in ("take", "create"):
            spec = client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=self.duration,
                acquire_time=now,
                renew_time=now,
                lease_transitions=transitions + (1 if action == "take" else 0),
            )
        else:
            spec = lease.spec
            spec.renew_time = now
            spec.lease_duration_seconds = self.duration
        metadata = (
            client.V1ObjectMeta(name=self.name, namespace=self.namespace)
            if lease is None
            else lease.metadata  # its resourceVersion: a concurrent writer gets 409
        )
        return client.V1Lease(metadata=metadata, spec=spec)


def _record(lease: Any) -> Record:
    spec = lease.spec
    return Record(
        holder=spec.holder_identity if spec is not None else None,
        version=str(lease.metadata.resource_version),
        transitions=int(spec.lease_transitions or 0) if spec is not None else 0,
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
