#!/usr/bin/env bash
# Installs Debian's Chromium (for the dashboard's browser test) when it is missing.
set -euo pipefail
command -v chromium >/dev/null && exit 0
export DEBIAN_FRONTEND=noninteractive
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
sudo_if_needed apt-get install -y --no-install-recommends chromium \
  || { sudo_if_needed apt-get update && sudo_if_needed apt-get install -y --no-install-recommends chromium; }
