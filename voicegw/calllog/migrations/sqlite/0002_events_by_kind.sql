-- The overview reads events by kind and time (turn latency, tool results).
CREATE INDEX call_events_kind_t ON call_events (kind, t);
