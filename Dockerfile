# syntax=docker/dockerfile:1
#
# finrtc server image: multi-stage, non-root, python:3.11-slim.
#
#   docker build -t finrtc .
#   docker run --network host \
#     -v "$PWD/finrtc.yaml:/etc/finrtc/finrtc.yaml:ro" -v finrtc-data:/var/lib/finrtc \
#     -e FINRTC_API_SECRET finrtc
#
# Media (ICE/UDP) sockets use ephemeral ports picked per connection, so run with host
# networking (and media.bind_addresses set to the host's address). Bridge networking needs a
# fixed UDP port range to publish, which finrtc does not configure yet.
# The PyAV, aiortc, OpenCV and pocketsphinx wheels bundle their native libraries (FFmpeg, libvpx,
# libopus, libsrtp, ...), so the runtime stage needs no extra Debian packages.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# Optional features baked in: s3 (archive to S3 Object Lock), speech (script compliance),
# faces (face presence hook), cluster (Redis room directory). `--build-arg FINRTC_EXTRAS=s3` makes
# a smaller image; add vosk for Mandarin (Kaldi) models in a compliance model_dir.
ARG FINRTC_EXTRAS=s3,speech,faces,cluster
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# Build the project wheel, then install it with the server extras into a venv that the runtime
# stage copies whole. Binary wheels only: a dependency that would need a compiler fails here,
# loudly, instead of bloating the image with build tools. With the identity extra, the voiceprint
# weights come from resemblyzer's wheel, installed --no-deps so torch stays out.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/finrtc \
    && /opt/finrtc/bin/pip install --no-cache-dir --only-binary=:all: \
        "$(ls /wheels/finrtc-*.whl)[${FINRTC_EXTRAS}]" \
    && case ",${FINRTC_EXTRAS}," in *,identity,*) \
        /opt/finrtc/bin/pip install --no-cache-dir --no-deps resemblyzer==0.1.4 ;; esac

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="finrtc" \
      org.opencontainers.image.description="Compliance-first WebRTC media server for regulated financial video calls" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 finrtc \
    && useradd --system --uid 10001 --gid finrtc --home-dir /var/lib/finrtc \
        --no-create-home --shell /usr/sbin/nologin finrtc \
    && mkdir -p /etc/finrtc /var/lib/finrtc \
    && chown finrtc:finrtc /var/lib/finrtc \
    && chmod 0750 /var/lib/finrtc
COPY --from=build /opt/finrtc /opt/finrtc
ENV PATH=/opt/finrtc/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FINRTC_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz
# /etc/finrtc: the YAML config (mount read-only). /var/lib/finrtc: keys, archive, state.
VOLUME ["/etc/finrtc", "/var/lib/finrtc"]
USER 10001:10001
WORKDIR /var/lib/finrtc
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['FINRTC_HEALTHCHECK_URL'], timeout=4).status == 200 else 1)"]
# SIGTERM drains: /readyz turns false, recordings are sealed, exit within server.drain_timeout_s
# (give `docker stop --time` a few seconds more than that).
STOPSIGNAL SIGTERM
ENTRYPOINT ["finrtc", "serve", "--config", "/etc/finrtc/finrtc.yaml", "--data-dir", "/var/lib/finrtc"]
