#!/usr/bin/env bash
# Everything an offline image build needs, made where the network is: a Debian base image with Python
# (no registry needed: mmdebstrap from the host's apt sources), a wheelhouse of every dependency built with
# that Python's version, and (--test-services) PostgreSQL, Redis and HAProxy images for the compose test.
# Run from the repository's root, as root (rootful podman). `.ci/run` runs it; so can an operator who
# builds images for an air-gapped site.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_IMAGE=${BASE_IMAGE:-localhost/kimi-base:bookworm}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# rootful podman on machines without CAP_SYS_RESOURCE and with cgroups in hybrid mode (deploy/README).
if [ -z "${CONTAINERS_CONF:-}" ]; then
    export CONTAINERS_CONF=$work/containers.conf
    n=$(ulimit -Hn)
    printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=32768:32768"]\n[engine]\nruntime = "runc"\n' \
        "$n" "$n" > "$CONTAINERS_CONF"
fi

if ! podman image exists "$BASE_IMAGE"; then
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates,libgomp1 \
        bookworm "$work/base.tar"
    podman import --change 'CMD ["/bin/bash"]' "$work/base.tar" "$BASE_IMAGE"
fi

# The wheels, for the base image's Python (bookworm's 3.11): markers differ between patch releases.
python=$(podman run --rm "$BASE_IMAGE" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
host=/usr/bin/python3
if [ "$($host -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')" != "$python" ]; then
    echo "the wheelhouse needs Python $python on this machine ($host is another)" >&2
    exit 1
fi
$host -m venv "$work/venv"
CMAKE_ARGS="-DGGML_NATIVE=OFF" "$work/venv/bin/pip" wheel -q -w wheelhouse . setuptools wheel opencv-python-headless
rm -f wheelhouse/kimi_gateway-*.whl  # the image builds the package from its source

if [ "${1:-}" = "--test-services" ]; then
    for service in postgres redis haproxy; do
        podman image exists "localhost/kg-test-$service" || podman build -q --build-arg BASE="$BASE_IMAGE" \
            -t "localhost/kg-test-$service" -f "tests/containers/$service.Containerfile" tests/containers
    done
fi
