-- The API's batch jobs: their own tables, never the live stream's clusters. A job's state,
-- progress and engine checkpoint live here so that a job survives an API restart (a
-- restarted API resumes it from its last checkpoint).

CREATE TABLE batch_jobs (
    id                  text PRIMARY KEY,
    status              text NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    source_kind         text NOT NULL CHECK (source_kind IN ('upload', 'directory')),
    source_path         text,            -- directory jobs: relative to the data root
    model               text,            -- Stage 3 directories: model of vectors naming none
    name                text,
    items_total         integer NOT NULL DEFAULT 0,
    items_done          integer NOT NULL DEFAULT 0,
    items_rejected      integer NOT NULL DEFAULT 0,  -- bad vectors (zero, wrong dimension...)
    resumed_from        integer NOT NULL DEFAULT 0,  -- items the current run took from a checkpoint
    clusters            integer,
    error               text,
    cancel_requested    boolean NOT NULL DEFAULT false,
    owner               text,            -- the API process running it (lease holder)
    heartbeat_at        timestamptz,
    checkpoint          bytea,           -- Engine.snapshot() after checkpoint_done items
    checkpoint_done     integer NOT NULL DEFAULT 0,
    checkpoint_rejected integer NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz
);
CREATE INDEX batch_jobs_queue ON batch_jobs (status, created_at);

-- An uploaded JSONL, kept until the job ends so that a restart can read it again.
CREATE TABLE batch_job_inputs (
    job_id  text PRIMARY KEY REFERENCES batch_jobs (id) ON DELETE CASCADE,
    data    bytea NOT NULL
);

-- One ClusterResult per line of the job's JSONL result, in output order.
CREATE TABLE batch_job_results (
    job_id      text NOT NULL REFERENCES batch_jobs (id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    cluster_id  text NOT NULL,
    result      jsonb NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- The read side looks an item up by its id alone (GET /items/{id}); the unique key of
-- cluster_items starts with cluster_type and cannot serve that.
CREATE INDEX IF NOT EXISTS cluster_items_item ON cluster_items (item_id);
