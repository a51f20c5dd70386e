"""The house rules of docs/architecture.md, checked on the code: no module of ``school`` imports
another in a circle (imports inside functions count), and no import runs from a lower layer up."""
import ast
import fnmatch
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "school"

FOUNDATION, MODELS, COUNTERS, DOMAIN, CONSUMER, READ, WEB = range(7)
LAYER_NAMES = ("foundation", "models", "counters and cache", "domain", "consumer wiring", "read side",
               "web and command line")

# First match wins: the specific names before the packages they sit in (as docs/architecture.md lists them).
RULES = (
    ("school", WEB),  # the factory
    ("school.*.views", WEB), ("school.*.api", WEB), ("school.*.cli", WEB), ("school.api.*", WEB), ("school.auth.login", WEB), ("school.auth.decorators", WEB),
    ("school.dev.*", WEB), ("school.devserver", WEB), ("school.cli", WEB), ("school.templating", WEB),
    ("school.ops.*", READ), ("school.health.*", READ), ("school.admin.*", READ),
    ("school.*.tasks", CONSUMER), ("school.consumer", CONSUMER),
    ("school.models", MODELS), ("school.*.models", MODELS),
    ("school.notify.*", DOMAIN), ("school.family.*", DOMAIN), ("school.bounces.*", DOMAIN), ("school.roster.*", DOMAIN), ("school.events.*", DOMAIN), ("school.auth.*", DOMAIN),
    ("school.counters.*", COUNTERS), ("school.caching.*", COUNTERS),
    ("school.*", FOUNDATION),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> dict[str, int]:
    """Every module of ``known`` that ``name`` imports, anywhere in the file, with the first line.

    ``from x import y`` imports the module ``x.y`` when there is one, else the module ``x``.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            dotted = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            dotted = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in dotted:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.setdefault(target, node.lineno)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    modules = all_modules()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def layer_of(module: str) -> int:
    for pattern, layer in RULES:
        if fnmatch.fnmatchcase(module, pattern):
            return layer
    raise AssertionError(f"{module} is in no layer")


def test_the_checker_finds_imports_inside_functions():
    """The checks below would pass on anything if the reader missed imports; make sure it does not."""
    graph = import_graph()
    assert "school.notify.schedule" in graph["school.events.services"]
    assert "school.notify.delivery" in graph["school.notify.recovery"]
    # devserver builds the app inside a function: that import is read too.
    assert "school" in graph["school.devserver"]


def test_no_import_cycles():
    sorter = graphlib.TopologicalSorter({name: set(imports) for name, imports in import_graph().items()})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        pytest.fail("import cycle: " + " -> ".join(exc.args[1]))


def test_no_import_runs_from_a_lower_layer_up():
    upward = [
        f"{module} ({LAYER_NAMES[layer_of(module)]}) imports {target} ({LAYER_NAMES[layer_of(target)]}) on line {line}"
        for module, imports in import_graph().items() for target, line in imports.items()
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []
