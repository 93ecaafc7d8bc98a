"""The package's layers run one way: the library never imports a command, no modules import
each other in a loop, and imports are written out (no importlib strings hiding the graph).

Read with `ast` from the source files, so the check needs nothing installed and sees imports inside
functions too (a lazy import is still a dependency).
"""
import ast
from pathlib import Path

from golden import REPO

PACKAGE = REPO / "tinyprompt"
ROOTS = {"tinyprompt": PACKAGE, "tinyprompt.kernels": REPO / "kernels"}  # setup.py's package_dir


def modules() -> dict[str, Path]:
    """Dotted module name -> source file, for the package and the kernels it installs."""
    found = {}
    for root_name, root in ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([root_name, *parts])] = path
    return found


def imported(name: str, path: Path, known) -> set[str]:
    """The package modules that module `name` imports (absolute or relative, anywhere in the file)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {t for t in targets if t in known and t != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def is_command(name: str) -> bool:
    return name == "tinyprompt.commands" or name.startswith("tinyprompt.commands.")


def test_the_library_never_imports_a_command():
    leaks = {name: sorted(filter(is_command, deps)) for name, deps in graph().items() if not is_command(name)}
    leaks = {name: deps for name, deps in leaks.items() if deps and name != "tinyprompt.__main__"}
    assert not leaks, f"library modules importing commands: {leaks}"


def test_no_import_cycles():
    edges = graph()
    for name in edges:  # every package imports its own __init__ first: a parent package is no cycle edge
        edges[name] = {d for d in edges[name] if not name.startswith(d + ".")}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(edges[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_are_static():
    """No importlib string imports of our own modules: every dependency is an import statement a reader (and this
    test) can see. importlib stays for an optional third-party package named outright (e.g. "triton")."""
    hidden = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
                arg = node.args[0] if node.args else None
                if not (isinstance(arg, ast.Constant) and not str(arg.value).startswith("tinyprompt")):
                    hidden.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not hidden, f"importlib imports of our modules, by string: {hidden}; write the import out"
