"""ARCHITECTURE.md promises layers: no top-level module of `src/` imports one that imports it
back. Read from the sources (each `crate::NAME` a module uses, its tests aside)."""
import os
import re

from conftest import ROOT

SRC = os.path.join(ROOT, "src")


def imports():
    edges = {}
    for root, _, files in os.walk(SRC):
        if "tests" in os.path.relpath(root, SRC).split(os.sep):
            continue
        for f in files:
            if not f.endswith(".rs") or f == "tests.rs":
                continue
            top = os.path.relpath(os.path.join(root, f), SRC).split(os.sep)[0]
            top = top.removesuffix(".rs")
            text = open(os.path.join(root, f)).read()
            # Inline `mod tests { ... }` blocks come last in a file: ignore what follows them.
            text = text.split("#[cfg(test)]\nmod tests {")[0]
            for m in set(re.findall(r"crate::(\w+)", text)):
                if m != top:
                    edges.setdefault(top, set()).add(m)
    return edges


def test_modules_form_layers():
    edges = imports()
    cycles = sorted(
        (a, b) for a, deps in edges.items() for b in deps if a < b and a in edges.get(b, ())
    )
    assert not cycles, f"modules that import each other: {cycles}"


def test_the_shard_does_not_name_the_hub_or_the_cluster():
    edges = imports()
    assert not edges.get("shard", set()) & {"hub", "cluster", "admin", "reactor", "server"}
    assert not edges.get("hub", set()) & {"cluster", "admin", "reactor", "server", "api"}
