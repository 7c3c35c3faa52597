"""The admin listener: ``/healthz``, ``/readyz`` and ``/metrics`` on their own address.

Kept off the proxy's listeners (Pomerium's ``metrics_address``) so that probes and scrapes never
go through routing, authentication or the public certificate, and a route can never shadow them.
Low traffic, so aiohttp's ``web.Application`` is the right tool here.

* ``/healthz`` — 200 while the process runs (liveness).
* ``/readyz`` — 200 when ``ready()`` says the table is loaded and the listeners are bound, else
  503 with a JSON reason (readiness); both carry the table's generation and checksum and the last
  reload error, if any.
* ``/metrics`` — Prometheus text; in multiprocess mode the sum over every worker. The
  certificate expiries and ``vallum_ready`` are this process's view, taken at scrape time from
  the table it serves and its readiness check.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from aiohttp import web

from vallum.proxy import metrics as metrics_mod
from vallum.proxy import state

_HOLDER = web.AppKey("holder", state.TableHolder)
_METRICS = web.AppKey("metrics", metrics_mod.Metrics)
_READY: web.AppKey[Callable[[], bool]] = web.AppKey("ready")


def make_app(
    holder: state.TableHolder, metrics: metrics_mod.Metrics, ready: Callable[[], bool]
) -> web.Application:
    """The admin application (exposed for tests and for embedding)."""
    app = web.Application()
    app[_HOLDER] = holder
    app[_METRICS] = metrics
    app[_READY] = ready
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    return app


async def start_admin(
    host: str,
    port: int,
    holder: state.TableHolder,
    metrics: metrics_mod.Metrics,
    ready: Callable[[], bool],
) -> web.AppRunner:
    """Bind and start the admin listener; ``await runner.cleanup()`` stops it.

    One process binds it (with ``--workers N`` the first worker; multiprocess metrics make its
    ``/metrics`` the sum of all). No ``SO_REUSEPORT``: a second Vallum left running on the same
    addresses must fail here, loudly, rather than quietly share probes and scrapes.
    """
    runner = web.AppRunner(make_app(holder, metrics, ready), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def _table_state(holder: state.TableHolder) -> dict[str, Any]:
    return {
        "generation": holder.generation,
        "checksum": holder.current.checksum,
        "routes": len(holder.current.settings.routes),
        "loaded_at": dt.datetime.fromtimestamp(holder.loaded_at, dt.UTC).isoformat(),
        "last_error": holder.last_error,
    }


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    holder = request.app[_HOLDER]
    try:
        ready = bool(request.app[_READY]())
    except Exception as exc:  # a failing readiness check means "not ready", never a 500
        body = {"ready": False, "reason": f"readiness check failed: {type(exc).__name__}"}
        return web.json_response(body | _table_state(holder), status=503)
    if not ready:
        body = {"ready": False, "reason": "route table not loaded or listeners not bound yet"}
        return web.json_response(body | _table_state(holder), status=503)
    return web.json_response({"ready": True} | _table_state(holder))


async def _metrics(request: web.Request) -> web.Response:
    holder = request.app[_HOLDER]
    collected = request.app[_METRICS]
    # This process's view, fresh at scrape time (other workers update theirs on swap/failure).
    collected.generation.set(holder.generation)
    collected.last_reload_success.set(0 if holder.last_error else 1)
    collected.set_certificates(holder.current)  # parsed once per table
    try:
        collected.set_ready(bool(request.app[_READY]()))
    except Exception:  # as /readyz: a failing check means "not ready"
        collected.set_ready(False)
    body, content_type = collected.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response
