"""Running the API: store open, uvicorn on `api.listen`, clean stop.

`serve` runs in a process of its own: the child `sealgate run` starts
(api/process.py), or `sealgate api-server -c CONFIG` on its own. It needs the
data directory for the queue, quarantine and status routes, and the shared
store (keys, audit trail, portal copies); it never needs the master key.
"""

from __future__ import annotations

import asyncio
import signal

from api.app import create_app
from api.context import ApiContext, ApiSettings, submit_address
from api.submit import Submitter
from gateway.config import Config
from gateway.store import StoreError, open_store
from gateway.webservice import OnReady, StartError, reporting, run_service, serve_app


class ApiStartError(StartError):
    """The API cannot start; the message says why, for the operator."""


def submitter_for(cfg: Config) -> Submitter:
    """The submitter api.submit (or the first SMTP listener) and its credentials describe."""
    return Submitter(
        submit_address(cfg), cfg.hostname, cfg.api.submit_user, cfg.api.submit_password
    )


async def serve(cfg: Config, stop: asyncio.Event, *, on_ready: OnReady | None = None) -> None:
    """Serve the API until stop is set; a StartError when it cannot start."""
    try:
        store = await open_store(cfg.storage, cfg.data_dir)
    except StoreError as exc:
        raise ApiStartError(f"cannot open the shared store: {exc}") from None
    try:
        async with reporting(cfg):
            ctx = ApiContext(ApiSettings.from_config(cfg), store, submitter_for(cfg))
            await serve_app(create_app(ctx), cfg.api.listen, stop, service="api", on_ready=on_ready)
    finally:
        await store.close()


def run(
    cfg: Config,
    *,
    on_ready: OnReady | None = None,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> int:
    """Run the API in the foreground until one of signals: 0, or 1 if it cannot start."""
    return run_service("api", lambda stop: serve(cfg, stop, on_ready=on_ready), signals=signals)
