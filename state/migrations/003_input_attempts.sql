-- The crash-loop guard (stream/crash_loop.py): attempts at the first offset of the latest
-- batch of each input partition, where a restart can see them, and the records it gave up
-- on (dead-lettered as `poison`), which a replay from an older checkpoint must skip too.

CREATE TABLE input_attempts (
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    partition       integer NOT NULL,
    first_offset    bigint NOT NULL,
    attempts        integer NOT NULL,
    suspect_until   bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

CREATE TABLE poisoned_records (
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    partition       integer NOT NULL,
    record_offset   bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition, record_offset)
);
