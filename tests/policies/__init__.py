"""Tests for the policy engine."""
