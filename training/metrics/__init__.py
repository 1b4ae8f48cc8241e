"""Metrics of the four methods, one module per method."""
