"""Call recording: what the caller said and what the caller heard, one WAV per call
(voicegw.recording.recorder), under the recordings directory (voicegw.recording.files)."""
