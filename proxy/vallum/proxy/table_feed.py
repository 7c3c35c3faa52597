"""Route tables sent from one process to others over a stream: the feed of ``vallum controller
--workers N``.

The controller's parent process watches the API server and translates; its worker processes
only serve. Every new table has to reach every worker quickly: with 3,000 routes a whole table
pickles to about 1.2 MB in about 0.15 s and unpickles in about 0.07 s -- more than the whole
budget of an Ingress change going live, paid again for every change of one route. So the feed
sends *deltas*: the routes and certificates a worker already holds are sent as references, only
the new ones as objects. The translator keeps the ``Route`` objects of an unchanged Ingress (it
memoises them), so a table with one changed Ingress costs the pickling of that Ingress's routes
plus one reference per other route. The worker builds the host index itself (the index holds
compiled RE2 patterns, which are not sent), as :func:`vallum.core.routing.build_index` would,
but checks only the routes it has not seen and files only the hosts whose routes changed
(:meth:`Decoder._index`); it keeps the translator's checksum.

Frames, both directions: a header (:data:`HEADER`: magic, kind, sequence number, length) and
a payload of at most :data:`MAX_PAYLOAD` bytes.

* ``FULL``/``DELTA`` (parent to worker): two pickles back to back. The first is
  ``(basis, checksum, [(ref, object), ...])``: the sequence number of the table the delta is
  relative to (0 for ``FULL``), the table's checksum and the new objects. The second is the
  table's ``Settings`` with every route and certificate as a reference. Unpickling is
  restricted to the dataclasses of :mod:`vallum.core.config` (:class:`_Restricted`): the
  stream comes from our own parent, and a frame that is damaged anyway cannot name anything
  else to run.
* ``RESULT`` (worker to parent): JSON, never pickle -- the parent holds the API server's
  credentials and takes nothing executable from a worker.

A worker that cannot use a frame (damaged, or a delta against a table it does not hold) keeps
serving its last good table and answers ``need_full``; the parent then sends that worker the
whole current table (:meth:`Encoded.full`). Both sides keep exactly the objects of the last
table (:class:`Encoder`, :class:`Decoder`), so memory stays bounded.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import struct
from collections.abc import Iterator
from typing import Any

from vallum.core import config, errors, routing

MAGIC = b"VTF1"
HEADER = struct.Struct("!4sBQI")  # magic, kind, sequence number, payload length
FULL = 1
DELTA = 2
RESULT = 3
KINDS = frozenset({FULL, DELTA, RESULT})
MAX_PAYLOAD = 256 << 20
"""A payload over this is a broken stream, not a table (3,000 routes are about 1.2 MB)."""
PROTOCOL = 5

_ALLOWED = frozenset(
    {
        ("vallum.core.config", "Settings"),
        ("vallum.core.config", "Route"),
        ("vallum.core.config", "Upstream"),
        ("vallum.core.config", "Certificate"),
        ("vallum.core.config", "DownstreamMTLS"),
    }
)
_SHARED = (config.Route, config.Certificate)  # what goes over once, then by reference


class FeedError(Exception):
    """A frame that cannot be read or used (the message says why)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    kind: int
    seq: int
    payload: bytes


def pack(kind: int, seq: int, payload: bytes) -> bytes:
    if kind not in KINDS:
        raise ValueError(f"unknown frame kind {kind}")
    if len(payload) > MAX_PAYLOAD:
        raise FeedError(f"frame of {len(payload)} bytes is over the limit of {MAX_PAYLOAD}")
    return HEADER.pack(MAGIC, kind, seq, len(payload)) + payload


class FrameReader:
    """Cuts a byte stream into frames (feed it what arrives, in any pieces).

    A bad header raises :class:`FeedError`; the stream cannot be trusted after it (there is no
    way to find the next frame), so the reader stays broken and the caller closes the stream.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._broken: str | None = None

    def feed(self, data: bytes) -> Iterator[Frame]:
        if self._broken is not None:
            raise FeedError(self._broken)
        self._buffer += data
        while len(self._buffer) >= HEADER.size:
            magic, kind, seq, length = HEADER.unpack_from(self._buffer)
            if magic != MAGIC or kind not in KINDS or length > MAX_PAYLOAD:
                self._broken = (
                    f"not a table-feed frame (magic {bytes(magic)!r}, kind {kind}, "
                    f"length {length})"
                )
                raise FeedError(self._broken)
            end = HEADER.size + length
            if len(self._buffer) < end:
                return
            payload = bytes(self._buffer[HEADER.size:end])
            del self._buffer[:end]
            yield Frame(kind, seq, payload)


# -- results (worker to parent) ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """A worker's answer to table ``seq``: served (``ok``), refused (``message`` says why), or
    not usable at all (``need_full``: send the whole table)."""

    seq: int
    ok: bool
    message: str = ""
    need_full: bool = False
    pid: int = 0


def pack_result(result: Result) -> bytes:
    payload = json.dumps(dataclasses.asdict(result), separators=(",", ":")).encode()
    return pack(RESULT, result.seq, payload)


def read_result(frame: Frame) -> Result:
    """The worker's :class:`Result` in ``frame``; :class:`FeedError` if it is not one."""
    if frame.kind != RESULT:
        raise FeedError(f"expected a result frame, got kind {frame.kind}")
    try:
        data = json.loads(frame.payload)
        result = Result(
            seq=int(data["seq"]), ok=bool(data["ok"]), message=str(data.get("message", "")),
            need_full=bool(data.get("need_full", False)), pid=int(data.get("pid", 0)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise FeedError(f"unreadable result: {exc}") from None
    if result.seq != frame.seq:
        raise FeedError(f"result for table {result.seq} in the frame of table {frame.seq}")
    return result


# -- tables (parent to workers) ------------------------------------------------------------------


class _Refs(pickle.Pickler):
    def __init__(self, file: io.BytesIO, refs: dict[int, tuple[int, object]]) -> None:
        super().__init__(file, protocol=PROTOCOL)
        self._refs = refs

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _SHARED):
            return self._refs[id(obj)][0]
        return None


class _Restricted(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, objects: dict[int, object] | None = None) -> None:
        super().__init__(file)
        self._objects = objects
        self.used: set[int] = set()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise FeedError(f"a table frame may not name {module}.{name}")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if self._objects is None or not isinstance(pid, int) or pid not in self._objects:
            raise FeedError(f"a table frame refers to object {pid!r}, which this side lacks")
        self.used.add(pid)
        return self._objects[pid]


@dataclasses.dataclass
class Encoded:
    """One table ready to send: as a delta against table ``basis``, or whole (:meth:`full`)."""

    seq: int
    basis: int
    table: config.RouteTable
    delta: bytes
    _settings: bytes
    _objects: list[tuple[int, object]]
    _full: bytes | None = None

    def full(self) -> bytes:
        """The frame with every object (for a new worker, or one that lost track); made once."""
        if self._full is None:
            head = pickle.dumps((0, self.table.checksum, self._objects), protocol=PROTOCOL)
            self._full = pack(FULL, self.seq, head + self._settings)
        return self._full

    def frame_for(self, holds: int) -> bytes:
        """The frame for a worker that holds table ``holds`` (0: none)."""
        return self.delta if holds == self.basis and holds != 0 else self.full()


class Encoder:
    """The parent's side: numbers each table and remembers the objects of the last one."""

    def __init__(self) -> None:
        self.seq = 0
        self._refs: dict[int, tuple[int, object]] = {}  # id(obj) -> (ref, obj), obj kept alive
        self._next_ref = 1

    def __len__(self) -> int:
        """How many routes and certificates this side holds (those of the last table)."""
        return len(self._refs)

    def encode(self, table: config.RouteTable) -> Encoded:
        previous, current = self._refs, {}
        new: list[tuple[int, object]] = []
        settings = table.settings
        for obj in (*settings.routes, *settings.certificates):
            key = id(obj)
            if key in current:
                continue
            entry = previous.get(key)
            if entry is None:
                entry = (self._next_ref, obj)
                self._next_ref += 1
                new.append(entry)
            current[key] = entry
        buffer = io.BytesIO()
        _Refs(buffer, current).dump(settings)
        body = buffer.getvalue()
        basis, self.seq = self.seq, self.seq + 1
        head = pickle.dumps((basis, table.checksum, new), protocol=PROTOCOL)
        self._refs = current
        # The first table is all new: its delta is the whole table.
        frame = pack(DELTA if basis else FULL, self.seq, head + body)
        return Encoded(
            seq=self.seq, basis=basis, table=table, delta=frame, _settings=body,
            _objects=list(current.values()), _full=None if basis else frame,
        )


class Decoder:
    """A worker's side: turns frames back into tables, holding the objects of the last one."""

    def __init__(self) -> None:
        self.seq = 0
        """The table last decoded (0: none yet)."""
        self._objects: dict[int, object] = {}
        self._prepared: dict[int, routing.Prepared] = {}  # by ref: each route checked once
        self._hosts: dict[str, tuple[tuple[int, ...], routing.HostRoutes]] = {}

    def __len__(self) -> int:
        """How many routes and certificates this side holds (those of the last table)."""
        return len(self._objects)

    def decode(self, frame: Frame) -> config.RouteTable:
        """The table in ``frame`` with its host index rebuilt; raises :class:`FeedError` (the
        frame cannot be used: ask for the whole table) or ``ConfigError`` (the index does not
        build: a table to refuse, though this side is in step with it). On a ``FeedError``
        nothing changes here."""
        if frame.kind not in (FULL, DELTA):
            raise FeedError(f"expected a table frame, got kind {frame.kind}")
        stream = io.BytesIO(frame.payload)
        try:
            head = _Restricted(stream).load()
            basis, checksum, new = head
            if frame.kind == DELTA and (basis != self.seq or basis == 0):
                raise FeedError(f"a delta against table {basis}, but this side holds {self.seq}")
            objects = {} if frame.kind == FULL else dict(self._objects)
            for ref, obj in new:
                if not isinstance(ref, int) or not isinstance(obj, _SHARED):
                    raise FeedError("a table frame's new objects are not routes or certificates")
                objects[ref] = obj
            reader = _Restricted(stream, objects)
            settings = reader.load()
        except FeedError:
            raise
        except Exception as exc:  # a damaged pickle raises anything from EOFError to TypeError
            raise FeedError(f"unreadable table frame: {type(exc).__name__}: {exc}") from None
        if not isinstance(settings, config.Settings) or not isinstance(checksum, str):
            raise FeedError("a table frame without settings and checksum")
        if stream.read(1):
            raise FeedError("trailing bytes after a table frame")
        # In step with the parent from here on, even if the index refuses the table.
        self._objects = {ref: objects[ref] for ref in reader.used}
        self.seq = frame.seq
        refs = {id(obj): ref for ref, obj in self._objects.items()}
        index = self._index(settings.routes, [refs[id(route)] for route in settings.routes])
        return config.RouteTable(settings=settings, checksum=checksum, index=index)

    def _index(self, routes: tuple[config.Route, ...], refs: list[int]) -> routing.Index:
        """The host index, as :func:`vallum.core.routing.build_index` builds it, but checking
        only the routes not seen before and filing only the hosts whose routes changed (the
        others' parts are kept). Each route's ``route_index`` is its reference: unique in the
        table, as the gate's per-table caches need."""
        if len(set(refs)) != len(refs):  # one route object twice: number them by position
            self._prepared, self._hosts = {}, {}
            return routing.build_index(config.Settings(routes=routes))
        problems: list[str] = []
        prepared: dict[int, routing.Prepared] = {}
        by_host: dict[str, list[int]] = {}
        for position, (route, ref) in enumerate(zip(routes, refs, strict=True)):
            item = self._prepared.get(ref)
            if item is None:
                try:
                    item = routing.prepare(route, route.source or f"routes[{position}]")
                except errors.ConfigError as exc:
                    problems.extend(exc.problems)
                    continue
            prepared[ref] = item
            by_host.setdefault(item.host, []).append(ref)
        if problems:
            raise errors.ConfigError(problems)
        hosts: dict[str, tuple[tuple[int, ...], routing.HostRoutes]] = {}
        for host, host_refs in by_host.items():
            key = tuple(host_refs)
            kept = self._hosts.get(host)
            if kept is None or kept[0] != key:
                kept = (key, routing.index_host((ref, prepared[ref]) for ref in key))
            hosts[host] = kept
        self._prepared, self._hosts = prepared, hosts
        return routing.assemble({host: built for host, (_, built) in hosts.items()})
