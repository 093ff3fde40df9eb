"""The package's layering: every module imports only its own wing and the wings below it
(README, "Where things are"). Reads the imports of every module with `ast`; runs nothing."""

import ast
from pathlib import Path

import export_pipelines

# Lowest first; a module may import its own wing and any wing before it.
WINGS = ["settings", "engine", "store", "cache", "orchestration", "definitions", "service", "api", "deploy", "cli"]
PACKAGE = Path(export_pipelines.__file__).parent


def _wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "export_pipelines" and len(parts) > 1 else None


def _imported_wings(path: Path) -> set[str]:
    wings = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            wings |= {_wing(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            wings.add(_wing(node.module))
            if node.module == "export_pipelines":
                wings |= {alias.name for alias in node.names}
    return wings - {None}


def test_every_wing_imports_only_itself_and_lower_wings() -> None:
    wrong_way = []
    modules = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)
    for path in modules:
        relative = path.relative_to(PACKAGE)
        own = relative.parts[0].removesuffix(".py")
        assert own in WINGS, f"{relative} belongs to no wing of the layout"
        for wing in _imported_wings(path):
            assert wing in WINGS, f"{relative} imports export_pipelines.{wing}, which is no wing"
            if WINGS.index(wing) > WINGS.index(own):
                wrong_way.append(f"{relative} imports the higher wing {wing}")
    assert wrong_way == []


def test_every_wing_says_what_it_holds_and_may_import() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "import" in doc, f"{init.relative_to(PACKAGE)} needs a docstring naming what it may import"
