#!/usr/bin/env bash
# Formats every C++ and CUDA source of the tree with clang-format and the repository's
# .clang-format (Google style, 110 columns). `scripts/format.sh --check` only lists the files that
# would change and exits 1 if there are any.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
command -v clang-format >/dev/null || { echo "format.sh: clang-format is not installed (apt-get install clang-format)" >&2; exit 2; }
mapfile -t files < <(git ls-files '*.cc' '*.h' '*.cu')
if [[ "${1:-}" == "--check" ]]; then
  changed=0
  for f in "${files[@]}"; do
    if ! clang-format --style=file "$f" | cmp -s - "$f"; then echo "$f"; changed=1; fi
  done
  exit $changed
fi
clang-format --style=file -i "${files[@]}"
