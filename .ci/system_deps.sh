#!/usr/bin/env bash
# Installs the Debian packages listed in .ci/system-packages.txt that are missing.
# As root it uses apt-get; otherwise it only says what is missing (tests that need them then fail
# or skip with a reason), so a developer without root can still run the rest.
set -euo pipefail
cd "$(dirname "$0")"
mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' system-packages.txt | grep -v '^$' || true)
missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: not root; missing Debian packages: ${missing[*]} (apt-get install them)" >&2
    exit 0
fi
echo "system-deps: installing ${missing[*]}"
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
