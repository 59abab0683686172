#!/usr/bin/env bash
# make_sample_corpus.sh - gather a small sample corpus of REAL English text and
# REAL source code from files that every Debian/Ubuntu machine already has
# (nothing is downloaded, nothing is synthetic), for Tessera's default tiny
# training run.
#
# Usage: scripts/make_sample_corpus.sh [OUT_DIR]
#   OUT_DIR defaults to <repo root>/.cache/sample_corpus
#
# Output: OUT_DIR/train/NNNNNN.txt and OUT_DIR/val/NNNNNN.txt (one document =
# one system file; every 20th document, index % 20 == 19, goes to val/),
# OUT_DIR/SOURCES.txt (provenance: document -> original path) and
# OUT_DIR/COMPLETE (written last; its presence means the corpus is usable and
# later runs just reuse it; delete OUT_DIR to rebuild).
#
# Sources
#   text: /usr/share/common-licenses/*, /usr/share/doc/*/copyright, README /
#         NEWS / changelog-like plain text in /usr/share/doc (.gz decompressed),
#         man pages from /usr/share/man/man{1,5,7,8} rendered to plain text with
#         groff (or man), or with roff markup stripped if neither is installed.
#   code: C headers under /usr/include, the system Python stdlib
#         (/usr/lib/python3.X, else the running python3's stdlib), and other
#         *.c / *.py / *.sh files shipped in /usr/share (e.g. doc examples).
# Each document is >= 200 bytes, valid UTF-8 (binary / non-UTF-8 files are
# skipped), truncated at a line boundary to <= 64 KiB; exact duplicates are
# dropped. Text and code documents are interleaved (and the sub-sources within
# each kind are balanced by bytes), so both appear throughout the corpus.
#
# Deterministic: every candidate list is sorted bytewise (LC_ALL=C order) and
# then visited round-robin over groups (package / top-level dir / man-page
# family) in a fixed "spread" order (bit-reversed index), so that a small
# prefix samples the whole alphabet instead of just the first few packages.
# No randomness: rerunning on the same machine gives identical output.
#
# Environment
#   TESSERA_CORPUS_MB_TEXT  MiB of text documents to gather (default 6)
#   TESSERA_CORPUS_MB_CODE  MiB of code documents to gather (default 6)
# If the machine has less, whatever exists is taken; fails if < 1 MiB total.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
OUT_DIR="${1:-$REPO_ROOT/.cache/sample_corpus}"
# Normalise: strip trailing slashes (but keep "/" itself, which we refuse below).
while [[ "$OUT_DIR" == */ && "$OUT_DIR" != "/" ]]; do OUT_DIR="${OUT_DIR%/}"; done
if [[ -z "$OUT_DIR" || "$OUT_DIR" == "/" ]]; then
    echo "[corpus] ERROR: refusing to use '$OUT_DIR' as output directory" >&2
    exit 2
fi
MB_TEXT="${TESSERA_CORPUS_MB_TEXT:-6}"
MB_CODE="${TESSERA_CORPUS_MB_CODE:-6}"
START_NS="$(date +%s%N)"

if ! command -v python3 >/dev/null 2>&1; then
    echo "[corpus] ERROR: python3 not found (it is part of every Debian/Ubuntu install)" >&2
    exit 1
fi

# Print the cached message and return 0 if OUT_DIR holds a complete corpus.
use_cached() {
    [[ -f "$OUT_DIR/COMPLETE" ]] || return 1
    local docs bytes mbt mbc
    docs="$(sed -n 's/^docs=//p' "$OUT_DIR/COMPLETE")"
    bytes="$(sed -n 's/^total_bytes=//p' "$OUT_DIR/COMPLETE")"
    if [[ -z "$docs" || -z "$bytes" ]]; then
        docs="$(find "$OUT_DIR/train" "$OUT_DIR/val" -name '*.txt' -type f 2>/dev/null | wc -l)"
        bytes="$(find "$OUT_DIR/train" "$OUT_DIR/val" -name '*.txt' -type f -printf '%s\n' 2>/dev/null |
                 awk '{s += $1} END {print s + 0}')"
    fi
    echo "[corpus] using cached $OUT_DIR ($docs docs, $(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1048576}') MiB)"
    mbt="$(sed -n 's/^mb_text=//p' "$OUT_DIR/COMPLETE")"
    mbc="$(sed -n 's/^mb_code=//p' "$OUT_DIR/COMPLETE")"
    if [[ -n "$mbt$mbc" && ( "$mbt" != "$MB_TEXT" || "$mbc" != "$MB_CODE" ) ]]; then
        echo "[corpus] note: cached corpus was built with TESSERA_CORPUS_MB_TEXT=$mbt" \
             "TESSERA_CORPUS_MB_CODE=$mbc; delete $OUT_DIR to rebuild with $MB_TEXT/$MB_CODE" >&2
    fi
    return 0
}

use_cached && exit 0

mkdir -p "$(dirname "$OUT_DIR")"
# Serialise concurrent builders (they would share OUT_DIR.tmp): lock the parent
# directory itself, so no lock file is left behind.
if command -v flock >/dev/null 2>&1; then
    exec 9<"$(dirname "$OUT_DIR")"
    flock 9
    use_cached && exit 0   # another process finished it while we waited
fi

if [[ -e "$OUT_DIR" ]]; then
    # No COMPLETE marker: remove it if it is an (older / partial) corpus of
    # ours or empty, but never clobber some unrelated directory.
    if [[ -d "$OUT_DIR" ]] && { [[ -z "$(ls -A "$OUT_DIR")" ]] || [[ -e "$OUT_DIR/SOURCES.txt" || -d "$OUT_DIR/train" ]]; }; then
        rm -rf -- "$OUT_DIR"
    else
        echo "[corpus] ERROR: $OUT_DIR exists and is not a corpus directory; pick another OUT_DIR" >&2
        exit 1
    fi
fi

TMP_DIR="$OUT_DIR.tmp"
rm -rf -- "$TMP_DIR"
trap 'rm -rf -- "$TMP_DIR"' EXIT
mkdir -p "$TMP_DIR/train" "$TMP_DIR/val"

python3 - "$TMP_DIR" "$MB_TEXT" "$MB_CODE" "$START_NS" <<'PYEOF'
import concurrent.futures
import glob
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time

out_dir, mb_text_s, mb_code_s, start_ns = sys.argv[1:5]
t_start = int(start_ns) / 1e9 if start_ns.isdigit() else time.time()

def die(msg):
    print("[corpus] ERROR: " + msg, file=sys.stderr)
    sys.exit(1)

def parse_mb(name, s):
    try:
        v = float(s)
    except ValueError:
        v = -1.0
    if not (v >= 0.0) or v > 1e6:
        die("%s must be a non-negative number of MiB, got %r" % (name, s))
    return v

MIB = 1 << 20
CAPS = {
    "text": int(parse_mb("TESSERA_CORPUS_MB_TEXT", mb_text_s) * MIB),
    "code": int(parse_mb("TESSERA_CORPUS_MB_CODE", mb_code_s) * MIB),
}
MIN_BYTES = 200
MAX_BYTES = 64 * 1024
VAL_EVERY = 20
CPUS = os.cpu_count() or 2

# ---------------------------------------------------------------- candidates

def bkey(p):
    # LC_ALL=C sort order == bytewise order of the raw file name.
    return os.fsencode(p)

def walk_files(root, accept, prune=()):
    """All regular files (or symlinks to them) under root accepted by accept(path)."""
    found = []
    if not os.path.isdir(root):
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames
                       if os.path.join(dirpath, d) not in prune and d != "__pycache__"]
        for fn in filenames:
            p = os.path.join(dirpath, fn)
            if accept(p) and os.path.isfile(p):
                found.append(p)
    return found

def spread(paths):
    """Sort bytewise, then visit in bit-reversed-index order: deterministic, and
    any prefix samples the whole sorted range evenly (not just 'a*' packages)."""
    paths = sorted(set(paths), key=bkey)
    n = len(paths)
    if n <= 2:
        return paths
    bits = (n - 1).bit_length()
    out = []
    for i in range(1 << bits):
        j = int(format(i, "0%db" % bits)[::-1], 2)
        if j < n:
            out.append(paths[j])
    return out

def grouped_spread(paths, group_of):
    """Round-robin over groups (e.g. one group per package / top-level dir, so a
    family of thousands of near-identical files cannot crowd out the rest):
    round r takes the r-th file (in spread order) of every group, groups
    visited in spread order of their sorted keys. Fully deterministic."""
    groups = {}
    for p in sorted(set(paths), key=bkey):
        groups.setdefault(group_of(p), []).append(p)
    keyed = []
    for gi, k in enumerate(spread(list(groups))):
        for ri, p in enumerate(spread(groups[k])):
            keyed.append((ri, gi, p))
    keyed.sort(key=lambda t: (t[0], t[1]))
    return [p for _, _, p in keyed]

def top_group(root, depth=1):
    """Group key: the first `depth` path components below root (more below
    multiarch dirs like /usr/include/x86_64-linux-gnu and /usr/share/doc)."""
    def key(p):
        parts = os.path.relpath(p, root).split(os.sep)
        d = depth
        if parts[0].endswith(("-linux-gnu", "-linux-gnueabihf", "-linux-musl")) or \
                parts[0] == "doc":
            d += 1
        return "/".join(parts[:min(d, len(parts))])
    return key

def man_group(p):
    # Family of pages: first word of the page name (gcloud_*, git-*, ALTER_*...).
    return re.split(r"[-_.]", os.path.basename(p), maxsplit=1)[0].lower()

def strip_gz(p):
    return p[:-3] if p.endswith(".gz") else p

CODE_EXT = (".c", ".py", ".sh")
DOC_NAME_RE = re.compile(
    r"^(readme|news|changes|changelog|history|authors|thanks|todo|faq|bugs|"
    r"notes|install|credits|contributing|hacking|upgrading|usage|tips|releasenotes|"
    r"release-notes|whatsnew)([._-].*)?$|\.(txt|text|md|markdown|rst)$",
    re.IGNORECASE)

def is_doc_text(p):
    name = os.path.basename(strip_gz(p))
    if name == "copyright" or name.endswith(CODE_EXT):
        return False
    return bool(DOC_NAME_RE.search(name))

def find_python_stdlib():
    cands = []
    for d in glob.glob("/usr/lib/python3.*"):
        m = re.match(r"^/usr/lib/python3\.(\d+)$", d)
        if m and os.path.isfile(os.path.join(d, "os.py")):
            cands.append((int(m.group(1)), d))
    if cands:
        return max(cands)[1]
    d = sysconfig.get_paths().get("stdlib")
    if d and os.path.isfile(os.path.join(d, "os.py")):
        return d
    return None

py_stdlib = find_python_stdlib()
caveats = []
if py_stdlib is None:
    caveats.append("no Python stdlib found")
elif not py_stdlib.startswith("/usr/lib/"):
    caveats.append("no /usr/lib/python3.X; using %s" % py_stdlib)

def py_accept(p):
    if not p.endswith(".py"):
        return False
    return "/site-packages/" not in p and "/dist-packages/" not in p

share_prune = {"/usr/share/man", "/usr/share/locale", "/usr/share/i18n",
               "/usr/share/zoneinfo", "/usr/share/icons", "/usr/share/fonts",
               "/usr/share/mime"}
man_dirs = ["/usr/share/man/man%s" % s for s in "1578"]

# ---------------------------------------------------------------- readers

def read_raw(path):
    """Bytes of the file (gunzipped if *.gz), or None on error."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read(64 * MIB)
        with open(path, "rb") as f:
            return f.read(64 * MIB)
    except (OSError, EOFError, ValueError):
        return None

def to_text(data):
    """Strict UTF-8, non-binary (grep -I-like: NUL => binary) text, or None."""
    if data is None or b"\0" in data:
        return None
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if s.startswith("\ufeff"):
        s = s[1:]
    return s.replace("\r\n", "\n")

BLANKS_RE = re.compile(r"\n{3,}")

def tidy_man(s):
    """Rendered man page: drop trailing blanks, squeeze runs of blank lines."""
    s = "\n".join(line.rstrip() for line in s.split("\n"))
    return BLANKS_RE.sub("\n\n", s).strip("\n") + "\n"

def plain_reader(path):
    return to_text(read_raw(path))

# ---- man pages
GROFF = shutil.which("groff")
MAN = shutil.which("man")
MAN_ENV = dict(os.environ, LC_ALL="C.UTF-8", GROFF_NO_SGR="1", MANWIDTH="80",
               MAN_DISABLE_SECCOMP="1", MANPAGER="cat", PAGER="cat")
MAN_ENV.pop("MAN_KEEP_FORMATTING", None)
# Left-adjusted, unhyphenated output (the man/mdoc macros call .ad/.hy
# themselves, so turn those requests into no-ops after setting them).
ROFF_PRELUDE = (b".nh\n.rn hy tessera-hy\n.de hy\n..\n"
                b".ad l\n.rn ad tessera-ad\n.de ad\n..\n")
if GROFF:
    MAN_MODE = "groff"
elif MAN:
    MAN_MODE = "man"
else:
    MAN_MODE = "strip"
    caveats.append("neither groff nor man installed; man pages roff-stripped")

SO_RE = re.compile(rb"^(?:\.\\\".*\n|'\\\".*\n|\s*\n)*\.so\s", re.MULTILINE)
ESC_MAP = [
    (r"\-", "-"), (r"\(aq", "'"), (r"\(dq", '"'), (r"\(em", "--"), (r"\(en", "-"),
    (r"\(bu", "*"), (r"\(co", "(c)"), (r"\(lq", '"'), (r"\(rq", '"'),
    (r"\(oq", "'"), (r"\(cq", "'"), (r"\(ti", "~"), (r"\(ha", "^"),
    (r"\e", "\\"), (r"\&", ""), (r"\|", ""), (r"\^", ""), (r"\0", " "),
    (r"\ ", " "), (r"\c", ""), (r"\/", ""), (r"\,", ""), (r"\%", ""),
]
ROFF_ESC_RE = re.compile(r"\\f(\[[^\]]*\]|\(..|.)|\\s[+-]?\d+|\\\*(\[[^\]]*\]|\(..|.)"
                         r"|\\\((..)|\\[\"#].*$", re.MULTILINE)

ROFF_ARG_RE = re.compile(r'"([^"]*)"|(\S+)')
MAN_SPACE = {"B", "I", "SM", "SB", "SH", "SS", "IP"}
MAN_TIGHT = {"BR", "BI", "IB", "IR", "RB", "RI"}
MDOC_TEXT = {"Nm", "Nd", "Ar", "Cm", "Pa", "Xr", "Sh", "Ss", "Em", "Sy", "Dv", "Ev",
             "Va", "Li", "Ql", "Dq", "Sq", "Op", "It", "Fa", "Fn", "Ft", "Fd", "Er",
             "Fl", "Pq", "Aq", "Ic", "Tn", "Ux"}
MDOC_CALLABLE = MDOC_TEXT | {"Ns", "Oo", "Oc", "Xo", "Xc", "No"}
ROFF_PARA = {"PP", "LP", "P", "TP", "Pp", "Lp", "Bl", "Bd"}

def roff_line_text(line, state):
    """Crude text of a roff request line: args of font/heading macros, else None."""
    m = re.match(r"^[.']\s*(\S+)\s*(.*)$", line)
    if not m:
        return None
    name, rest = m.group(1), m.group(2)
    if name in ROFF_PARA:
        return ""
    args = [a if a else b for a, b in ROFF_ARG_RE.findall(rest)]
    if name in MAN_TIGHT:
        return "".join(args)
    if name in MAN_SPACE:
        text = " ".join(args)
    elif name in MDOC_TEXT:
        if name == "Nm":
            if args and "name" not in state:
                state["name"] = args[0]
            args = args or [state.get("name", "")]
        words, flag = [], name == "Fl"
        for a in args:
            if a in MDOC_CALLABLE:
                flag = a == "Fl"
                continue
            words.append(("-" + a) if flag else a)
            flag = False
        text = " ".join(words)
    else:
        return None
    return ("\n" + text) if name in ("SH", "SS", "Sh", "Ss") else text

def roff_strip(src):
    """Fallback when no formatter is installed: drop request lines (keeping the
    words of font / heading macros), remove inline escapes like \\fB."""
    lines, state = [], {}
    for line in src.split("\n"):
        if line.startswith((".", "'")):
            line = roff_line_text(line, state)
            if line is None:
                continue
        for a, b in ESC_MAP:
            line = line.replace(a, b)
        lines.append(ROFF_ESC_RE.sub("", line).replace("\\", ""))
    return "\n".join(lines)

def render_man(path):
    raw = read_raw(path)
    src = to_text(raw)
    if src is None or len(raw) < MIN_BYTES and SO_RE.match(raw):
        return None  # undecodable, or a ".so other_page" redirection stub
    if MAN_MODE == "strip":
        return tidy_man(roff_strip(src))
    if MAN_MODE == "groff":
        cmd = [GROFF, "-k", "-Kutf8", "-t", "-mandoc", "-Tutf8", "-P-cbou",
               "-rLL=80n", "-rcR=1", "-rHY=0"]
        inp = ROFF_PRELUDE + src.encode("utf-8")
    else:
        cmd = [MAN, "-l", "-E", "UTF-8", path]
        inp = None
    try:
        r = subprocess.run(cmd, input=inp, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, env=MAN_ENV, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0:
        return None
    out = to_text(r.stdout)
    return tidy_man(out) if out is not None else None

# ---------------------------------------------------------------- sources

class Source:
    def __init__(self, kind, name, paths, reader, group_of=None, parallel=False):
        self.kind, self.name, self.reader = kind, name, reader
        self.paths = grouped_spread(paths, group_of) if group_of else spread(paths)
        self.pos = 0
        self.taken = 0
        self.done = not self.paths
        self.parallel = parallel
        self.pending = []  # prefetched (path, text) in order

    def next_doc(self):
        """Next (path, text) accepted by this source, or None when exhausted."""
        while True:
            if self.pending:
                path, s = self.pending.pop(0)
            elif self.pos < len(self.paths):
                if self.parallel:
                    batch = self.paths[self.pos:self.pos + 4 * CPUS]
                    self.pos += len(batch)
                    self.pending = list(zip(batch, POOL.map(self.reader, batch)))
                    continue
                path = self.paths[self.pos]
                self.pos += 1
                s = self.reader(path)
            else:
                self.done = True
                return None
            if s is None:
                continue
            if not s.endswith("\n"):
                s += "\n"
            b = s.encode("utf-8")
            if len(b) > MAX_BYTES:
                cut = b.rfind(b"\n", 0, MAX_BYTES)
                if cut < MIN_BYTES:
                    continue  # no sane line boundary (minified / one huge line)
                b = b[:cut + 1]
            if len(b) < MIN_BYTES:
                continue
            return path, b

POOL = concurrent.futures.ThreadPoolExecutor(max_workers=max(2, CPUS))

def list_share_code():
    def acc(p):
        return strip_gz(p).endswith(CODE_EXT)
    return walk_files("/usr/share", acc, prune=share_prune)

SOURCES = {
    "text": [
        Source("text", "licenses",
               [p for p in glob.glob("/usr/share/common-licenses/*") if os.path.isfile(p)],
               plain_reader),
        Source("text", "copyright",
               [p for p in glob.glob("/usr/share/doc/*/copyright") if os.path.isfile(p)],
               plain_reader),
        Source("text", "doc", walk_files("/usr/share/doc", is_doc_text), plain_reader,
               group_of=top_group("/usr/share/doc")),
        Source("text", "man",
               [p for d in man_dirs for p in walk_files(d, lambda p: True)],
               render_man, group_of=man_group, parallel=(MAN_MODE != "strip")),
    ],
    "code": [
        Source("code", "c-headers",
               walk_files("/usr/include", lambda p: p.endswith(".h")), plain_reader,
               group_of=top_group("/usr/include")),
        Source("code", "python-stdlib",
               walk_files(py_stdlib, py_accept) if py_stdlib else [], plain_reader,
               group_of=top_group(py_stdlib or "/")),
        Source("code", "share-code", list_share_code(), plain_reader,
               group_of=top_group("/usr/share")),
    ],
}
for kind, srcs in SOURCES.items():
    for s in srcs:
        if not s.paths:
            caveats.append("no candidates for %s/%s" % (kind, s.name))

# ---------------------------------------------------------------- gather

taken = {"text": 0, "code": 0}
order = {"text": 0, "code": 1}
seen = set()
docs = []  # (kind, source, path, bytes)
next_report = MIB

def active_sources(kind):
    return [s for s in SOURCES[kind] if not s.done]

while True:
    kinds = [k for k in ("text", "code")
             if CAPS[k] > 0 and taken[k] < CAPS[k] and active_sources(k)]
    if not kinds:
        break
    # Interleave kinds: always feed the one furthest below its cap.
    kind = min(kinds, key=lambda k: (taken[k] / CAPS[k], order[k]))
    srcs = active_sources(kind)
    src = min(srcs, key=lambda s: (s.taken, SOURCES[kind].index(s)))
    got = src.next_doc()
    if got is None:
        continue
    path, b = got
    h = hashlib.sha1(b).digest()
    if h in seen:
        continue
    seen.add(h)
    docs.append((kind, src.name, path, b))
    src.taken += len(b)
    taken[kind] += len(b)
    total = taken["text"] + taken["code"]
    if total >= next_report:
        print("[corpus] %5.1f MiB gathered (%d docs: %.1f MiB text, %.1f MiB code)"
              % (total / MIB, len(docs), taken["text"] / MIB, taken["code"] / MIB),
              flush=True)
        while next_report <= total:
            next_report += MIB

POOL.shutdown(wait=True)
total = taken["text"] + taken["code"]
if total < MIB and CAPS["text"] + CAPS["code"] < MIB:
    die("TESSERA_CORPUS_MB_TEXT + TESSERA_CORPUS_MB_CODE = %s + %s MiB; the sample "
        "corpus needs at least 1 MiB in total" % (mb_text_s, mb_code_s))
if total < MIB:
    die("only %.2f MiB of usable text+code found on this machine (need >= 1 MiB; "
        "caps text=%s code=%s MiB). Install e.g. man-db, libc6-dev or python3 docs."
        % (total / MIB, mb_text_s, mb_code_s))

# ---------------------------------------------------------------- write

n_train = n_val = 0
prov = []
for i, (kind, sname, path, b) in enumerate(docs):
    split = "val" if i % VAL_EVERY == VAL_EVERY - 1 else "train"
    rel = "%s/%06d.txt" % (split, i)
    with open(os.path.join(out_dir, rel), "wb") as f:
        f.write(b)
    if split == "val":
        n_val += 1
    else:
        n_train += 1
    prov.append("%s\t%s/%s\t%s\n" % (rel, kind, sname, path))
with open(os.path.join(out_dir, "SOURCES.txt"), "w", encoding="utf-8",
          errors="surrogateescape") as f:
    f.write("# document\tkind/source\toriginal path (man pages: rendered to text)\n")
    f.writelines(prov)

per_src = ", ".join("%s %.2f" % (s.name, s.taken / MIB)
                    for k in ("text", "code") for s in SOURCES[k])
stats = [
    "docs=%d" % len(docs), "train_docs=%d" % n_train, "val_docs=%d" % n_val,
    "text_bytes=%d" % taken["text"], "code_bytes=%d" % taken["code"],
    "total_bytes=%d" % total, "mb_text=%s" % mb_text_s, "mb_code=%s" % mb_code_s,
    "man_mode=%s" % MAN_MODE, "python_stdlib=%s" % py_stdlib,
]
# COMPLETE is written last (then the whole directory is renamed into place).
with open(os.path.join(out_dir, "COMPLETE"), "w") as f:
    f.write("\n".join(stats) + "\n")

print("[corpus] per source (MiB): " + per_src)
for c in caveats:
    print("[corpus] note: " + c)
if taken["text"] < CAPS["text"] or taken["code"] < CAPS["code"]:
    print("[corpus] note: machine has less than the requested amount; took all there is")
print("[corpus] %d train docs, %d val docs, %.1f MiB text, %.1f MiB code in %.1fs"
      % (n_train, n_val, taken["text"] / MIB, taken["code"] / MIB, time.time() - t_start),
      flush=True)
PYEOF

mv -T -- "$TMP_DIR" "$OUT_DIR"
trap - EXIT
echo "[corpus] wrote $OUT_DIR"
