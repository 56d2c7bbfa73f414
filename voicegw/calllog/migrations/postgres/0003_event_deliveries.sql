-- Post-call webhook events (voicegw.events): one row per event, its body fixed when it is created,
-- kept until delivered or given up on. A row is worked on by one gateway process at a time: its
-- owner, until lease_until (a process that stops releases its rows; one that dies loses them
-- when the lease runs out, and another process claims them).
CREATE TABLE event_deliveries (
    id              TEXT PRIMARY KEY,
    call_sid        TEXT NOT NULL REFERENCES calls (call_sid) ON DELETE CASCADE,
    type            TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      DOUBLE PRECISION NOT NULL,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    last_attempt_at DOUBLE PRECISION,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    DOUBLE PRECISION,
    owner           TEXT NOT NULL,
    lease_until     DOUBLE PRECISION NOT NULL,
    history         TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX event_deliveries_due ON event_deliveries (status, next_attempt_at);
CREATE INDEX event_deliveries_created ON event_deliveries (created_at DESC, id DESC);
CREATE INDEX event_deliveries_call ON event_deliveries (call_sid, created_at);
