#!/bin/bash
# Build the Complement image of Myelin from this checkout.
#
# Usage: test/complement/build.sh [IMAGE_TAG]      (default complement-myelin:latest)
#   MYELIN_BIN=/path/to/myelin  use an already built static binary instead of building one
#
# Needs: docker, Go with cgo (SQLite), a static libc (Debian: libc6-dev), busybox-static.
set -euo pipefail
TAG=${1:-complement-myelin:latest}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CTX=$(mktemp -d /tmp/complement-myelin-ctx.XXXXXX)
trap 'rm -rf "$CTX"' EXIT
R="$CTX/rootfs"
mkdir -p "$R/bin" "$R/usr/local/bin" "$R/etc"

if [ -n "${MYELIN_BIN:-}" ]; then
  cp -L "$MYELIN_BIN" "$R/usr/local/bin/myelin"
else
  # Fully static: netgo/osusergo keep the resolver and user lookups in Go (the resolver
  # reads /etc/hosts first, which is where host.docker.internal lives).
  (cd "$REPO" && CGO_ENABLED=1 go build -trimpath \
    -tags 'osusergo netgo sqlite_omit_load_extension' \
    -ldflags '-s -w -extldflags -static' -o "$R/usr/local/bin/myelin" ./cmd/myelin)
fi
(cd "$REPO" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' \
  -o "$R/usr/local/bin/complement-certgen" ./test/complement/certgen)
cp /bin/busybox "$R/bin/busybox"
cp "$HERE/complement-entrypoint.sh" "$R/complement-entrypoint.sh"
printf 'root:x:0:0:root:/data:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$R/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$R/etc/group"
printf 'hosts: files dns\n' > "$R/etc/nsswitch.conf"
cp "$HERE/Dockerfile" "$CTX/Dockerfile"
docker build -t "$TAG" "$CTX"
