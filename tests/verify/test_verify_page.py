"""``docs/verify.md``: its Python (aiohttp middleware) and JavaScript (jose) examples run and do
what the page says against a JWKS served here and assertions minted by Vallum; its links resolve;
its flag table names every ``vallum verify`` flag."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.docs import pages
from tests.docs.test_links import LINK, anchors
from tests.support.net import free_port
from tests.verify import world
from vallum.cli import main as cli_main

PAGE = "verify.md"
JOSE_DIR = Path(__file__).resolve().parents[1] / "compat" / "jose"


def code(language: str) -> list[str]:
    return re.findall(r"```" + language + r"\n(.*?)\n```", pages.read(PAGE), re.DOTALL)


def localised(snippet: str, jwks_url: str) -> str:
    return (snippet.replace("https://app.example.com/.well-known/vallum/jwks.json", jwks_url)
            .replace("app.example.com", world.HOST))


async def test_the_aiohttp_example_serves_only_verified_requests() -> None:
    signer = world.minter()
    snippet = next(s for s in code("python") if "aiohttp_middleware" in s)
    async with world.jwks_server(world.jwks(signer)) as jwks:
        namespace: dict[str, Any] = {}
        exec(compile(localised(snippet, jwks.url), PAGE, "exec"), namespace)
        runner = web.AppRunner(namespace["app"], access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{port}/"
                headers = {"X-Vallum-Jwt-Assertion": world.mint(signer)}
                async with session.get(url, headers=headers) as r:
                    assert (r.status, await r.text()) == (200, "hello alice@example.test")
                async with session.get(url) as r:
                    assert r.status == 401
        finally:
            await runner.cleanup()
            await namespace["keys"].close()


async def test_the_javascript_example_accepts_vallum_and_refuses_a_forgery(
    tmp_path: Path,
) -> None:
    if shutil.which("node") is None or not (JOSE_DIR / "node_modules" / "jose").is_dir():
        pytest.skip("node or tests/compat/jose/node_modules missing (scripts/bootstrap)")
    signer = world.minter()
    [snippet] = code("js")
    async with world.jwks_server(world.jwks(signer)) as jwks:
        module = JOSE_DIR / f"_docs_example_{free_port()}.mjs"
        good, forged = world.mint(signer), world.hs256_with_public_key(signer, world.claims())
        module.write_text(localised(snippet, jwks.url) + f"""
for (const token of {json.dumps([good, forged])}) {{
  try {{
    const payload = await verifyAssertion({{headers: {{'x-vallum-jwt-assertion': token}}}});
    console.log(JSON.stringify({{ok: true, email: payload.email}}));
  }} catch (e) {{
    console.log(JSON.stringify({{ok: false, code: e.code}}));
  }}
}}
""")
        try:
            process = await asyncio.create_subprocess_exec(
                "node", str(module), stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(process.communicate(), 30)
        finally:
            module.unlink()
    results = [json.loads(line) for line in out.decode().splitlines()]
    assert results[0] == {"ok": True, "email": "alice@example.test"}, err
    assert results[1]["ok"] is False


def test_the_python_examples_compile() -> None:
    for snippet in code("python"):
        compile(snippet, PAGE, "exec")


def test_the_flag_table_names_every_flag() -> None:
    parser = cli_main.build_parser()
    verify = parser._subparsers._group_actions[0].choices["verify"]  # type: ignore[union-attr]
    flags = {o for a in verify._actions for o in a.option_strings if o.startswith("--")}
    named = set(re.findall(r"`(--[a-z-]+)", pages.read(PAGE)))
    assert flags - {"--help"} <= named, flags - named


def test_links_resolve() -> None:
    text = re.sub(r"```.*?```", "", pages.read(PAGE), flags=re.DOTALL)
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        file = (pages.DOCS / path).resolve() if path else pages.DOCS / PAGE
        assert file.exists(), target
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file.read_text(encoding="utf-8")), target


