#!/usr/bin/env bash
# Installs Debian's Chromium (for the dashboard's browser test) when it is missing. Needs root.
set -euo pipefail
command -v chromium >/dev/null && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends chromium \
  || { apt-get update && apt-get install -y --no-install-recommends chromium; }
