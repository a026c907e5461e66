"""The structure a newcomer relies on, checked from the source.

- No import cycles among our packages, counting imports inside functions (imports under
  `if TYPE_CHECKING:` are for type checkers only and are not counted).
- `storage` imports nothing from `bot`; `agent` imports nothing from `bot` or `storage`.
- `bot/` writes no SQL: it imports no query constructs from SQLAlchemy.
- Only the lifecycle (bot/requests/) changes requests or queues dispatches.
- Services carry no untyped `extras` dictionary.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator
from pathlib import Path

from bot.services import Services

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "storage", "agent")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(module: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """The modules of ours that `module` imports, with the line (anywhere in the file)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            # The most specific module of ours the name refers to.
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                yield name, node.lineno


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: {dep for dep, _ in _imports(m, p, known)} for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for dep in graph.get(node, ()):
            # A package's __init__ importing its own submodules is how packages are made,
            # and a submodule "importing" its parent package is implicit: neither is a cycle.
            if dep.startswith(node + ".") or node.startswith(dep + "."):
                continue
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_storage_imports_nothing_from_bot_and_agent_nothing_of_ours() -> None:
    graph = _graph()
    for module, deps in graph.items():
        if module.startswith("storage"):
            assert not [d for d in deps if d.startswith("bot")], module
        if module.startswith("agent"):
            assert not [d for d in deps if d.split(".")[0] in ("bot", "storage")], module


# SQLAlchemy names bot/ may use: session and engine types to pass around, and the URL type.
ALLOWED_SQLALCHEMY = {"AsyncSession", "AsyncEngine", "async_sessionmaker", "URL"}


def test_bot_writes_no_sql() -> None:
    offenders = []
    for module, path in _modules().items():
        if not module.startswith("bot"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(
                a.name.startswith("sqlalchemy") for a in node.names
            ):
                offenders.append(f"{module}:{node.lineno}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                extra = {a.name for a in node.names} - ALLOWED_SQLALCHEMY
                if extra:
                    offenders.append(f"{module}:{node.lineno} {sorted(extra)}")
    assert offenders == []


# Methods that change a request, or queue work for the runner.
WRITERS = {"update_status", "update_fields", "record_retry", "enqueue_dispatch", "add_message"}


def test_only_the_lifecycle_changes_requests() -> None:
    offenders = []
    for module, path in _modules().items():
        if not module.startswith("bot") or module.startswith("bot.requests"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
                if name in WRITERS:
                    offenders.append(f"{module}:{node.lineno} {name}")
    assert offenders == []


def test_services_have_no_untyped_extras() -> None:
    assert "extras" not in {f.name for f in dataclasses.fields(Services)}


def test_the_checks_see_a_cycle_and_a_writer() -> None:
    # The checks themselves can fail: a planted cycle is found, and so is a planted writer.
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    call = ast.parse("repo.update_status(x)").body[0]
    assert isinstance(call, ast.Expr) and isinstance(call.value, ast.Call)
    assert getattr(call.value.func, "attr", None) in WRITERS
