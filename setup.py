"""The compiled parts, both optional: without a C compiler the install goes on and the Python
references run (same results, more CPU).

- voicegw/audio/_fir.c: the resampler's FIR (else numpy, in voicegw.audio.resample);
- voicegw/_fastwire.c: a caller frame's media pattern and its append message (else the pattern
  and the concatenation in voicegw.telephony.twilio and voicegw.realtime.dialects).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("voicegw.audio._fir", ["voicegw/audio/_fir.c"], optional=True,
                             extra_compile_args=["-O3"]),
                   Extension("voicegw._fastwire", ["voicegw/_fastwire.c"], optional=True,
                             extra_compile_args=["-O3"])])
