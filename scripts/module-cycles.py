#!/usr/bin/env python3
"""Finds module cycles inside a Rust crate.

Usage: scripts/module-cycles.py [--edges] CRATE_SRC_DIR [CRATE_SRC_DIR ...]

`--edges` also prints every dependency found, with the reference behind it.

For each directory (a crate's `src/`), every crate root in it (`lib.rs`,
`main.rs`) is read with the modules it declares (`mod x;` files and inline
`mod x { ... }` blocks). A module depends on another when it names it or
something in it: `use crate::a::b`, `use super::x`, `use self::y`, a path in
code such as `crate::a::f()` or `super::T`, or, in code, a path starting with
one of its own child modules, or a `macro_rules!` macro of another module
invoked by name (`crash_point!(..)`). A path through a re-export (`pub use` or a glob)
counts for the module that defines the item, not for the one re-exporting it.
Declaring a child (`mod x;`) is not a dependency, and comments, strings and
doc tests are ignored.

Every strongly connected component of the module graph with more than one
module is printed with the references that make it (file:line). The exit code
is 1 if any crate has one, 0 otherwise, 2 on bad usage.

Standard library only (Python 3.8+).
"""

import os
import re
import sys

IDENT = r"(?:r#)?[A-Za-z_][A-Za-z0-9_]*"
PATH_ROOTS = ("crate", "self", "super")


# ---------------------------------------------------------------- lexing


def strip_code(text):
    """`text` with comments, string and char literals blanked out (newlines
    and offsets kept), so that only code remains."""
    out = list(text)
    i, n = 0, len(text)

    def blank(start, end):
        for k in range(start, end):
            if out[k] != "\n":
                out[k] = " "

    char_literal = re.compile(r"'(?:\\u\{[0-9A-Fa-f]+\}|\\x[0-9A-Fa-f]{2}|\\.|[^\\'\n])'")
    raw_string = re.compile(r'(?:b|c)?r(#*)"')
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            blank(i, end)
            i = end
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif c in "bcr" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = raw_string.match(text, i)
            if m:
                closing = '"' + m.group(1)
                end = text.find(closing, m.end())
                end = n if end < 0 else end + len(closing)
                blank(i, end)
                i = end
            elif c in "bc" and text.startswith('"', i + 1):
                i = skip_string(text, i + 1, blank)
            elif c == "b" and text.startswith("'", i + 1):
                m = char_literal.match(text, i + 1)
                if m:
                    blank(i, m.end())
                    i = m.end()
                else:
                    i += 1
            else:
                i += 1
        elif c == '"':
            i = skip_string(text, i, blank)
        elif c == "'":
            m = char_literal.match(text, i)
            if m:
                blank(i, m.end())
                i = m.end()
            else:  # a lifetime or a label
                i += 1
        else:
            i += 1
    return "".join(out)


def skip_string(text, start, blank):
    """Blanks the string literal opening at `start` (a `"`); returns its end."""
    j, n = start + 1, len(text)
    while j < n:
        if text[j] == "\\":
            j += 2
        elif text[j] == '"':
            j += 1
            break
        else:
            j += 1
    blank(start, j)
    return j


def matching_brace(text, open_at):
    depth = 0
    for j in range(open_at, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(text) - 1


def unraw(name):
    return name[2:] if name.startswith("r#") else name


# ---------------------------------------------------------------- modules


class Module:
    def __init__(self, path, file, code, child_dir):
        self.path = path  # tuple of names; () is the crate root
        self.file = file
        self.code = code  # this module's code only (children blanked), offsets as in the file
        self.child_dir = child_dir
        self.children = {}
        self.imports = {}  # bound name -> (segments, line)
        self.globs = []  # (segments, line)
        self.items = set()

    def name(self):
        return "crate" if not self.path else "crate::" + "::".join(self.path)


MOD_DECL = re.compile(r"\bmod\s+(" + IDENT + r")\s*([;{])")
ITEM_DEF = re.compile(
    r"\b(?:fn|struct|enum|trait|type|const|static|union|macro_rules\s*!)\s+(" + IDENT + r")"
)


def load_crate(root_file):
    """Every module of the crate rooted at `root_file`, by path."""
    modules = {}
    with open(root_file, encoding="utf-8") as f:
        raw = f.read()
    load_module((), root_file, strip_code(raw), os.path.dirname(root_file), modules)
    return modules


def load_module(path, file, code, child_dir, modules):
    """Registers the module `path` whose code is `code` (of `file`); loads its
    children, inline and in files."""
    code = list(code)
    text = "".join(code)
    children = []
    pos = 0
    while True:
        m = MOD_DECL.search(text, pos)
        if not m:
            break
        name = unraw(m.group(1))
        if m.group(2) == "{":
            open_at = m.end() - 1
            close_at = matching_brace(text, open_at)
            inner = [" " if ch != "\n" else "\n" for ch in text]
            inner[open_at + 1 : close_at] = text[open_at + 1 : close_at]
            children.append((name, file, "".join(inner), os.path.join(child_dir, name)))
            for k in range(open_at + 1, close_at):
                if code[k] != "\n":
                    code[k] = " "
            text = "".join(code)
            pos = close_at + 1
        else:
            candidates = [
                os.path.join(child_dir, name + ".rs"),
                os.path.join(child_dir, name, "mod.rs"),
            ]
            found = next((c for c in candidates if os.path.isfile(c)), None)
            if found is None:
                print(f"warning: {file}: no file for `mod {name};`", file=sys.stderr)
            else:
                with open(found, encoding="utf-8") as f:
                    child_code = strip_code(f.read())
                if os.path.basename(found) == "mod.rs":
                    grand_dir = os.path.dirname(found)
                else:
                    grand_dir = os.path.join(child_dir, name)
                children.append((name, found, child_code, grand_dir))
            pos = m.end()
    module = Module(path, file, "".join(code), child_dir)
    modules[path] = module
    for name, child_file, child_code, grand_dir in children:
        module.children[name] = path + (name,)
        load_module(path + (name,), child_file, child_code, grand_dir, modules)
    module.items = {unraw(m.group(1)) for m in ITEM_DEF.finditer(module.code)}
    return module


# ---------------------------------------------------------------- use trees

USE_DECL = re.compile(r"\buse\s+([^;]*);")
TOKEN = re.compile(r"::|[{},*]|" + IDENT)


def parse_use_tree(tree_text):
    """The leaves of a use tree: (segments, bound name or '*')."""
    tokens = [unraw(t) for t in TOKEN.findall(tree_text)]
    leaves = []

    def tree(i, prefix):
        segments = list(prefix)
        if i < len(tokens) and tokens[i] == "::":  # `use ::x` (an external crate)
            i += 1
            segments.append("::")
        while i < len(tokens):
            t = tokens[i]
            if t == "{":
                i += 1
                while i < len(tokens) and tokens[i] != "}":
                    i = tree(i, segments)
                    if i < len(tokens) and tokens[i] == ",":
                        i += 1
                return i + 1
            if t == "*":
                leaves.append((segments, "*"))
                return i + 1
            if t in (",", "}"):
                return i
            if t == "::":
                i += 1
                continue
            segments = segments + [t]
            i += 1
            if i < len(tokens) and tokens[i] == "as":
                alias = tokens[i + 1] if i + 1 < len(tokens) else "_"
                leaves.append((leaf_path(segments), alias))
                return i + 2
            if i >= len(tokens) or tokens[i] in (",", "}"):
                path = leaf_path(segments)
                leaves.append((path, path[-1] if path else "self"))
                return i
        return i

    tree(0, [])
    return leaves


def leaf_path(segments):
    """`a::b::self` names `a::b`."""
    if segments and segments[-1] == "self" and len(segments) > 1:
        return segments[:-1]
    return segments


def line_of(text, offset):
    return text.count("\n", 0, offset) + 1


def collect_imports(modules):
    for module in modules.values():
        for m in USE_DECL.finditer(module.code):
            line = line_of(module.code, m.start())
            for segments, bound in parse_use_tree(m.group(1)):
                if not segments or segments[0] == "::":
                    continue
                if bound == "*":
                    module.globs.append((segments, line))
                elif bound != "_":
                    module.imports[bound] = (segments, line)


# ---------------------------------------------------------------- resolution


def resolve(modules, here, segments, depth=0):
    """The module that defines what `segments` names when written in module
    `here`, or None for something outside the crate."""
    if depth > 16 or not segments:
        return None
    module = modules[here]
    first, rest = segments[0], segments[1:]
    if first == "crate":
        at = ()
    elif first == "self":
        at = here
    elif first == "super":
        at = here
        while segments and segments[0] == "super":
            if not at:
                return None
            at = at[:-1]
            segments = segments[1:]
        rest = segments
    elif first in module.children:
        at = module.children[first]
    elif first in module.imports and module.imports[first][0] != segments:
        target = resolve_import(modules, here, first, depth)
        if target is None:
            return None
        at, rest = target, rest
        if not rest:
            return at
    else:
        return None
    return walk(modules, at, rest, depth)


def walk(modules, at, rest, depth):
    """Follows `rest` from module `at` through child modules and re-exports."""
    for i, name in enumerate(rest):
        module = modules[at]
        if name in module.children:
            at = module.children[name]
            continue
        if name in module.items:
            return at
        if name in module.imports:
            target = resolve_import(modules, at, name, depth)
            if target is None:
                return at
            return walk(modules, target, rest[i + 1 :], depth + 1)
        for glob, _ in module.globs:
            source = resolve(modules, at, glob, depth + 1)
            if source is not None and source != at:
                inner = modules[source]
                if name in inner.children or name in inner.items or name in inner.imports:
                    return walk(modules, source, rest[i:], depth + 1)
        return at
    return at


def resolve_import(modules, here, name, depth):
    segments, _ = modules[here].imports[name]
    return resolve(modules, here, segments, depth + 1)


MACRO_DEF = re.compile(r"\bmacro_rules\s*!\s*(" + IDENT + r")")
MACRO_USE = re.compile(r"(?<![A-Za-z0-9_$:])(" + IDENT + r")\s*!\s*[(\[{]")

CODE_PATH = re.compile(
    r"(?<![A-Za-z0-9_$])((?:" + IDENT + r")(?:\s*::\s*(?:" + IDENT + r"|\*))+)"
)
VISIBILITY_IN = re.compile(r"\bpub\s*\(\s*in\s+[^)]*\)|\bpub\s*\(\s*(?:crate|super|self)\s*\)")


def dependencies(modules):
    """(from, to) -> first reference (file, line, text)."""
    edges = {}
    macros = {}
    for here, module in modules.items():
        for m in MACRO_DEF.finditer(module.code):
            macros.setdefault(unraw(m.group(1)), set()).add(here)

    def add(src, dst, module, line, what):
        if dst is None or dst == src:
            return
        # A module's own descendants are part of what a reference inside it
        # points to only when named; ancestors are real dependencies.
        edges.setdefault((src, dst), (module.file, line, what))

    for here, module in modules.items():
        for bound, (segments, line) in module.imports.items():
            add(here, resolve(modules, here, segments), module, line, "use " + "::".join(segments))
        for segments, line in module.globs:
            add(here, resolve(modules, here, segments), module, line, "use " + "::".join(segments) + "::*")
        code = USE_DECL.sub(lambda m: " " * len(m.group(0)), module.code)
        code = VISIBILITY_IN.sub(lambda m: " " * len(m.group(0)), code)
        for m in CODE_PATH.finditer(code):
            segments = [unraw(s.strip()) for s in m.group(1).split("::")]
            segments = [s for s in segments if s != "*"]
            first = segments[0]
            if first not in PATH_ROOTS and first not in module.children:
                continue
            add(here, resolve(modules, here, segments), module, line_of(module.code, m.start()), "::".join(segments))
        for m in MACRO_USE.finditer(code):
            definers = macros.get(unraw(m.group(1)), set())
            if len(definers) == 1 and here not in definers:
                add(here, next(iter(definers)), module, line_of(module.code, m.start()), m.group(1) + "!")
    return edges


# ---------------------------------------------------------------- cycles


def strongly_connected(nodes, edges):
    graph = {n: [] for n in nodes}
    for src, dst in edges:
        graph[src].append(dst)
    index, low, on_stack, stack, result = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        # Iterative Tarjan, so deep module trees do not hit the recursion limit.
        work = [(v, iter(sorted(graph[v])))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    advanced = True
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == node:
                        break
                result.append(sorted(component))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return result


def check_root(root_file, base, show_edges):
    modules = load_crate(root_file)
    collect_imports(modules)
    edges = dependencies(modules)
    components = [c for c in strongly_connected(modules.keys(), edges) if len(c) > 1]
    label = os.path.relpath(root_file, base)
    if show_edges:
        for (src, dst), (file, line, what) in sorted(edges.items()):
            where = os.path.relpath(file, base)
            print(f"  {modules[src].name()} -> {modules[dst].name()}  ({where}:{line}: {what})")
    if not components:
        print(f"{label}: {len(modules)} modules, {len(edges)} dependencies, no cycle")
        return False
    print(f"{label}: {len(modules)} modules, {len(edges)} dependencies, {len(components)} cycle(s)")
    for component in sorted(components):
        members = set(component)
        names = ", ".join(modules[p].name() for p in component)
        print(f"  cycle of {len(component)}: {names}")
        for (src, dst), (file, line, what) in sorted(edges.items()):
            if src in members and dst in members:
                where = os.path.relpath(file, base)
                print(f"    {modules[src].name()} -> {modules[dst].name()}  ({where}:{line}: {what})")
    return True


def main(argv):
    args = argv[1:]
    show_edges = "--edges" in args
    args = [a for a in args if a != "--edges"]
    if not args or any(a.startswith("-") for a in args):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    found_cycle = False
    base = os.getcwd()
    for src in args:
        roots = [os.path.join(src, r) for r in ("lib.rs", "main.rs") if os.path.isfile(os.path.join(src, r))]
        if not roots:
            print(f"error: {src} has no lib.rs or main.rs", file=sys.stderr)
            return 2
        for root in roots:
            found_cycle |= check_root(root, base, show_edges)
    return 1 if found_cycle else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
