"""Inbound SMTP: listeners, relay control, limits, and the hand-off to the spool."""
