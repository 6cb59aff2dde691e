"""The package's layers hold: no import cycles, services free of Flask and XML, configuration free
of the services, and a public API that exports every error."""
from __future__ import annotations

import ast
import inspect
import os
import pathlib
import subprocess
import sys

import flask_openadr
from flask_openadr import errors

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flask_openadr"

# Import cycles still to be removed; any other cycle fails the test. Delete an entry when its
# cycle is gone.
KNOWN_CYCLES: list[set[str]] = []


def module_names() -> dict[str, pathlib.Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: pathlib.Path, known: dict[str, pathlib.Path]) -> set[str]:
    """The package's modules that ``name`` imports when it is loaded: module-level imports only
    (not those inside functions or under ``if TYPE_CHECKING``), with the packages a dotted
    import loads first, but not ``name``'s own parent packages (Python loads those before it)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            base = name.split(".") if is_package else name.split(".")[:-1]
            if node.level:
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + (node.module.split(".") if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                full = f"{module}.{alias.name}"
                targets.append(full if full in known else module)
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        for target in targets:
            if target not in known:
                continue
            parts = target.split(".")
            for end in range(2, len(parts) + 1):
                found.add(".".join(parts[:end]))
    return {m for m in found if m != name and not name.startswith(m + ".")}


def import_graph() -> dict[str, set[str]]:
    known = module_names()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [{"a", "b", "c"}]


def test_no_import_cycle_beyond_the_known_ones():
    found = cycles(import_graph())
    assert [c for c in found if c not in KNOWN_CYCLES] == []


def test_services_know_no_flask_no_xml_and_no_codec():
    graph = import_graph()
    source = {name: module_names()[name].read_text(encoding="utf-8") for name in graph}
    for name in graph:
        if not name.startswith("flask_openadr.services"):
            continue
        assert not any(m.startswith(("flask_openadr.codec", "flask_openadr.views",
                                     "flask_openadr.extension", "flask_openadr.runtime"))
                       for m in graph[name]), name
        tree = ast.parse(source[name])
        third_party = {alias.name.split(".")[0] for node in ast.walk(tree)
                       if isinstance(node, ast.Import) for alias in node.names}
        third_party |= {node.module.split(".")[0] for node in ast.walk(tree)
                        if isinstance(node, ast.ImportFrom) and not node.level and node.module}
        assert not third_party & {"flask", "werkzeug", "lxml"}, name


def test_the_configuration_does_not_import_the_services():
    graph = import_graph()
    assert not any(m.startswith("flask_openadr.services") for m in graph["flask_openadr.config"])
    assert not any(m.startswith("flask_openadr.services")
                   for m in graph["flask_openadr.protocol"] | graph["flask_openadr.errors"])


# Each module imported first in a clean interpreter state: the package object is made without
# running flask_openadr/__init__.py (which would always import the extension first), so a cycle
# that breaks only in some import order shows up.
IMPORT_EACH = """
import importlib, importlib.util, sys, traceback, types
names = sys.argv[1:]
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m.split(".")[0] == "flask_openadr"]:
        del sys.modules[loaded]
    spec = importlib.util.find_spec("flask_openadr")
    package = types.ModuleType("flask_openadr")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["flask_openadr"] = package
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc(limit=-3))
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_first_on_its_own():
    names = sorted(n for n in module_names() if n != "flask_openadr")
    done = subprocess.run([sys.executable, "-c", IMPORT_EACH, *names], capture_output=True,
                          text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stdout + done.stderr
    whole = subprocess.run([sys.executable, "-c", "import flask_openadr"], capture_output=True,
                           text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert whole.returncode == 0, whole.stderr


def test_every_error_is_exported_from_the_package():
    classes = {name for name, value in inspect.getmembers(errors, inspect.isclass)
               if issubclass(value, errors.OpenADRError) and value.__module__ == errors.__name__}
    assert "MalformedMessage" in classes and "Unidentified" in classes
    assert classes <= set(flask_openadr.__all__)
    assert all(getattr(flask_openadr, name) is getattr(errors, name) for name in classes)


def test_the_services_answer_every_payload_the_protocol_pairs():
    from flask_openadr import protocol, services

    assert set(services.SERVICES) == set(protocol.SERVICE_NAMES)
    # Every payload a VEN may send has a service and a paired reply, and nothing else does.
    assert set(services.SERVICE_OF) == set(protocol.PAIRED_REPLY)
    assert protocol.reply_name("oadrRequestReregistration") == "oadrResponse"
