#!/usr/bin/env bash
# Installs what the browser end-to-end tests (integration-tests/browser) need, and nothing that is
# already there: Debian's Chromium at /usr/bin/chromium (Playwright's own browser download is not
# used), Node.js >= 20 with npm, and the test's npm packages (`npm ci`, when node_modules is missing
# or does not match package-lock.json). Idempotent; run as root or with sudo available.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
test_dir="$here/../integration-tests/browser"

if [[ ! -x /usr/bin/chromium ]]; then
    apt_install chromium
fi
[[ -x /usr/bin/chromium ]] || { say "/usr/bin/chromium is still missing after installing chromium"; exit 1; }

ensure_node

# node_modules is stale unless every package in package-lock.json is installed at its locked version
# (npm ci also writes node_modules/.package-lock.json; a missing one means a partial install).
deps_current() {
    (cd "$test_dir" && [[ -f node_modules/.package-lock.json ]] && node -e '
        const fs = require("fs");
        const lock = JSON.parse(fs.readFileSync("package-lock.json", "utf8"));
        for (const [path, meta] of Object.entries(lock.packages || {})) {
            if (!path) continue;
            let installed;
            try { installed = JSON.parse(fs.readFileSync(path + "/package.json", "utf8")).version; } catch { process.exit(1); }
            if (installed !== meta.version) process.exit(1);
        }
    ')
}
if ! deps_current; then
    say "npm ci in integration-tests/browser"
    (cd "$test_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
