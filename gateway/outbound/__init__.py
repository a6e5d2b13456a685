"""Outbound delivery: routes, SMTP sessions and the transport that reports per-recipient results."""
