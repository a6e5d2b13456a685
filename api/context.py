"""What every route needs: settings from the configuration, the shared store, the submitter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from api.submit import Submitter
from gateway.config import Config, HostPort
from gateway.store.base import Store
from gateway.webservice import submission_address


def submit_address(cfg: Config) -> HostPort:
    """Where the API submits mail: api.submit, else the gateway's first listener."""
    return submission_address(cfg, cfg.api.submit)


@dataclass(frozen=True)
class ApiSettings:
    """The parts of the configuration the API uses."""

    data_dir: Path
    hostname: str
    max_request_size: int
    max_recipients: int

    @classmethod
    def from_config(cls, cfg: Config) -> ApiSettings:
        """The API's settings from the whole configuration."""
        return cls(
            data_dir=cfg.data_dir,
            hostname=cfg.hostname,
            max_request_size=cfg.api.max_request_size,
            max_recipients=cfg.api.max_recipients,
        )


@dataclass(frozen=True)
class ApiContext:
    """Shared by every request of one API process."""

    settings: ApiSettings
    store: Store
    submitter: Submitter


def context(request: Request) -> ApiContext:
    """The context create_app attached to the application."""
    ctx = request.app.state.ctx
    assert isinstance(ctx, ApiContext)
    return ctx
