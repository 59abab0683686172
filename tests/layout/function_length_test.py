#!/usr/bin/env python3
"""No function of the product longer than 80 lines without a reason written next to it.

A function body (in a .cc file formatted by the repository's .clang-format: the signature starts
in column 0 and the body closes with a `}` alone in column 0) may run past MAX_LINES only when the
comment directly above its signature says why, in a line containing "Long:". Prints every
offender with its file, line and length.

usage: function_length_test.py [SOURCE_DIR]
"""
import pathlib
import re
import sys

MAX_LINES = 80
PRODUCT = ("core", "config", "kernels", "data", "parallel", "model", "checkpoint", "interop", "tools",
           "trainer", "cli")
NOT_FUNCTIONS = re.compile(r"(namespace|struct|class|enum|extern|union)\b")


def long_functions(path: pathlib.Path, rel: str):
    lines = path.read_text(errors="replace").splitlines()
    found = []
    for end, line in enumerate(lines):
        if line != "}":
            continue
        start = end - 1  # the signature's first line: the nearest column-0 code line above
        while start >= 0 and (not lines[start] or lines[start][0].isspace() or lines[start].startswith(("//", "#"))):
            start -= 1
        if start < 0 or NOT_FUNCTIONS.match(lines[start]):
            continue
        body = start
        while body < end and not lines[body].rstrip().endswith("{"):
            body += 1
        length = end - body - 1
        if length <= MAX_LINES:
            continue
        comment = start - 1
        reason = False
        while comment >= 0 and lines[comment].startswith("//"):
            reason = reason or "Long:" in lines[comment]
            comment -= 1
        if not reason:
            found.append(f"{rel}:{start + 1}: {length} lines: {lines[start][:90]}")
    return found


def check_the_checker():
    import tempfile
    body = "\n".join(["  x += 1;"] * (MAX_LINES + 1))
    with tempfile.TemporaryDirectory() as tmp:
        p = pathlib.Path(tmp) / "a.cc"
        p.write_text(f"namespace t {{\n\nint Long(int x) {{\n{body}\n  return x;\n}}\n\n"
                     f"// Long: a table.\nint Excused(int x) {{\n{body}\n}}\n\nint Short() {{\n  return 1;\n}}\n\n}}\n")
        found = long_functions(p, "a.cc")
        return len(found) == 1 and "a.cc:3:" in found[0]


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parents[2])
    if not check_the_checker():
        print("function_length_test: the checker missed a planted long function", file=sys.stderr)
        return 1
    found, checked = [], 0
    for top in PRODUCT:
        for path in sorted((root / top).rglob("*.cc")):
            checked += 1
            found += long_functions(path, path.relative_to(root).as_posix())
    for f in found:
        print(f)
    print(f"function length: {checked} files checked, {len(found)} function(s) over {MAX_LINES} lines "
          "without a reason")
    return 1 if found or not checked else 0


if __name__ == "__main__":
    sys.exit(main())
