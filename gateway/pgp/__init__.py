"""OpenPGP for recipients: the gateway's keyring, key discovery and PGP/MIME output."""

from gateway.pgp.directory import PgpDirectory
from gateway.pgp.handler import PgpHandler

__all__ = ["PgpDirectory", "PgpHandler"]
