"""I/O around the engine: command line, offline replay (and the Kafka worker)."""
