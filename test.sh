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
# The durability tests (tools/tests/cli/sync.rs) count the sync calls of
# real `tape write` processes with strace: installed when missing, never
# skipped.
if ! command -v strace >/dev/null 2>&1; then
    echo "test.sh: strace is missing: installing Debian's package" >&2
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y strace
fi
# tape.Vars (the Python package's optional extra) is tested against the real
# server too: nats-py is installed when missing, never skipped. Checked from
# / so that the repository's nats/ folder is not taken for it.
if ! (cd / && python3 -c 'import nats.js' >/dev/null 2>&1); then
    echo "test.sh: nats-py is missing: installing it" >&2
    python3 -m pip install nats-py || python3 -m pip install --break-system-packages nats-py
fi
cargo test --workspace "$@"
