-- Calls (one row per call, columns for list views and transcript search) and their events.
CREATE TABLE calls (
    call_sid     TEXT PRIMARY KEY,
    stream_sid   TEXT NOT NULL DEFAULT '',
    from_number  TEXT NOT NULL DEFAULT '',
    to_number    TEXT NOT NULL DEFAULT '',
    agent        TEXT NOT NULL DEFAULT '',
    status       TEXT NOT NULL DEFAULT 'active',
    started_at   REAL NOT NULL,
    ended_at     REAL,
    duration_s   REAL,
    end_reason   TEXT,
    owner        TEXT NOT NULL DEFAULT '',
    heartbeat_at REAL NOT NULL,
    event_count  INTEGER NOT NULL DEFAULT 0,
    transcript   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX calls_started ON calls (started_at DESC, call_sid DESC);
CREATE INDEX calls_status ON calls (status, started_at DESC);
CREATE INDEX calls_agent ON calls (agent, started_at DESC);

CREATE TABLE call_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    call_sid TEXT NOT NULL REFERENCES calls (call_sid) ON DELETE CASCADE,
    t        REAL NOT NULL,
    kind     TEXT NOT NULL,
    data     TEXT NOT NULL
);
CREATE INDEX call_events_call ON call_events (call_sid, id);
