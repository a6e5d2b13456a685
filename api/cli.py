"""`sealgate api-server` (the HTTP API alone) and `sealgate api-spec` (print its OpenAPI spec)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.config import Config


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register api-server and api-spec."""
    p = sub.add_parser(
        "api-server",
        parents=[common],
        help="serve the HTTP API alone, until SIGTERM or SIGINT",
        description="Serve the HTTP API on api.listen in the foreground until SIGTERM or "
        "SIGINT. `sealgate run` serves it too (unless api.enabled is false).",
    )
    p.set_defaults(func=_serve)
    s = sub.add_parser(
        "api-spec",
        parents=[common],
        help="print the HTTP API's OpenAPI document (docs/openapi.json)",
    )
    s.set_defaults(func=_spec)


def spec_text() -> str:
    """The OpenAPI document as committed in docs/openapi.json."""
    from api.app import openapi_spec

    return json.dumps(openapi_spec(), indent=2, sort_keys=True) + "\n"


def _spec(cfg: Config, args: argparse.Namespace) -> int:
    print(spec_text(), end="")
    return 0


def _serve(cfg: Config, args: argparse.Namespace) -> int:
    from api.serve import run
    from gateway import log

    log.setup(cfg.log.level)
    try:
        return run(cfg)
    finally:
        log.stop()
