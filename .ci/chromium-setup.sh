#!/usr/bin/env bash
# Install Debian's Chromium for the eval report's headless render test (tests/evals/), before pytest in CI.
# Idempotent: does nothing when /usr/bin/chromium is already there. Needs root (CI runs as root) or sudo.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    echo "chromium-setup: $(chromium --version 2>/dev/null || echo chromium) is installed"
    exit 0
fi
sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo_cmd apt-get update -qq
$sudo_cmd apt-get install -y -qq --no-install-recommends chromium
echo "chromium-setup: $(chromium --version)"
