-- What the read side (API, `clusterer export`) needs to serve a whole ClusterResult without
-- the engine: the centroid and the embedding type of every cluster, and a durable log of
-- each cluster's change events (the outbox is a delivery queue and is pruned once sent).

ALTER TABLE clusters ADD COLUMN embedding_type text;
-- float32 little-endian, the cluster's unit centroid as of its last update
ALTER TABLE clusters ADD COLUMN centroid bytea;
ALTER TABLE clusters ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX clusters_last_event ON clusters (last_event_time DESC, id);

-- One row per change event, written in the batch transaction with the outbox row.
CREATE TABLE cluster_events (
    event_id        text PRIMARY KEY,
    cluster_id      text NOT NULL,
    cluster_type    text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('created', 'updated', 'merged', 'split', 'retired')),
    related_ids     text[] NOT NULL DEFAULT '{}',
    event_time      double precision NOT NULL,
    sequence        bigint NOT NULL,
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cluster_events_cluster ON cluster_events (cluster_id, sequence);
CREATE INDEX cluster_events_related ON cluster_events USING gin (related_ids);
CREATE INDEX cluster_events_time ON cluster_events (event_time);
