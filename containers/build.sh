#!/usr/bin/env bash
# Build the DeepTalk service image of a packaged model: base image (cached) -> bento -> `bentoml containerize`.
#
#   containers/build.sh [MODEL_TAG]        # `make container`; MODEL_TAG defaults to deeptalk:latest
#
# The model comes from the BentoML model store ($BENTOML_HOME, default ~/bentoml) where the package step put it.
# Prints the image name on its last line. Environment (all optional):
#   IMAGE              image name (default deeptalk:<bento version>, then also tagged deeptalk:latest)
#   CONTAINER_BACKEND  podman (default where installed or no Docker daemon answers) | docker
#   ROOT_IMAGE         the base's base (docker: debian:bookworm-slim; podman: Debian bookworm bootstrapped
#                      from $DEBIAN_MIRROR, the machine's apt mirror, with debootstrap: no registry needed)
#   TORCH_WHEELHOUSE   a folder holding the CPU torch wheel the bentofile pins (default: pip's find-links),
#                      mounted while building (podman); else PyTorch's CPU index (containers/uv-cpu-index.toml)
#   PY                 the project's python (default .venv/bin/python)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
MODEL=${1:-deeptalk:latest}
PY=${PY:-.venv/bin/python}
BENTOML=$(dirname "$PY")/bentoml
BASE_IMAGE=localhost/deeptalk-base:bookworm  # bentofile.yaml docker.base_image
ROOTFS_IMAGE=localhost/deeptalk-rootfs:bookworm
SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
log() { echo "[container] $*" >&2; }

# --- container tool -------------------------------------------------------------------------------------------
if [ -z "${CONTAINER_BACKEND:-}" ]; then
  if command -v podman >/dev/null; then CONTAINER_BACKEND=podman
  elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then CONTAINER_BACKEND=docker
  else CONTAINER_BACKEND=podman; fi
fi
if [ "$CONTAINER_BACKEND" = podman ]; then
  missing=""
  for p in podman runc debootstrap; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    log "installing Debian packages:$missing"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  fi
  # runc with explicit ulimits (crun cannot set rlimits on these hosts); /etc/containers stays untouched
  export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/containers/containers.conf}
fi
CT=$CONTAINER_BACKEND
image_exists() { $CT image inspect "$1" >/dev/null 2>&1; }

# --- root image: Debian bookworm, from a registry or bootstrapped from the apt mirror ------------------------------
if [ -z "${ROOT_IMAGE:-}" ]; then
  if [ "$CT" = docker ]; then
    ROOT_IMAGE=docker.io/library/debian:bookworm-slim
  else
    ROOT_IMAGE=$ROOTFS_IMAGE
    if ! image_exists "$ROOT_IMAGE"; then
      mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
      mirror=${mirror:-http://deb.debian.org/debian}
      rootfs=$(mktemp -d /var/tmp/deeptalk-rootfs.XXXXXX)
      trap '$SUDO rm -rf "$rootfs"' EXIT
      log "bootstrapping Debian bookworm (minbase) from $mirror"
      $SUDO debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
        || { tail -20 "$rootfs.log" >&2; exit 1; }
      $SUDO rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs.log"
      $SUDO tar -C "$rootfs" -c . | $CT import - "$ROOT_IMAGE" >/dev/null
      $SUDO rm -rf "$rootfs"; trap - EXIT
    fi
  fi
fi

# --- base image: Python 3.11 + uv + CA certificates, rebuilt only when its recipe changes ------------------------
TORCH_PIN=$(grep -oE '^ *- *torch==[^ "#]+' bentofile.yaml | head -1 | sed 's/.*- *//')
TORCH_VERSION=${TORCH_PIN#torch==}
WHEELHOUSE=${TORCH_WHEELHOUSE:-${PIP_FIND_LINKS:-$("$PY" -m pip config get global.find-links 2>/dev/null || true)}}
WHEELHOUSE=${WHEELHOUSE%% *}
VOLUME_OPT=()
if [ "${TORCH_VERSION%+cpu}" = "$TORCH_VERSION" ]; then
  UV_TOML=containers/uv-pypi.toml
  log "torch $TORCH_VERSION from PyPI (not a +cpu pin: the CUDA build)"
elif [ "$CT" = podman ] && [ -n "$WHEELHOUSE" ] && ls "$WHEELHOUSE"/torch-"${TORCH_VERSION}"-cp311-*.whl >/dev/null 2>&1; then
  UV_TOML=containers/uv-wheelhouse.toml
  VOLUME_OPT=(--opt "volume=$(cd "$WHEELHOUSE" && pwd):/wheels:ro")
  log "torch $TORCH_VERSION from the wheelhouse $WHEELHOUSE"
else
  UV_TOML=containers/uv-cpu-index.toml
  log "torch $TORCH_VERSION from PyTorch's CPU index"
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir "$ctx/ca"
cp containers/base.Containerfile "$ctx/Containerfile"
cp "$UV_TOML" "$ctx/uv.toml"
for crt in /usr/local/share/ca-certificates/*.crt; do [ -f "$crt" ] && cp "$crt" "$ctx/ca/"; done
recipe=$( (cd "$ctx" && find . -type f | LC_ALL=C sort | xargs sha256sum; $CT image inspect --format '{{.Id}}' "$ROOT_IMAGE" 2>/dev/null || echo "$ROOT_IMAGE") | sha256sum | cut -c1-16)
if [ "$($CT image inspect --format '{{index .Config.Labels "deeptalk.recipe"}}' "$BASE_IMAGE" 2>/dev/null || true)" != "$recipe" ]; then
  log "building $BASE_IMAGE from $ROOT_IMAGE"
  $CT build -q --build-arg "ROOT_IMAGE=$ROOT_IMAGE" --label "deeptalk.recipe=$recipe" -t "$BASE_IMAGE" "$ctx" >/dev/null
fi

# --- bento of the packaged model, then the image ----------------------------------------------------------------
"$PY" - "$MODEL" <<'PY' || exit 1
import sys, bentoml
try:
    bentoml.models.get(sys.argv[1])
except bentoml.exceptions.NotFound:
    sys.exit(f"no packaged model {sys.argv[1]} in the BentoML model store ({bentoml.__name__} home: "
             "$BENTOML_HOME or ~/bentoml): run `make run` (its package step stores it) first")
PY
BENTO=$(DEEPTALK_MODEL_TAG=$MODEL "$BENTOML" build -f bentofile.yaml -o tag . | grep -oE '__tag__:[^ ]+' | cut -d: -f2-)
TAG_LATEST=$([ -z "${IMAGE:-}" ] && echo yes || true)
IMAGE=${IMAGE:-deeptalk:${BENTO#*:}}
# podman writes OCI images unless told otherwise, and OCI has no HEALTHCHECK: Docker format keeps it
[ "$CT" = podman ] && FORMAT_OPT=(--opt format=docker) || FORMAT_OPT=()
log "containerizing bento $BENTO as $IMAGE ($CT)"
# from /: BentoML 1.4.40 refuses the bento's dockerfile_template unless its temporary build context lies under
# the working directory (bentoml/BentoML#5566, open)
BENTOML_ABS=$(cd "$(dirname "$BENTOML")" && pwd)/bentoml
(cd / && "$BENTOML_ABS" containerize "$BENTO" --backend "$CT" --image-tag "$IMAGE" "${FORMAT_OPT[@]}" \
  "${VOLUME_OPT[@]}") >&2
[ -z "$TAG_LATEST" ] || $CT tag "$IMAGE" deeptalk:latest
echo "$IMAGE"
