"""`sealgate portal-server`: the recipient portal on its own, e.g. on a portal-only node.

`sealgate run` starts the portal too; this command is for nodes that serve
only the portal, sharing the gateway's storage (`storage.url`) and master key.
"""

from __future__ import annotations

import argparse
from typing import Any

from gateway.config import Config


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register portal-server."""
    p = sub.add_parser(
        "portal-server",
        parents=[common],
        help="serve the recipient portal alone, until SIGTERM or SIGINT",
        description="Serve the recipient web portal on portal.listen, in the foreground, "
        "until SIGTERM or SIGINT. `sealgate run` serves it too; use this on nodes that "
        "serve only the portal (they share storage.url and data_dir/master.key).",
    )
    p.set_defaults(func=_serve)


def _serve(cfg: Config, args: argparse.Namespace) -> int:
    from gateway import log
    from portal.serve import run

    log.setup(cfg.log.level)
    try:
        return run(cfg)
    finally:
        log.stop()
