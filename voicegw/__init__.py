"""voicegw: a phone-to-Realtime-model voice gateway."""
__version__ = "0.1.0"
