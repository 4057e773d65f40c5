"""`clusterer api`: the HTTP read side and batch jobs (FastAPI over PostgreSQL + Redis)."""
