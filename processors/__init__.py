"""The clustering engine: pure, in memory, deterministic (no network, no wall clock).

Adapters (stream/, state/, benchmarks) use the engine only through these names.
"""

from processors.batch import DEFAULT_SCOPE, Batch, BatchResult, ClusterState, Move
from processors.checkpoint import FORMAT_VERSION
from processors.config import EngineConfig
from processors.engine import Engine, warm_up
from processors.scope import ScopeKey
from schemas.errors import CheckpointError, ClustererError, ConfigError

__all__ = [
    "DEFAULT_SCOPE",
    "FORMAT_VERSION",
    "Batch",
    "BatchResult",
    "CheckpointError",
    "ClusterState",
    "ClustererError",
    "ConfigError",
    "Engine",
    "EngineConfig",
    "Move",
    "ScopeKey",
    "warm_up",
]
