"""The clustering engine: pure, in memory, deterministic (no network, no wall clock).

Adapters (stream/, state/, benchmarks) use the engine only through these names: the call
shapes, the engine, its config, scope keys and the errors it raises.
"""

from processors.batch import Batch, BatchResult, ClusterState, Move
from processors.config import EngineConfig
from processors.engine import Engine, warm_up
from processors.scope import ScopeKey
from schemas.errors import CheckpointError, ClustererError, ConfigError

__all__ = [
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
