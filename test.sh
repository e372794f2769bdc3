#!/usr/bin/env bash
# The README's test command: every test of the workspace, real processes
# included. The NATS tests run a real nats-server (Debian's package); it is
# installed here when it is missing, never skipped.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v nats-server >/dev/null 2>&1; then
    echo "test.sh: nats-server is missing: installing Debian's package" >&2
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y nats-server
fi
cargo test --workspace "$@"
