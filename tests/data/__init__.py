"""Stored test data and the scripts that regenerate it."""
