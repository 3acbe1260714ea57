-- Bounceback's PostgreSQL schema, version 0001.
-- Applied by `bounceback migrate` (and on start) inside one transaction; the
-- version is recorded in schema_migrations. Times are seconds since the epoch.

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    source_addr TEXT NOT NULL,
    destination_addr TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    carrier TEXT NOT NULL,
    carrier_message_id TEXT NOT NULL,
    next_attempt_at DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    done_at DOUBLE PRECISION,
    reason TEXT NOT NULL DEFAULT '',
    pdu BYTEA NOT NULL,
    data TEXT NOT NULL,
    -- the instance working on the message (claimed when due) and until when
    lease_owner TEXT,
    lease_until DOUBLE PRECISION
);
-- The due query walks this index in order and stops after its limit.
CREATE INDEX messages_due ON messages (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX messages_dest ON messages (destination_addr);
CREATE INDEX messages_created ON messages (created_at);
CREATE INDEX messages_done ON messages (done_at) WHERE done_at IS NOT NULL;
CREATE INDEX messages_unfinished ON messages (id) WHERE state IN ('accepted', 'submitting');

CREATE TABLE carrier_ids (
    carrier TEXT NOT NULL,
    key TEXT NOT NULL,
    message_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    PRIMARY KEY (carrier, key)
);

CREATE TABLE sender_receipts (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account TEXT NOT NULL,
    message_id TEXT NOT NULL,
    stat TEXT NOT NULL,
    err TEXT NOT NULL,
    done_at DOUBLE PRECISION NOT NULL,
    intermediate BOOLEAN NOT NULL,
    source_addr TEXT NOT NULL,
    destination_addr TEXT NOT NULL,
    submit_date DOUBLE PRECISION NOT NULL,
    text TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    -- the instance delivering the receipt to a bound receiver and until when
    lease_owner TEXT,
    lease_until DOUBLE PRECISION
);
CREATE INDEX sender_receipts_account ON sender_receipts (account, seq);

CREATE TABLE outbox (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL
);

CREATE TABLE suppression (
    number TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    account TEXT NOT NULL
);

CREATE TABLE soft_bounces (
    number TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX soft_bounces_number ON soft_bounces (number, at);

CREATE TABLE unmatched_receipts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    carrier TEXT NOT NULL,
    message_id TEXT NOT NULL,
    text TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL
);

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Instance numbers (0..1023, embedded in message ids), each held with a lease
-- the instance renews; a slot whose lease ran out can be taken over.
CREATE TABLE instances (
    slot INTEGER PRIMARY KEY CHECK (slot BETWEEN 0 AND 1023),
    name TEXT NOT NULL,
    token TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    lease_until DOUBLE PRECISION NOT NULL
);

-- Jobs one instance does at a time (the feed publisher), each with a lease.
CREATE TABLE leaders (
    job TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    lease_until DOUBLE PRECISION NOT NULL
);
