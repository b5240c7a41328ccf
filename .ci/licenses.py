#!/usr/bin/env python3
"""Licence audit of every crate in the build (what `cargo deny check licenses` checks).

Reads `cargo metadata` and fails when a package's SPDX expression cannot be satisfied with
the permissive licences below, or when a package declares none. `cargo deny` itself is not
used: its advisory database comes from GitHub, which this CI cannot reach, and building it
would add minutes to every run for the licence half alone.
"""
import json
import re
import subprocess
import sys

ALLOWED = {
    "MIT", "MIT-0", "Apache-2.0", "BSD-1-Clause", "BSD-2-Clause", "BSD-3-Clause", "ISC",
    "Zlib", "Unicode-3.0", "Unlicense", "BSL-1.0", "CC0-1.0", "CDLA-Permissive-2.0", "0BSD",
}
# Exceptions only ever widen what a licence allows.
EXCEPTIONS = {"LLVM-exception"}


def tokens(expr):
    expr = expr.replace("/", " OR ")
    return re.findall(r"\(|\)|[A-Za-z0-9.+-]+", expr)


def satisfiable(toks):
    """Recursive descent over OR (lowest), AND, WITH, parentheses."""
    pos = 0

    def atom():
        nonlocal pos
        if pos >= len(toks):
            raise ValueError("unexpected end")
        t = toks[pos]
        pos += 1
        if t == "(":
            v = disj()
            if pos >= len(toks) or toks[pos] != ")":
                raise ValueError("missing )")
            pos += 1
            return v
        ok = t in ALLOWED
        if pos < len(toks) and toks[pos] == "WITH":
            pos += 2
            ok = ok and toks[pos - 1] in EXCEPTIONS
        return ok

    def conj():
        nonlocal pos
        v = atom()
        while pos < len(toks) and toks[pos] == "AND":
            pos += 1
            v = atom() and v
        return v

    def disj():
        nonlocal pos
        v = conj()
        while pos < len(toks) and toks[pos] == "OR":
            pos += 1
            v = conj() or v
        return v

    v = disj()
    if pos != len(toks):
        raise ValueError(f"trailing {toks[pos:]}")
    return v


def main():
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked"],
            check=True, capture_output=True, text=True,
        ).stdout
    )
    bad = []
    for p in meta["packages"]:
        lic = p.get("license")
        if not lic:
            bad.append(f"{p['name']} {p['version']}: no licence declared")
            continue
        try:
            if not satisfiable(tokens(lic)):
                bad.append(f"{p['name']} {p['version']}: {lic}")
        except ValueError as e:
            bad.append(f"{p['name']} {p['version']}: unparseable licence {lic!r} ({e})")
    if bad:
        print("licences not allowed:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    print(f"licences: {len(meta['packages'])} packages, all permissive")
    return 0


if __name__ == "__main__":
    sys.exit(main())
