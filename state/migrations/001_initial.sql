-- Stage 4 state. Postgres is the source of truth; Redis and the engine's memory are rebuilt
-- from it. cluster_type is the clustering scope (embedding type / model / fields): one
-- cluster per item per scope (seed 000's multi-dimension design).

CREATE TABLE clusters (
    id                  text PRIMARY KEY,
    cluster_type        text NOT NULL,
    status              text NOT NULL CHECK (status IN ('candidate', 'active', 'retired', 'merged')),
    size                integer NOT NULL CHECK (size >= 0),
    weight              double precision NOT NULL,
    label               text,
    medoid_item_id      text,
    summary             jsonb,
    first_event_time    double precision,
    last_event_time     double precision,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT clusters_id_cluster_type_unique UNIQUE (id, cluster_type)
);
CREATE INDEX clusters_type_status ON clusters (cluster_type, status);

CREATE TABLE cluster_items (
    id              bigserial PRIMARY KEY,
    cluster_id      text NOT NULL,
    cluster_type    text NOT NULL,
    item_type       text NOT NULL CHECK (item_type IN ('document', 'event', 'entity', 'storyline')),
    item_id         text NOT NULL,
    document_id     text,
    similarity      double precision,
    event_time      double precision,
    CONSTRAINT cluster_items_cluster_type_item_type_item_id_key
        UNIQUE (cluster_type, item_type, item_id),
    CONSTRAINT cluster_items_cluster_id_cluster_type_fk
        FOREIGN KEY (cluster_id, cluster_type) REFERENCES clusters (id, cluster_type)
        ON DELETE CASCADE
);
CREATE INDEX cluster_items_cluster ON cluster_items (cluster_id);
CREATE INDEX cluster_items_document ON cluster_items (document_id) WHERE document_id IS NOT NULL;

-- Messages that must leave exactly as committed: change events and worker-side dead letters.
CREATE TABLE outbox (
    seq         bigserial PRIMARY KEY,
    event_id    text NOT NULL UNIQUE,
    topic       text NOT NULL,
    key         bytea,
    payload     bytea NOT NULL,
    headers     jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;

-- One HDBSCAN run over a scope, and its groups (seed 001: the medoid is a real row, outliers
-- (label -1) have none).
CREATE TABLE reconsolidation_runs (
    id              bigserial PRIMARY KEY,
    cluster_type    text NOT NULL,
    sequence        bigint NOT NULL,
    trigger         text NOT NULL,
    event_time      double precision NOT NULL,
    parameters      jsonb NOT NULL,
    input_clusters  integer NOT NULL,
    input_points    integer NOT NULL,
    clusters_found  integer NOT NULL,
    outliers        integer NOT NULL,
    skipped         text,
    transitions     jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (cluster_type, sequence, trigger)
);

CREATE TABLE reconsolidation_clusters (
    run_id              bigint NOT NULL REFERENCES reconsolidation_runs (id) ON DELETE CASCADE,
    label               integer NOT NULL,
    size                integer NOT NULL,
    medoid_item_id      text,
    medoid_item_ref     bigint REFERENCES cluster_items (id) ON DELETE SET NULL,
    mean_similarity     double precision,
    cluster_ids         text[] NOT NULL,
    PRIMARY KEY (run_id, label),
    CHECK (label >= 0 OR medoid_item_id IS NULL)
);

-- Next offset to read per input partition, committed with the state it produced.
-- published_offset: everything before it has been published downstream.
CREATE TABLE consumed_offsets (
    consumer_group      text NOT NULL,
    topic               text NOT NULL,
    partition           integer NOT NULL,
    next_offset         bigint NOT NULL,
    published_offset    bigint NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- The engine of one partition (all its scopes), serialised, and the offset it is valid at.
-- A restart loads it and replays the partition from there; the engine is deterministic.
CREATE TABLE engine_checkpoints (
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    partition       integer NOT NULL,
    next_offset     bigint NOT NULL,
    state           bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
