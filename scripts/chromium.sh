#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (Playwright drives it; a browser is never
# downloaded: `playwright install` fails here and is never run).
#
#   scripts/chromium.sh     -> prints /usr/bin/chromium
#
# Idempotent: a warm run only checks. Exit status: 0 ready; 3 Chromium is missing and cannot be
# installed here (not root, no apt-get, apt-get failed); 1 anything else.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
SCRIPT=chromium.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ! -x $CHROMIUM ]]; then
	[[ $EUID -eq 0 ]] || die 3 "$CHROMIUM is missing and installing it needs root"
	command -v apt-get >/dev/null || die 3 "$CHROMIUM is missing and there is no apt-get"
	export DEBIAN_FRONTEND=noninteractive
	if ! quietly apt-get install -y --no-install-recommends chromium; then
		quietly apt-get update || die 3 "apt-get update failed"
		quietly apt-get install -y --no-install-recommends chromium ||
			die 3 "apt-get install chromium failed"
	fi
fi
"$CHROMIUM" --version >/dev/null 2>&1 || die 1 "$CHROMIUM does not run"
echo "$CHROMIUM"
