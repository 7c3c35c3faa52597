"""``JwksCache`` against a real JWKS server: loading, the rate-limited refetch on an unknown
``kid``, key rotation both ways, an endpoint that is down, slow or answers garbage."""

from __future__ import annotations

import asyncio
import time

import pytest

import vallum.verify as api
from tests.verify import world


async def test_keys_load_once_and_are_reused() -> None:
    signer = world.minter()
    async with world.jwks_server(world.jwks(signer)) as server:
        cache = api.JwksCache(server.url)
        try:
            assert await cache.key_for(signer.kid) is not None
            assert await cache.key_for(signer.kid) is not None
            assert server.fetches == 1
        finally:
            await cache.close()


async def test_unknown_kids_refetch_at_most_once_per_interval() -> None:
    signer = world.minter()
    async with world.jwks_server(world.jwks(signer)) as server:
        cache = api.JwksCache(server.url, refetch_interval=0.3)
        try:
            await cache.key_for(signer.kid)
            assert await cache.key_for("made-up") is None
            assert server.fetches == 1  # just loaded: an unknown kid waits for the interval
            await asyncio.sleep(0.35)
            results = await asyncio.gather(*(cache.key_for(f"made-up-{i}") for i in range(50)))
            assert results == [None] * 50
            assert server.fetches == 2  # one refetch for all 50
        finally:
            await cache.close()


async def test_rotation_a_new_key_is_picked_up_and_a_removed_one_dropped() -> None:
    old, new = world.minter(), world.minter()
    async with world.jwks_server(world.jwks(old)) as server:
        cache = api.JwksCache(server.url, refetch_interval=0.2, max_age=0.5)
        verifier = api.Verifier(cache, world.HOST)
        try:
            assert (await verifier.verify(world.mint(old)))["sub"] == "alice"
            server.document = world.jwks(new, old)  # the new key is published
            await asyncio.sleep(0.25)
            assert (await verifier.verify(world.mint(new)))["sub"] == "alice"
            server.document = world.jwks(new)  # the old key is withdrawn
            await asyncio.sleep(0.6)  # older than max_age: the next request refreshes
            with pytest.raises(api.VerificationError, match="unknown key"):
                await verifier.verify(world.mint(old))
            assert (await verifier.verify(world.mint(new)))["sub"] == "alice"
        finally:
            await cache.close()


async def test_within_the_interval_a_new_key_waits_for_the_next_refetch() -> None:
    old, new = world.minter(), world.minter()
    async with world.jwks_server(world.jwks(old)) as server:
        cache = api.JwksCache(server.url, refetch_interval=30)
        try:
            await cache.key_for(old.kid)
            server.document = world.jwks(new, old)
            assert await cache.key_for(new.kid) is None  # rate-limited: not fetched again
            assert (await cache.refresh()).get(new.kid) is not None  # an explicit refresh is not
        finally:
            await cache.close()


async def test_down_at_start_is_closed_until_the_keys_load() -> None:
    signer = world.minter()
    async with world.jwks_server(world.jwks(signer), status=503) as server:
        cache = api.JwksCache(server.url, retry_interval=0.2)
        verifier = api.Verifier(cache, world.HOST)
        try:
            with pytest.raises(api.KeysUnavailable):
                await verifier.verify(world.mint(signer))
            with pytest.raises(api.KeysUnavailable):  # within retry_interval: no new fetch
                await verifier.verify(world.mint(signer))
            assert server.fetches == 1
            server.status = 200
            await asyncio.sleep(0.25)
            assert (await verifier.verify(world.mint(signer)))["sub"] == "alice"
        finally:
            await cache.close()


async def test_a_failed_refresh_keeps_the_last_good_keys() -> None:
    signer = world.minter()
    async with world.jwks_server(world.jwks(signer)) as server:
        cache = api.JwksCache(server.url, refetch_interval=0, max_age=0)
        try:
            await cache.key_for(signer.kid)
            server.status = 500
            assert await cache.key_for(signer.kid) is not None
            assert server.fetches == 2
        finally:
            await cache.close()


@pytest.mark.parametrize("raw", [b"not json", b'{"keys": 1}', b"[" * 10 + b" " * 300_000])
async def test_garbage_or_oversized_documents_load_no_keys(raw: bytes) -> None:
    async with world.jwks_server({"keys": []}) as server:
        server.raw = raw
        cache = api.JwksCache(server.url)
        try:
            with pytest.raises(api.KeysUnavailable):
                await cache.key_for("any")
        finally:
            await cache.close()


async def test_a_slow_endpoint_times_out() -> None:
    signer = world.minter()
    async with world.jwks_server(world.jwks(signer)) as server:
        server.delay = 1.5
        cache = api.JwksCache(server.url, timeout=0.3)
        started = time.monotonic()
        try:
            with pytest.raises(api.KeysUnavailable):
                await cache.key_for(signer.kid)
            assert time.monotonic() - started < 2
        finally:
            await cache.close()
