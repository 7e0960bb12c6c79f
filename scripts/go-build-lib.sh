# Shared by scripts/build-control-plane.sh and scripts/build-workload-controllers.sh (sourced,
# not run): the Go toolchain check, the cache layout and building one pinned binary with
# progress in the log.
#
#   GOBUILD_NAME=build-foo; source "$HERE/go-build-lib.sh"
#   gobuild_one NAME VERSION PACKAGE MODULE_DIR LDFLAGS   builds $BIN/NAME-VERSION

CACHE="${GPUFAIR_CACHE:-$HOME/.cache/gpufair}"
BIN="$CACHE/bin"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

log() { printf '[%s %s] %s\n' "$GOBUILD_NAME" "$(date +%H:%M:%S)" "$*" >&2; }

if [[ ! -x "$GO" ]] && ! command -v "$GO" >/dev/null 2>&1; then
    echo "$GOBUILD_NAME: no Go toolchain found; install Go 1.26+ or set GO=/path/to/go" >&2
    exit 1
fi
# The modules say `go 1.26.0`; an older local Go would try to download a toolchain instead.
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export CGO_ENABLED=0

gobuild_one() { # name version package module-dir ldflags
    local name="$1" version="$2" pkg="$3" dir="$4" flags="$5"
    local out="$BIN/$name-$version" tmp t0 ticker
    log "building $name $version ($pkg) ..."
    t0=$SECONDS
    # Print elapsed time every minute while the compiler works, so CI logs show progress.
    (while sleep 60; do log "  $name: $((SECONDS - t0))s elapsed"; done) &
    ticker=$!
    tmp="$out.tmp.$$"
    if ! (cd "$dir" && "$GO" build -buildvcs=false -trimpath -ldflags="$flags" -o "$tmp" "$pkg"); then
        kill "$ticker" 2>/dev/null || true
        rm -f "$tmp"
        echo "$GOBUILD_NAME: building $name $version failed (see the Go errors above)" >&2
        exit 1
    fi
    kill "$ticker" 2>/dev/null || true
    wait "$ticker" 2>/dev/null || true
    mv -f "$tmp" "$out"
    log "built $name in $((SECONDS - t0))s -> $out ($(du -h "$out" | cut -f1))"
}
