"""The clustering engine: pure, in memory, deterministic (no network, no wall clock)."""

from processors.config import EngineConfig
from processors.engine import BatchResult, Engine

__all__ = ["BatchResult", "Engine", "EngineConfig"]
