#!/usr/bin/env bash
# Fetches, on this (Debian 12, networked) machine, the libraries Tessera's build needs that a
# lent GPU machine's image lacks (it has python3 with a CUDA torch, nvcc, cmake and ninja, but
# no Abseil, yaml-cpp or Catch2, no package manager and no network), so that they can travel
# with the working tree (the device tool's `carry`) and scripts/device_check.sh can build there.
#
#   .deps/debs/   the Debian binary packages (apt-get download): the -dev packages, their
#                 runtime libraries and whatever else they depend on, minus the base system
#                 (libc, libstdc++, libgcc, ...) that every Linux with a compiler has
#   .deps/root/   those packages unpacked with dpkg -x (nothing is installed system-wide):
#                 use CMAKE_PREFIX_PATH=.deps/root/usr and LD_LIBRARY_PATH=.deps/root/usr/lib/<arch>
#   .deps/src/    the Debian source packages of the compiled libraries the build links (abseil,
#                 yaml-cpp, pcre2): the upstream tarballs (*.orig.tar.*), and Debian's .dsc and
#                 patches where the mirror still has them
#   .deps/wheels/ the benchmark's peer for a GPU machine whose python lacks it: transformers and
#                 the three packages of its own that it cannot import without (tokenizers,
#                 huggingface_hub, safetensors), as wheels for CPython 3.12 on manylinux x86-64,
#                 at the versions of this project's virtualenv; their plain dependencies (numpy,
#                 pyyaml, regex, tqdm, httpx, ...) are expected there (18 MB, 2026-12)
#   .deps/MANIFEST.txt  what is there: package, version, file, sha256, sizes
#
# Why the sources: Debian 12's Abseil, yaml-cpp, PCRE2 and pkgconf need, where they run, the
# symbol versions GLIBC_2.34 and GLIBCXX_3.4.29 at most (objdump -T of every .so, 2026-11: glibc
# >= 2.34 and the libstdc++ of GCC >= 11, i.e. Ubuntu 22.04 and later, RHEL 9). When the GPU
# machine's are older, device_check.sh builds Abseil, yaml-cpp and PCRE2 from .deps/src with that
# machine's own compiler instead (151 s on this 2-core machine; it then needs that machine's own
# pkg-config). The source packages come through apt-get source --download-only, with deb-src
# entries in a private apt configuration under $TMPDIR (the system's sources and state are not
# touched).
#
# Packages: libabsl-dev libyaml-cpp-dev catch2, plus what the CMake files ask for (Protobuf:
# libprotobuf-dev protobuf-compiler; PCRE2: libpcre2-dev; pkg-config: pkgconf), plus any names
# given as arguments. OpenMPI is not fetched (its closure is large and the GPU machine may bring
# its own MPI): if the build starts to require MPI, pass libopenmpi-dev openmpi-bin and check the
# size.
#
# Usage: scripts/fetch_device_deps.sh [--no-source] [--no-peer] [EXTRA_DEBIAN_PACKAGE...]
# Idempotent: re-running downloads only what is missing and unpacks afresh. Size (2026-11):
# .deps/root 17 MB, .deps/src 4.3 MB, .deps/debs 3.6 MB.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/.deps"
WITH_SOURCE=1
WITH_PEER=1
EXTRA=()
for a in "$@"; do
  case "$a" in
    --no-source) WITH_SOURCE=0 ;;
    --no-peer) WITH_PEER=0 ;;
    -h|--help) sed -n '2,34p' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "unknown option $a" >&2; exit 2 ;;
    *) EXTRA+=("$a") ;;
  esac
done

log() { echo "[fetch_device_deps] $*"; }
die() { echo "[fetch_device_deps] ERROR: $*" >&2; exit 1; }

command -v apt-get >/dev/null && command -v dpkg >/dev/null || die "needs apt-get and dpkg (Debian/Ubuntu)"
. /etc/os-release
[[ "${VERSION_CODENAME:-}" == bookworm ]] || log "WARNING: this is ${PRETTY_NAME:-unknown}, not Debian 12 (bookworm): the packages will be this release's"
ARCH="$(dpkg --print-architecture)"
[[ "$ARCH" == amd64 ]] || die "the GPU machine is x86-64; this machine is $ARCH"

WANTED=(libabsl-dev libyaml-cpp-dev catch2)
# What else the build files ask for (others edit them): Protobuf, PCRE2 through pkg-config, and
# pkg-config itself (the GPU image may have none: pkgconf is shipped and used when it has not).
CMAKE_FILES=("$ROOT/CMakeLists.txt" "$ROOT"/cmake/*.cmake "$ROOT"/*/CMakeLists.txt)
asks() { grep -qsiE "$1" "${CMAKE_FILES[@]}"; }
asks 'find_package\(protobuf' && WANTED+=(libprotobuf-dev protobuf-compiler)
asks 'libpcre2' && WANTED+=(libpcre2-dev)
asks 'find_package\(pkgconfig' && WANTED+=(pkgconf)
asks 'find_package\(mpi' && log "WARNING: the build asks for MPI, which is not fetched (pass libopenmpi-dev openmpi-bin to add it)"
WANTED+=("${EXTRA[@]}")
log "wanted: ${WANTED[*]}"

# The base system of any Linux that can compile C++: taken from the machine itself, never shipped.
BASE_RE='^(libc6|libc6-dev|libc-dev-bin|linux-libc-dev|libgcc-s1|libstdc\+\+6|gcc-[0-9]+-base|libcrypt1|libcrypt-dev|libnsl2|libnsl-dev|libtirpc3|libtirpc-dev|libtirpc-common|rpcsvc-proto|libcom-err2|libgssapi-krb5-2|libk5crypto3|libkeyutils1|libkrb5-3|libkrb5support0|libssl3|zlib1g|debconf|perl-base|dpkg|tar)$'

# Dependency closure (Depends and Pre-Depends only), real packages only (virtual ones print as <name>).
mapfile -t CLOSURE < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
                        --no-replaces --no-enhances "${WANTED[@]}" | grep -E '^[a-z0-9]' | sort -u | grep -Ev "$BASE_RE")
((${#CLOSURE[@]})) || die "apt-cache knows none of: ${WANTED[*]} (run apt-get update?)"
log "packages: ${CLOSURE[*]}"

mkdir -p "$DEPS/debs"
cd "$DEPS/debs"
for p in "${CLOSURE[@]}"; do
  v="$(apt-cache policy "$p" | awk '/Candidate:/ {print $2}')"
  [[ -n "$v" && "$v" != "(none)" ]] || die "no installable version of $p"
  f="$(ls "${p}_"*.deb 2>/dev/null | head -n1 || true)"
  if [[ -n "$f" && "$(dpkg-deb -f "$f" Version)" == "$v" ]]; then continue; fi
  rm -f "${p}_"*.deb
  log "downloading $p $v"
  apt-get -o APT::Sandbox::User=root download -q "$p=$v" >/dev/null || die "apt-get download $p=$v failed"
done
# Drop debs of packages no longer wanted.
for f in *.deb; do
  p="$(dpkg-deb -f "$f" Package)"
  printf '%s\n' "${CLOSURE[@]}" | grep -qx "$p" || { log "removing stale $f"; rm -f "$f"; }
done

rm -rf "$DEPS/root"
mkdir -p "$DEPS/root"
for f in *.deb; do dpkg -x "$f" "$DEPS/root"; done
rm -rf "$DEPS/root/usr/share/doc" "$DEPS/root/usr/share/lintian" "$DEPS/root/usr/share/man"
# Shared-library symlinks in -dev packages are absolute only in odd packages; make every link
# relative so the tree works wherever it lands.
while IFS= read -r link; do
  target="$(readlink "$link")"
  if [[ "$target" == /* ]]; then
    ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$DEPS/root$target")" "$link"
  fi
done < <(find "$DEPS/root" -type l)
# Static libraries: the build links the shared ones (the CMake files of Abseil, yaml-cpp and
# Protobuf import .so files); only Catch2's CMake file names its .a. Dropping the rest halves
# what travels.
find "$DEPS/root" -name '*.a' ! -name 'libCatch2*' -delete
log "unpacked into .deps/root: $(du -sh "$DEPS/root" | cut -f1)"

# ---- the benchmark's peer, for a GPU machine's Python 3.12 ----------------------------------
if ((WITH_PEER)); then
  mkdir -p "$DEPS/wheels"
  version_here() { "$ROOT/.venv/bin/python" -m pip show "$1" 2>/dev/null | awk '/^Version:/ {print $2}'; }
  specs=()
  for p in transformers tokenizers huggingface_hub safetensors; do
    v="$(version_here "$p")"
    specs+=("$p${v:+==$v}")
  done
  rm -f "$DEPS/wheels"/*.whl
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$DEPS/wheels" "${specs[@]}" 2>&1 | grep -v '^WARNING: Location' || true
  ls "$DEPS/wheels"/transformers-*.whl >/dev/null 2>&1 || die "pip download of ${specs[*]} for Python 3.12 failed"
  log "peer wheels in .deps/wheels: ${specs[*]} ($(du -sh "$DEPS/wheels" | cut -f1))"
fi

# ---- source packages (fallback for an older glibc) ---------------------------------------------
if ((WITH_SOURCE)); then
  mkdir -p "$DEPS/src"
  APTDIR="${TMPDIR:-/tmp}/tessera-apt-src"
  mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/parts"
  # The system's deb entries (one-line or deb822), turned into deb-src entries in a private list.
  : >"$APTDIR/sources.list"
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] && grep -E '^deb ' "$f" | grep -E 'debian\.org|debian-security' | sed 's/^deb /deb-src /' >>"$APTDIR/sources.list" || true
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    awk 'BEGIN{RS=""; FS="\n"} /debian\.org|debian-security/ {
           uris=""; suites=""; comps=""; signed="";
           for (i=1;i<=NF;i++) {
             if ($i ~ /^URIs:/) { sub(/^URIs:[ ]*/,"",$i); uris=$i }
             else if ($i ~ /^Suites:/) { sub(/^Suites:[ ]*/,"",$i); suites=$i }
             else if ($i ~ /^Components:/) { sub(/^Components:[ ]*/,"",$i); comps=$i }
             else if ($i ~ /^Signed-By:/) { sub(/^Signed-By:[ ]*/,"",$i); signed=$i } }
           n=split(suites, s, " ");
           for (j=1;j<=n;j++) printf "deb-src %s%s %s %s\n", (signed!="" ? "[signed-by=" signed "] " : ""), uris, s[j], comps }' \
      "$f" >>"$APTDIR/sources.list"
  done
  # Which source packages (name=version) are wanted and not yet in .deps/src.
  MISSING=()
  for bin in libabsl20220623 libyaml-cpp0.7 libpcre2-8-0; do
    printf '%s\n' "${CLOSURE[@]}" | grep -qx "$bin" || continue
    ver="$(dpkg-deb -f "$DEPS/debs/${bin}_"*.deb Version)"
    src="$(apt-cache show "$bin=$ver" | awk -F': ' '/^Source:/ {print $2; exit}')"
    srcver="$(sed -nE 's/.*\((.*)\).*/\1/p' <<<"$src")"   # a binary rebuild (+bN) names its source version
    src="${src%% *}"; src="${src:-$bin}"; srcver="${srcver:-$ver}"
    upstream="${srcver#*:}"; upstream="${upstream%-*}"
    ls "$DEPS/src/${src}_${upstream}.orig.tar."* >/dev/null 2>&1 || MISSING+=("$src=$srcver")
  done
  if ((${#MISSING[@]} == 0)); then
    log "source packages present in .deps/src"
  elif [[ ! -s "$APTDIR/sources.list" ]]; then
    log "WARNING: no Debian sources found in /etc/apt: skipping the source packages ${MISSING[*]}"
  else
    APT_OPTS=(-o "Dir::Etc::SourceList=$APTDIR/sources.list" -o "Dir::Etc::SourceParts=$APTDIR/parts"
              -o "Dir::State::Lists=$APTDIR/lists" -o "Dir::Cache=$APTDIR/cache" -o "APT::Sandbox::User=root")
    log "private deb-src index in $APTDIR"
    apt-get "${APT_OPTS[@]}" -q update >/dev/null || die "apt-get update of the private deb-src list failed"
    cd "$DEPS/src"
    for want in "${MISSING[@]}"; do
      log "source package $want"
      # Only the upstream tarball matters for the fallback build; a mirror that has dropped the
      # .dsc or Debian diff of a superseded security update still serves the tarball.
      apt-get "${APT_OPTS[@]}" -q source --download-only "$want" >/dev/null 2>"$APTDIR/source.err" \
        || ls "${want%%=*}_"*.orig.tar.* >/dev/null 2>&1 \
        || { cat "$APTDIR/source.err" >&2; die "apt-get source --download-only $want failed"; }
      grep -q '^E:' "$APTDIR/source.err" && log "  (partly: $(grep -c '^E: Failed to fetch' "$APTDIR/source.err") Debian file(s) not on the mirror; the upstream tarball is here)"
    done
  fi
  rm -rf "$APTDIR"
fi

# ---- manifest ----------------------------------------------------------------------------------
{
  echo "# .deps for Tessera's GPU-machine build, fetched $(date -u +%FT%TZ) on ${PRETTY_NAME:-?} (glibc $(ldd --version | head -1 | awk '{print $NF}'))"
  echo "# package version file sha256"
  for f in "$DEPS"/debs/*.deb; do
    echo "$(dpkg-deb -f "$f" Package) $(dpkg-deb -f "$f" Version) debs/$(basename "$f") $(sha256sum "$f" | cut -c1-64)"
  done
  for f in "$DEPS"/wheels/*.whl; do
    [[ -f "$f" ]] && echo "wheel - wheels/$(basename "$f") $(sha256sum "$f" | cut -c1-64)"
  done
  for f in "$DEPS"/src/*; do
    [[ -f "$f" ]] && echo "source - src/$(basename "$f") $(sha256sum "$f" | cut -c1-64)"
  done
  echo "# sizes: debs $(du -sh "$DEPS/debs" | cut -f1), root $(du -sh "$DEPS/root" | cut -f1), src $(du -sh "$DEPS/src" 2>/dev/null | cut -f1 || echo 0), wheels $(du -sh "$DEPS/wheels" 2>/dev/null | cut -f1 || echo 0)"
} >"$DEPS/MANIFEST.txt"
log "$(tail -n1 "$DEPS/MANIFEST.txt" | sed 's/^# //'); total $(du -sh "$DEPS" | cut -f1)"
log "carry to the GPU machine: .deps/root, .deps/src and .deps/wheels (the .debs are not needed there)"
