-- Retention (state/retention.py): what a run needs to find old rows without scanning, and the
-- event-time clock of ended clusters.

-- The event time of its scope at which a retention run first saw the cluster retired or
-- merged: when the cluster ended, to within one run. A cluster row written as it ends carries
-- no event times (the engine has forgotten it), so this is the only event-time age it has.
ALTER TABLE clusters ADD COLUMN ended_event_time double precision;
-- ended clusters by scope and age; unstamped ones (NULL) sort last in the same index
CREATE INDEX clusters_ended ON clusters (cluster_type, ended_event_time)
    WHERE status IN ('retired', 'merged');

-- sent outbox rows by age (unsent rows are never deleted and have their own index)
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- reconsolidation runs by scope and event time
CREATE INDEX reconsolidation_runs_time ON reconsolidation_runs (cluster_type, event_time);

-- Deleting a membership sets reconsolidation_clusters.medoid_item_ref to NULL (ON DELETE SET
-- NULL). Without an index each deleted membership scanned the whole table: this concerns the
-- batch commit's own removals as much as retention.
CREATE INDEX reconsolidation_clusters_medoid_ref ON reconsolidation_clusters (medoid_item_ref)
    WHERE medoid_item_ref IS NOT NULL;
