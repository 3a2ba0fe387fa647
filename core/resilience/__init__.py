"""Policies that keep a batch going: retry, breaker, timeout, fallback, errors, health, cleanup."""
