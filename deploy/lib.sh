# Shared by the install scripts: sourced, not run.

say() { printf '%s: %s\n' "$(basename "$0" .sh)" "$*"; }

apt_updated=false
# Installs Debian packages, running `apt-get update` once first (sudo only when not root).
apt_install() {
    if ! command -v apt-get >/dev/null; then
        say "cannot install $* (no apt-get); install it and run again"; exit 1
    fi
    local sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
    if ! $apt_updated; then $sudo apt-get update -qq; apt_updated=true; fi
    say "installing $* (apt)"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# Node.js >= 20.10 (its WebSocket client, behind --experimental-websocket) with npm.
node_ok() {
    command -v node >/dev/null && command -v npm >/dev/null || return 1
    node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=10)?0:1)'
}

ensure_node() {
    node_ok && return 0
    command -v node >/dev/null || apt_install nodejs
    command -v npm >/dev/null || apt_install npm
    node_ok || { say "Node.js >= 20.10 with npm is needed; found node $(node --version 2>/dev/null || echo none)"; exit 1; }
}
