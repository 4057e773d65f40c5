"""The one root of every error the clusterer raises on purpose.

It lives in `schemas`, the lowest layer, so the engine (`processors`) and every adapter
(`stream`, `state`) can derive from it without importing each other. Callers that want to
turn any expected failure into one line and an exit code catch `ClustererError`; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ClustererError(Exception):
    """Base of the clusterer's own errors (bad input, bad config, bad checkpoint, fencing)."""


class ConfigError(ClustererError, ValueError):
    """A configuration value of the wrong type or out of range; the message names the field."""


class CheckpointError(ClustererError):
    """A checkpoint this version cannot read (unknown format version, truncated, foreign)."""
