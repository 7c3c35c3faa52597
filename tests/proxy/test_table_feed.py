"""The table feed: tables (whole, then as deltas) through real pipes into another process, and
what a side does with a frame it cannot use."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from tests.proxy import dataplane as dp
from tests.support import certs
from vallum.core import config, errors, routing
from vallum.proxy import table_feed as tf


def routes(count: int, prefix: str = "h") -> list[config.Route]:
    return [dp.route(f"{prefix}{i}.test", f"http://127.0.0.1:{8000 + i}") for i in range(count)]


def frames(data: bytes) -> list[tf.Frame]:
    return list(tf.FrameReader().feed(data))


def decode(decoder: tf.Decoder, data: bytes) -> config.RouteTable:
    (frame,) = frames(data)
    return decoder.decode(frame)


# A worker in another process: reads table frames on stdin, answers each with a result frame
# whose message lists the hosts it routes now, in the index's order.
WORKER = textwrap.dedent("""
    import json, os, sys
    from vallum.core import routing
    from vallum.proxy import table_feed as tf
    decoder, reader = tf.Decoder(), tf.FrameReader()
    while chunk := os.read(0, 65536):
        for frame in reader.feed(chunk):
            try:
                table = decoder.decode(frame)
            except tf.FeedError as exc:
                result = tf.Result(frame.seq, False, str(exc), need_full=True, pid=os.getpid())
            else:
                hosts = sorted(table.index.exact)
                ok = routing.match(table, hosts[0], "/") is not None if hosts else True
                message = json.dumps([table.checksum, hosts, len(decoder)])
                result = tf.Result(frame.seq, ok, message, pid=os.getpid())
            os.write(1, tf.pack_result(result))
""")


class Worker:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.reader = tf.FrameReader()
        self.pending: list[tf.Frame] = []

    def send(self, data: bytes) -> tf.Result:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()
        while not self.pending:
            chunk = os.read(self.process.stdout.fileno(), 65536)
            assert chunk, "the worker process ended"
            self.pending.extend(self.reader.feed(chunk))
        return tf.read_result(self.pending.pop(0))

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        assert self.process.wait(10) == 0
        self.process.stdout.close()


@pytest.fixture
def worker() -> Iterator[Worker]:
    running = Worker()
    yield running
    running.close()


def test_tables_reach_another_process_whole_then_as_deltas(worker: Worker) -> None:
    import json

    encoder = tf.Encoder()
    base = routes(300)
    first = dp.table(*base)
    sent = encoder.encode(first)
    assert sent.basis == 0 and sent.frame_for(0) == sent.full()
    result = worker.send(sent.frame_for(0))
    assert result.ok and result.seq == 1 and result.pid == worker.process.pid
    checksum, hosts, held = json.loads(result.message)
    assert checksum == first.checksum
    assert hosts == sorted(f"h{i}.test" for i in range(300))
    assert held == 300

    # One route replaced: the delta carries that route, the others by reference.
    changed = [*base[:-1], dp.route("new.test", "http://127.0.0.1:9999")]
    second = dp.table(*changed)
    delta = encoder.encode(second)
    assert delta.basis == 1
    assert len(delta.frame_for(1)) * 5 < len(delta.full())
    result = worker.send(delta.frame_for(1))
    assert result.ok and result.seq == 2
    checksum, hosts, held = json.loads(result.message)
    assert checksum == second.checksum
    assert "new.test" in hosts and "h299.test" not in hosts
    assert held == 300  # the dropped route is no longer held
    assert len(encoder) == 300


def test_a_delta_against_a_table_the_worker_lacks_asks_for_the_whole_one(worker: Worker) -> None:
    encoder = tf.Encoder()
    encoder.encode(dp.table(*routes(3)))  # never sent to this worker
    delta = encoder.encode(dp.table(*routes(4)))
    result = worker.send(delta.delta)
    assert (result.ok, result.need_full) == (False, True)
    assert "holds 0" in result.message
    result = worker.send(delta.frame_for(0))
    assert result.ok and result.seq == 2


def test_a_damaged_frame_changes_nothing_and_the_worker_goes_on(worker: Worker) -> None:
    encoder = tf.Encoder()
    first = encoder.encode(dp.table(*routes(5)))
    assert worker.send(first.full()).ok
    second = encoder.encode(dp.table(*routes(6)))
    damaged = bytearray(second.delta)
    for position in range(tf.HEADER.size + 2, len(damaged), 7):
        damaged[position] ^= 0x5A
    result = worker.send(bytes(damaged))
    assert (result.ok, result.need_full) == (False, True)
    # Still holding table 1, so the whole table 2 goes in; later deltas follow from it.
    assert worker.send(second.full()).ok
    assert worker.send(encoder.encode(dp.table(*routes(7))).frame_for(2)).ok


def test_unchanged_routes_stay_the_same_objects_on_the_receiving_side() -> None:
    encoder, decoder = tf.Encoder(), tf.Decoder()
    base = routes(10)
    got1 = decode(decoder, encoder.encode(dp.table(*base)).full())
    got2 = decode(decoder, encoder.encode(dp.table(*base[:9])).frame_for(1))
    assert got2.settings.routes == tuple(base[:9])
    assert all(a is b for a, b in zip(got1.settings.routes, got2.settings.routes, strict=False))


def test_certificates_and_settings_arrive_unchanged() -> None:
    ca = certs.TestCA.create()
    leaf = ca.issue("a.test")
    certificate = config.Certificate(cert_pem=leaf.cert_pem, key_pem=leaf.key_pem)
    mtls = config.DownstreamMTLS(ca_pem=ca.cert_pem, enforcement="policy")
    policy = {"allow": {"or": [{"email": {"is": "a@b.c"}}]}}
    table = dp.table(
        dp.route("a.test", "http://127.0.0.1:1", public=False, policy=policy,
                 regex="^/v[0-9]+/x$"),
        certificates=(certificate,), downstream_mtls=mtls, cookie_secret="c" * 44,
    )
    encoder, decoder = tf.Encoder(), tf.Decoder()
    got = decode(decoder, encoder.encode(table).full())
    assert got.settings == table.settings
    assert got.checksum == table.checksum
    assert len(decoder) == 2
    # A later table with the same certificate object sends it by reference, not its PEM again.
    again = dataclasses.replace(table.settings, cookie_name="other")
    second = encoder.encode(routing.build_table(again))
    body = leaf.key_pem.split("\n")[1].encode()
    assert body in second.full() and body not in second.frame_for(1)
    assert decode(decoder, second.frame_for(1)).settings == again


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo owned > /dev/null",))


def test_a_frame_naming_anything_but_the_config_classes_is_refused() -> None:
    table = dp.table(*routes(1))
    head = pickle.dumps((0, table.checksum, []), protocol=5)
    evil = pickle.dumps(_Boom(), protocol=5)
    with pytest.raises(tf.FeedError, match=r"may not name (posix|os)\.system"):
        tf.Decoder().decode(tf.Frame(tf.FULL, 1, head + evil))
    with pytest.raises(tf.FeedError, match="may not name"):
        tf.Decoder().decode(tf.Frame(tf.FULL, 1, evil))


def test_a_table_the_index_refuses_is_an_error_but_the_sides_stay_in_step() -> None:
    encoder, decoder = tf.Encoder(), tf.Decoder()
    decode(decoder, encoder.encode(dp.table(*routes(2))).full())
    bad = config.RouteTable(
        settings=config.Settings(routes=(dp.route("x.test", "http://127.0.0.1:1", prefix="/a",
                                                  path="/b"),)),
        checksum="bad",
    )
    with pytest.raises(errors.ConfigError, match="only one of prefix, path, regex"):
        decode(decoder, encoder.encode(bad).frame_for(1))
    assert decoder.seq == 2
    assert decode(decoder, encoder.encode(dp.table(*routes(3))).frame_for(2)).checksum


def test_frames_cut_anywhere_are_put_back_together() -> None:
    encoded = tf.Encoder().encode(dp.table(*routes(20)))
    stream = encoded.full() + tf.pack_result(tf.Result(1, True, "fine", pid=7))
    reader = tf.FrameReader()
    got: list[tf.Frame] = []
    for position in range(0, len(stream), 97):
        got.extend(reader.feed(stream[position:position + 97]))
    assert [f.kind for f in got] == [tf.FULL, tf.RESULT]
    assert tf.read_result(got[1]) == tf.Result(1, True, "fine", pid=7)


def test_a_bad_header_breaks_the_stream_for_good() -> None:
    reader = tf.FrameReader()
    with pytest.raises(tf.FeedError, match="not a table-feed frame"):
        list(reader.feed(b"GET / HTTP/1.1\r\n\r\n"))
    with pytest.raises(tf.FeedError, match="not a table-feed frame"):
        list(reader.feed(tf.pack_result(tf.Result(1, True))))
    oversize = tf.HEADER.pack(tf.MAGIC, tf.FULL, 1, tf.MAX_PAYLOAD + 1)
    with pytest.raises(tf.FeedError, match="length"):
        list(tf.FrameReader().feed(oversize))


def test_results_are_json_and_checked() -> None:
    frame = tf.Frame(tf.RESULT, 3, b'{"seq": 3, "ok": false, "message": "no"}')
    assert tf.read_result(frame) == tf.Result(3, False, "no")
    with pytest.raises(tf.FeedError, match="unreadable result"):
        tf.read_result(tf.Frame(tf.RESULT, 3, pickle.dumps({"seq": 3})))
    with pytest.raises(tf.FeedError, match="table 4 in the frame of table 3"):
        tf.read_result(tf.Frame(tf.RESULT, 3, b'{"seq": 4, "ok": true}'))
    with pytest.raises(tf.FeedError, match="expected a result"):
        tf.read_result(tf.Frame(tf.FULL, 3, b"{}"))
    with pytest.raises(tf.FeedError, match="expected a table"):
        tf.Decoder().decode(tf.Frame(tf.RESULT, 3, b"{}"))


def test_the_index_built_from_deltas_routes_as_a_fresh_one() -> None:
    import random

    rng = random.Random(12)
    pool = [
        dp.route(f"h{i % 7}.test", f"http://127.0.0.1:{9000 + i}", prefix=f"/p{i % 5}")
        for i in range(40)
    ] + [dp.route(f"h{i}.test", f"http://127.0.0.1:{9100 + i}", regex=f"^/r{i}/[0-9]+$")
         for i in range(5)] + [dp.route("*.wild.test", "http://127.0.0.1:9200")]
    encoder, decoder = tf.Encoder(), tf.Decoder()
    held = 0
    for _ in range(30):
        chosen = rng.sample(pool, rng.randint(1, len(pool)))
        fresh = dp.table(*chosen)
        got = decode(decoder, encoder.encode(fresh).frame_for(held))
        held = decoder.seq
        probes = [(f"h{i}.test", p) for i in range(8)
                  for p in ("/", "/p1", "/p3/x", "/r2/7", "/r4/x")] + [("a.wild.test", "/")]
        for host, path in probes:
            want, have = routing.match(fresh, host, path), routing.match(got, host, path)
            assert (want and want.route) == (have and have.route), (host, path)
        indexes = [e.route_index for h in got.index.exact.values() for e in h.ordered()]
        assert len(indexes) == len(set(indexes))  # unique in the table (the gate's caches)
