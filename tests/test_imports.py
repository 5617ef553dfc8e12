"""The shape of the fcn_jax package, read from its source with ``ast`` (nothing is imported):
no import cycle among its modules, no module over 450 lines, no function over 80 lines."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "fcn_jax"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
# Known cycles (sets of modules), to be removed; each one is an exact cycle found today.
KNOWN_CYCLES: list[set[str]] = []
# Over the limits today, owned by ongoing work elsewhere: "module" or "module:function".
KNOWN_LONG: set[str] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node, at any depth, except under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _imports(node)


def _existing(dotted: str) -> str | None:
    """``dotted`` if it is a module of fcn_jax, else its longest prefix that is (or None)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in MODULES:
            return ".".join(parts[:n])
    return None


def _targets(name: str, node) -> set[str]:
    """The fcn_jax modules one import statement in module ``name`` runs, explicitly."""
    if isinstance(node, ast.Import):
        found = {_existing(a.name) for a in node.names}
        return found - {None}
    base = node.module or ""
    if node.level:  # relative: from the package of `name`
        package = name if _is_package(name) else name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}".rstrip(".")
    if _existing(base) is None:
        return set()
    out = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        # `from pkg import submodule` runs the submodule; `from pkg import name`, pkg itself.
        out.add(sub if sub in MODULES else _existing(base))
    return out


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """module -> the fcn_jax modules its imports run (inside functions too).

    Importing ``a.b.c`` also runs the packages ``a`` and ``a.b``; those a module lies in are
    already running when it runs, so they are edges only when named explicitly (``from a.b
    import name`` inside ``a.b``: a real cycle where ``a.b`` imports the module back)."""
    graph = {}
    for name, path in MODULES.items():
        edges = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            for target in _targets(name, node):
                if isinstance(node, ast.Import) and target in _parents(name):
                    continue  # `import pkg` of a running package only binds it
                edges.add(target)
                edges |= set(_parents(target)) - set(_parents(name)) - {name}
        graph[name] = edges - {name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a path back to its start) per strongly connected component that has one."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(_cycle_in(graph, component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def _cycle_in(graph, component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, within it."""
    start = min(component)
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(graph[path[-1]] & component):
            if w == start:
                return [*path, start]
            if w not in seen:
                seen.add(w)
                paths.append([*path, w])
    raise AssertionError(component)


def test_the_graph_sees_lazy_and_package_imports():
    graph = import_graph()
    assert "fcn_jax.data.tfds_source" in graph["fcn_jax.data.load"]  # inside load_dataset
    assert "fcn_jax.data.load" in graph["fcn_jax.data"]
    assert "fcn_jax.data" in graph["fcn_jax.predict"]  # runs the package's __init__ first
    assert "fcn_jax.data" not in graph["fcn_jax.data.load"]  # its own package: already running
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}) == [
        ["a", "b", "c", "a"]
    ]


def test_no_import_cycle():
    cycles = [c for c in find_cycles(import_graph()) if set(c) not in KNOWN_CYCLES]
    assert not cycles, "import cycle(s):\n" + "\n".join(" -> ".join(c) for c in cycles)


def _long_functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                yield node.name, node.lineno, lines


def test_modules_and_functions_are_short():
    over = []
    for name, path in MODULES.items():
        text = path.read_text()
        if (n := len(text.splitlines())) > MAX_MODULE_LINES and name not in KNOWN_LONG:
            over.append(f"{path}: {n} lines (at most {MAX_MODULE_LINES})")
        for fn, line, n in _long_functions(ast.parse(text, str(path))):
            if f"{name}:{fn}" not in KNOWN_LONG:
                over.append(f"{path}:{line}: {fn} is {n} lines (at most {MAX_FUNCTION_LINES})")
    assert not over, "\n".join(over)
