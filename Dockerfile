# voicegw gateway image: slim Python, the package installed from a wheel, run as a non-root user.
# Secrets (Twilio auth token, model keys, operator tokens, database password) come from the
# environment at run time; none is written into the image.
FROM python:3.11-slim AS build
WORKDIR /src
# a C compiler for the compiled parts (setup.py: voicegw/audio/_fir.c, voicegw/_fastwire.c); the
# final image gets the wheel only
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py README.md ./
COPY voicegw ./voicegw
RUN pip install --no-cache-dir --upgrade pip wheel \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VOICEGW_HOST=0.0.0.0 \
    VOICEGW_PORT=8080 \
    VOICEGW_DATA_DIR=/data \
    VOICEGW_LOG_FORMAT=json
RUN groupadd --system --gid 10001 voicegw \
 && useradd --system --uid 10001 --gid voicegw --home-dir /data --shell /usr/sbin/nologin voicegw \
 && mkdir -p /data && chown voicegw:voicegw /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER voicegw
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('VOICEGW_PORT', '8080'), timeout=2)"]
CMD ["voicegw", "serve"]
