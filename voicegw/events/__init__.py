"""Post-call events: signed webhooks telling another system what happened on a call.

`call.started`, `call.ended` (the stored call record: transcript, tools, barge-ins, latencies,
summary and extraction, recording) and `recording.ready`, POSTed to `VOICEGW_EVENTS_URL` and
signed per Standard Webhooks (`signing`). Payloads are built from what the call log stored
(`payloads`), kept in the call log's database until delivered (`store`, `sqlite`, `postgres`)
and delivered by a background task of each gateway process (`dispatcher`), never on a call's
audio path. See docs/EVENTS.md.
"""
