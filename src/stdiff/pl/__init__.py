"""Plotting."""

from ._superresolution import superresolution

__all__ = ["superresolution"]
