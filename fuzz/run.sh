#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60). cargo-fuzz needs nightly features; the one
# toolchain here is stable, so RUSTC_BOOTSTRAP=1 unlocks them. Crashes land in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${SECONDS_EACH:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in httpsig_header ssh_keys manta_path uforge_document import_archive import_descriptor; do
    echo "==> $t (${SECONDS_EACH}s)"
    cargo fuzz run "$t" -- -max_total_time="$SECONDS_EACH" -max_len=4096
done
