#!/usr/bin/env bash
# Jaeger all-in-one (an OTLP receiver with a query API), for the tracing integration test.
#
#   deploy/jaeger.sh install   build it once from the Go module proxy; prints the binary's path
#   deploy/jaeger.sh path      print the binary's path (exits 1 when it is not installed)
#
# Built with `go install` into a cache outside the clone (TANDEM_TOOLS, ~/.cache/tandem/tools by
# default), so a fresh clone or `git clean` does not pay the build again. The build is large
# (several minutes on two cores): it runs once, later calls only check the binary is there.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

version="v1.75.0"
tools="${TANDEM_TOOLS:-$HOME/.cache/tandem/tools}"
bin_dir="$tools/jaeger-$version"
binary="$bin_dir/jaeger"

case "${1:-}" in
    path)
        [[ -x $binary ]] || { say "not installed: run deploy/jaeger.sh install"; exit 1; }
        echo "$binary" ;;
    install)
        if [[ ! -x $binary ]]; then
            command -v go >/dev/null || apt_install golang-go
            say "building jaeger $version (go install, once; several minutes)"
            mkdir -p "$bin_dir/module"
            # `go install pkg@version` refuses a module whose go.mod has replace directives, so the
            # binary is built as a tool of a throwaway module. v1.75.0 ships the all-in-one as
            # cmd/jaeger (the v2 binary).
            (
                cd "$bin_dir/module"
                export GOBIN="$bin_dir" GOFLAGS=-mod=mod GOMODCACHE="${GOMODCACHE:-$tools/go-mod}"
                [[ -f go.mod ]] || go mod init tandem-jaeger-tool >/dev/null 2>&1
                go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$version"
                go install github.com/jaegertracing/jaeger/cmd/jaeger
            )
        fi
        echo "$binary" ;;
    *)
        sed -n '3,5p' "$0"; exit 64 ;;
esac
