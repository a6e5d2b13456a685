"""Sealgate: SMTP relay and secure email gateway for healthcare."""

__version__ = "0.1.0"
