"""Bounceback: an SMPP gateway proxy that turns soft bounces into deliveries."""

__version__ = "0.1.0"
