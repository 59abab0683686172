#!/usr/bin/env python3
"""Holds the layer rule of docs/architecture.md on every #include of the product's sources.

Each top-level folder (and parallel/comm, the lowest part of parallel/) may include only the
folders listed for it below; tests/, scripts/ and generated headers are not checked. A violation
prints the file, the line and the rule it breaks, and the test fails.

usage: layering_test.py [SOURCE_DIR]        (default: the repository this file is in)
"""
import pathlib
import re
import sys

# What each layer may include, besides itself. Read top-down: a layer never includes one above it.
ALLOWED = {
    "core": set(),
    "kernels": {"core"},
    "config": {"core"},
    "data": {"core"},
    "parallel/comm": {"core"},
    "parallel": {"parallel/comm", "kernels", "core"},
    "model": {"parallel", "parallel/comm", "kernels", "data", "config", "core"},
    "checkpoint": {"parallel", "parallel/comm", "config", "core"},
    "interop": {"model", "checkpoint", "parallel", "parallel/comm", "kernels", "data", "config", "core"},
    "tools": {"data", "config", "core"},
    "trainer": {"tools", "interop", "checkpoint", "model", "parallel", "parallel/comm", "kernels", "data",
                "config", "core"},
    "cli": {"trainer", "tools", "interop", "checkpoint", "model", "parallel", "parallel/comm", "kernels",
            "data", "config", "core"},
    # Timing programs run by scripts/bench/: the top tier beside cli/, never included by it.
    "bench": {"trainer", "tools", "interop", "checkpoint", "model", "parallel", "parallel/comm", "kernels",
              "data", "config", "core"},
}
SOURCE_SUFFIXES = {".h", ".cc", ".cu", ".inc"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
# Headers generated into the build tree, named without a folder of ours.
GENERATED = {"tessera_git_revision.h", "tessera_nccl_config.h"}


def layer_of(path: str):
    """The layer a repository-relative path belongs to, or None outside the product's folders."""
    if path.startswith("parallel/comm/"):
        return "parallel/comm"
    top = path.split("/", 1)[0]
    return top if top in ALLOWED and "/" in path else None


def violations(root: pathlib.Path):
    found = []
    for file in sorted(root.rglob("*")):
        rel = file.relative_to(root).as_posix()
        if file.suffix not in SOURCE_SUFFIXES or rel.startswith((".", "build", "tests/", "scripts/")):
            continue
        source_layer = layer_of(rel)
        if source_layer is None:
            continue
        for number, line in enumerate(file.read_text(errors="replace").splitlines(), 1):
            match = INCLUDE.match(line)
            if not match:
                continue
            target = match.group(1)
            if target in GENERATED or "/" not in target:
                continue  # same-folder and generated headers
            target_layer = layer_of(target)
            if target_layer is None:
                if target.split("/", 1)[0] in ("absl", "torch", "c10", "ATen", "yaml-cpp", "google"):
                    continue
                found.append(f"{rel}:{number}: includes \"{target}\", which is in no layer of the project")
                continue
            if target_layer == source_layer or target_layer in ALLOWED[source_layer]:
                continue
            allowed = ", ".join(sorted(ALLOWED[source_layer])) or "nothing of the project"
            found.append(f"{rel}:{number}: {source_layer}/ includes \"{target}\" ({target_layer}/); "
                         f"{source_layer}/ may include only {allowed}")
    return found


# No top-level folder may grow past this share of the product's lines: a folder that holds much
# more has become several concerns (the share is 0.31 for parallel/, the largest, today).
MAX_FOLDER_SHARE = 0.35


def oversized_folders(root: pathlib.Path):
    lines = {}
    for file in root.rglob("*"):
        rel = file.relative_to(root).as_posix()
        if file.suffix in SOURCE_SUFFIXES and file.suffix != ".inc" and layer_of(rel):
            top = rel.split("/", 1)[0]
            lines[top] = lines.get(top, 0) + len(file.read_text(errors="replace").splitlines())
    total = sum(lines.values()) or 1
    return [f"{top}/ holds {n / total:.0%} of the code ({n} of {total} lines); the limit is "
            f"{MAX_FOLDER_SHARE:.0%}: split it by concern"
            for top, n in sorted(lines.items()) if n / total > MAX_FOLDER_SHARE]


def check_the_checker():
    """A planted violation (data/ including parallel/) and a legal include must be told apart, so a
    checker that silently passes everything fails here."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        tree = pathlib.Path(tmp)
        (tree / "data").mkdir()
        (tree / "model").mkdir()
        (tree / "data" / "planted.cc").write_text('#include "parallel/topology.h"\n#include "core/json.h"\n')
        (tree / "model" / "fine.cc").write_text('#include "data/loader.h"\n#include "parallel/comm/launch.h"\n')
        found = violations(tree)
        if len(found) != 1 or "data/planted.cc:1" not in found[0]:
            print(f"layering_test: the checker missed a planted violation (found {found})", file=sys.stderr)
            return False
    return True


def main():
    if not check_the_checker():
        return 1
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parents[2])
    checked = [p for p in root.rglob("*") if p.suffix in SOURCE_SUFFIXES and layer_of(p.relative_to(root).as_posix())]
    if not checked:
        print(f"layering_test: no sources found under {root}", file=sys.stderr)
        return 1
    found = violations(root) + oversized_folders(root)
    for v in found:
        print(v)
    print(f"layering: {len(checked)} files checked, {len(found)} violation(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
