"""The one compiled part: the resampler's FIR (voicegw/audio/_fir.c). Optional: without a C
compiler the install goes on and voicegw.audio.resample uses numpy (same output, more CPU)."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("voicegw.audio._fir", ["voicegw/audio/_fir.c"], optional=True,
                             extra_compile_args=["-O3"])])
