"""Sealgate's policy engine: a pure library that classifies a message for PHI.

It takes raw message bytes and the envelope and returns a decision; it does no
network I/O, writes nothing to disk and imports nothing from `gateway`.
"""
