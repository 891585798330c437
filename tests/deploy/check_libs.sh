#!/bin/sh
# Checks, without Docker, that the runtime stage of a Dockerfile installs
# every shared library a tokenwatch binary needs.
#
# Usage: sh tests/deploy/check_libs.sh [BINARY [DOCKERFILE]]
#        (defaults: build/tokenwatch docker/Dockerfile)
#
# Run it on Debian 12 with the -dev packages installed (the build machine):
# the binary's libraries are mapped to the Debian packages that own them here
# (dpkg -S), and the dependency closure comes from this machine's apt cache,
# i.e. from the same release as the debian:12-slim runtime stage.
#
# A library is satisfied when its package is
#   - named on an `apt-get install` line of the runtime (last) stage, or
#   - pulled in by one of those packages: the Depends/Pre-Depends closure
#     (apt-cache depends --recurse, no recommends; only the first of
#     alternatives `a | b`, which is what apt installs; every provider of a
#     virtual package), or
#   - in every debian:12-slim image: of Priority: required, or a dependency
#     of those or of apt (the image is debootstrap's minbase variant:
#     Priority: required packages plus apt, with their dependencies).
# The runtime stage must also install no -dev package and no build tools.
#
# Exit: 0 all satisfied, 1 something is missing or wrong, 2 usage error.
set -eu

binary="${1:-build/tokenwatch}"
dockerfile="${2:-docker/Dockerfile}"

fail() {
    echo "check_libs: $*" >&2
    exit 2
}

[ -x "$binary" ] || fail "no executable $binary (run make first)"
[ -f "$dockerfile" ] || fail "no Dockerfile $dockerfile"
for tool in ldd dpkg dpkg-query apt-cache awk; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool not found: run this on Debian 12"
done
if ! grep -qs '^VERSION_ID="12"' /etc/os-release; then
    echo "check_libs: warning: not Debian 12; packages and dependencies may differ from debian:12-slim" >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---------------------------------------------------------------------------
# 1. The runtime stage: its base image and the packages it installs.
#    Continuation lines are joined and comments dropped first.
awk '
    /^[[:space:]]*#/ { next }
    {
        line = $0
        if (sub(/\\[[:space:]]*$/, "", line)) { buf = buf line " "; next }
        print buf line
        buf = ""
    }
    END { if (buf != "") print buf }
' "$dockerfile" >"$tmp/joined"

awk '
    toupper($1) == "FROM" { n++; base = $2; for (i = 2; i <= NF; i++) if ($i !~ /^--/) { base = $i; break } }
    { stage[NR] = n }
    END { print n, base }
' "$tmp/joined" >"$tmp/stages"
read -r stage_count runtime_base <"$tmp/stages"
[ "${stage_count:-0}" -ge 1 ] || fail "$dockerfile has no FROM"

# The instructions of the last stage (the image `docker build` produces).
awk -v last="$stage_count" 'toupper($1) == "FROM" { n++ } n == last' "$tmp/joined" >"$tmp/runtime"

# Package names after `apt-get install` / `apt install` on RUN lines, up to
# the end of that shell command; options skipped, version pins (pkg=1.0)
# and architecture qualifiers (pkg:amd64) removed.
awk '
    function emit(p) { sub(/=.*/, "", p); sub(/:[a-z0-9]+$/, "", p); print p }
    toupper($1) != "RUN" { next }
    {
        inst = 0; prev = ""; skip = 0
        for (i = 2; i <= NF; i++) {
            w = $i
            if (skip) { skip = 0; continue }
            if (w == "&&" || w == "||" || w == "|" || w == ";") { inst = 0; prev = ""; continue }
            ends = 0
            if (w ~ /;$/) { sub(/;$/, "", w); ends = 1 }
            if (inst && w !~ /^-/) emit(w)
            else if (!inst && w == "install" && (prev == "apt-get" || prev == "apt")) inst = 1
            if (w == "-o" || w == "-t" || w == "-c") skip = 1
            if (w !~ /^-/) prev = w
            if (ends) { inst = 0; prev = "" }
        }
    }
' "$tmp/runtime" | sort -u >"$tmp/named"

echo "runtime stage: FROM $runtime_base (stage $stage_count of $dockerfile)"
if [ ! -s "$tmp/named" ]; then
    echo "FAIL: the runtime stage has no apt-get install line"
    exit 1
fi
echo "runtime stage installs: $(tr '\n' ' ' <"$tmp/named")"

# Every problem is printed where it is found and listed again at the end.
: >"$tmp/problems"
problem() {
    echo "$*" >>"$tmp/problems"
}

case "$runtime_base" in
    debian:12-slim | debian:12-slim@* | debian:bookworm-slim | debian:bookworm-slim@*) ;;
    *)
        echo "FAIL: the runtime base is $runtime_base, not debian:12-slim"
        problem "runtime base $runtime_base is not debian:12-slim ('Priority: required' packages are only known to be in debian:12-slim)"
        ;;
esac

while read -r pkg; do
    case "$pkg" in
        *-dev | *-dev-bin | gcc | gcc-* | g++ | cpp | make | pkg-config | pkgconf | build-essential | binutils)
            echo "FAIL: the runtime stage installs $pkg (a development package or build tool)"
            problem "runtime stage installs $pkg: a development package or build tool"
            ;;
    esac
    if ! apt-cache show "$pkg" >/dev/null 2>&1; then
        echo "FAIL: the runtime stage installs $pkg, which this machine's apt cache does not know (a typo? or run apt-get update)"
        problem "runtime stage installs $pkg: unknown to apt-cache"
    fi
done <"$tmp/named"

# ---------------------------------------------------------------------------
# 2. Dependency closures, each package with the chain that pulls it in
#    ("libcurl4 > libgssapi-krb5-2 > libkrb5-3"): of the named packages, and
#    of what every debian:12-slim image holds (debootstrap's minbase variant:
#    the Priority: required packages and apt).

# closure FILE_OF_ROOTS OUT: "package<TAB>chain" lines.
closure() {
    # shellcheck disable=SC2046 # one word per package name, on purpose
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances $(cat "$1") >"$2.depends" 2>"$2.err" || true
    if [ -s "$2.err" ]; then
        echo "apt-cache depends said:"
        sed 's/^/  /' "$2.err"
    fi
    awk -v roots="$(tr '\n' ' ' <"$1")" '
        function bare(p) { sub(/:[a-z0-9]+$/, "", p); return p }
        /^[^ ]/ { cur = bare($0); prev_or = 0; last_target = ""; next }
        /^ *\|?[A-Za-z]+: / {
            # "Depends: x"; " |Depends: x" means "x, or the next line".
            or_next = ($0 ~ /^ *\|/)
            target = $0
            sub(/^ *\|?[A-Za-z]+: /, "", target)
            target = bare(target)
            first = !prev_or
            prev_or = or_next
            last_target = ""
            if (first) {
                edges[cur] = edges[cur] " " target
                if (target ~ /^</) last_target = target
            }
            next
        }
        /^ +[^ ]/ {
            # a provider of the <virtual> package on the line above
            if (last_target != "") edges[last_target] = edges[last_target] " " bare($1)
            next
        }
        END {
            n = split(roots, queue, " ")
            for (i = 1; i <= n; i++) chain[queue[i]] = queue[i]
            for (i = 1; i <= n; i++) {
                p = queue[i]
                m = split(edges[p], next_, " ")
                for (j = 1; j <= m; j++) {
                    q = next_[j]
                    if (q in chain) continue
                    chain[q] = chain[p] " > " q
                    queue[++n] = q
                }
            }
            for (p in chain) if (p !~ /^</) print p "\t" chain[p]
        }
    ' "$2.depends" | sort >"$2"
}

closure "$tmp/named" "$tmp/closure"
echo "dependency closure of the runtime stage's packages: $(wc -l <"$tmp/closure") packages"

apt-cache dumpavail 2>/dev/null |
    awk '/^Package:/ { p = $2 } /^Priority: required$/ { print p }' | sort -u >"$tmp/required"
if [ ! -s "$tmp/required" ]; then
    echo "FAIL: apt-cache dumpavail lists no Priority: required package (run apt-get update?)"
    problem "no Priority: required packages in this machine's apt cache"
fi
echo apt >>"$tmp/required"
closure "$tmp/required" "$tmp/base"
echo "in every debian:12-slim image (Priority: required, apt, their dependencies): $(wc -l <"$tmp/base") packages"

# ---------------------------------------------------------------------------
# 3. Every library the binary loads: its package, and why it is there.
owner() {
    # The package owning a library path. Debian 12 has a merged /usr, but
    # dpkg records each file under the path its package shipped it at
    # (libc6: /lib/x86_64-linux-gnu/libc.so.6; libssl3:
    # /usr/lib/x86_64-linux-gnu/libcrypto.so.3), so try the path as ldd
    # gives it, its real path, and both with and without /usr.
    path="$1"
    real=$(readlink -f "$path" 2>/dev/null || echo "$path")
    dir=$(dirname "$real")
    base=$(basename "$path")
    for candidate in "$path" "/usr$path" "${path#/usr}" "$real" "${real#/usr}" \
        "$dir/$base" "${dir#/usr}/$base"; do
        case "$candidate" in /*) ;; *) continue ;; esac
        found=$(dpkg -S "$candidate" 2>/dev/null |
            awk -v f="$candidate" -F': ' '$0 !~ /^diversion/ && $2 == f { split($1, a, ", "); print a[1]; exit }')
        if [ -n "$found" ]; then
            echo "${found%%:*}"
            return 0
        fi
    done
    return 1
}

ldd "$binary" >"$tmp/ldd" 2>&1 || fail "ldd $binary failed: $(cat "$tmp/ldd")"
awk '
    /not found/ { print "NOTFOUND", $1; next }
    $2 == "=>" && $3 ~ /^\// { print $1, $3; next }
    $1 ~ /^\// { n = split($1, a, "/"); print a[n], $1 }
' "$tmp/ldd" >"$tmp/libs"
[ -s "$tmp/libs" ] || fail "ldd lists no libraries for $binary (static binary?): $(cat "$tmp/ldd")"

echo
printf '%-28s %-22s %s\n' LIBRARY PACKAGE "WHY IT IS IN THE IMAGE"
count=0
while read -r lib path; do
    count=$((count + 1))
    if [ "$lib" = NOTFOUND ]; then
        printf '%-28s %-22s %s\n' "$path" "?" "MISSING: ldd cannot find it on this machine"
        problem "$path: not found by ldd"
        continue
    fi
    if ! pkg=$(owner "$path"); then
        printf '%-28s %-22s %s\n' "$lib" "?" "MISSING: no Debian package owns $path"
        problem "$lib ($path): no Debian package owns it"
        continue
    fi
    if grep -qx "$pkg" "$tmp/named"; then
        why="named in the runtime stage's apt-get install"
    elif chain=$(awk -F'\t' -v p="$pkg" '$1 == p { print $2; found = 1 } END { exit !found }' "$tmp/closure"); then
        why="pulled in: $chain"
    elif grep -qx "$pkg" "$tmp/required"; then
        why="in debian:12-slim: Priority: required"
    elif chain=$(awk -F'\t' -v p="$pkg" '$1 == p { print $2; found = 1 } END { exit !found }' "$tmp/base"); then
        why="in debian:12-slim: $chain"
    else
        why="MISSING: not installed by the runtime stage, not a dependency of what it installs, not in debian:12-slim"
        problem "$lib: package $pkg is missing from the runtime stage (add it to its apt-get install)"
    fi
    printf '%-28s %-22s %s\n' "$lib" "$pkg" "$why"
done <"$tmp/libs"

echo
if [ -s "$tmp/problems" ]; then
    echo "check_libs: FAIL: $(wc -l <"$tmp/problems") problem(s) for $binary against $dockerfile:"
    sed 's/^/  - /' "$tmp/problems"
    exit 1
fi
echo "check_libs: OK: all $count libraries of $binary are provided by the runtime stage of $dockerfile"
