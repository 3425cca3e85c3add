"""The package imports one way: app layers -> library -> core, so the layout reads top-down.

Checked on the source (every import statement, those inside functions included) without importing anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lower layers first. A module may import its own layer and the layers below it, never one above.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "core",
        (
            "mghft.errors",
            "mghft._lazy",
            "mghft.views",
            "mghft.config",
            "mghft.resources",
            "mghft.provenance",
            "mghft.console",
            "mghft.sqlite_rows",
            "mghft.filekinds",
            "mghft.jsonl",
            "mghft.selection",
        ),
    ),
    ("data", ("mghft.data", "mghft.losses", "mghft.evaluate", "mghft.stats", "mghft.calibration", "mghft.emoji")),
    ("hub", ("mghft.hub",)),
    ("models", ("mghft.models", "mghft.registry", "mghft.features", "mghft.export")),
    ("interpret", ("mghft.interpret",)),
    (
        "apps",
        (
            "mghft.train",
            "mghft.serve",
            "mghft.cli_args",
            "mghft.config_reference",
            "mghft.experiments",
            "mghft.precision",
            "mghft.fingerprint",
        ),
    ),
    ("scale", ("mghft.scale",)),
    ("demo", ("mghft.demo",)),
    ("cli", ("mghft.cli", "mghft.__main__")),
)
# Command modules (argparse + handlers) sit at the top whatever their package.
COMMAND_MODULES = ("mghft.models.cli", "mghft.interpret.cli", "mghft.train.cli", "mghft.serve.cli", "mghft.demo.cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every ``mghft`` module ``path`` imports (relative imports resolved; ``from a import b`` gives ``a``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
    return {m for m in found if m == "mghft" or m.startswith("mghft.")}


def layer(module: str) -> int:
    if module in COMMAND_MODULES:
        return len(LAYERS) - 1
    best, rank = "", -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, rank = prefix, i
    if module == "mghft":  # the package's front door: lazy names only
        return 0
    assert rank >= 0, f"{module} is in no layer: add it to LAYERS"
    return rank


MODULES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_go_down_the_layers(path: Path) -> None:
    me = module_name(path)
    upward = sorted(m for m in imports(path) if layer(m) > layer(me))
    assert not upward, f"{me} ({LAYERS[layer(me)][0]}) imports {upward} from a higher layer"


def test_hub_and_models_do_not_import_each_other_both_ways() -> None:
    hub = imports(SRC / "mghft" / "hub.py")
    assert not [m for m in hub if m.startswith(("mghft.models", "mghft.registry"))]
    factory = imports(SRC / "mghft" / "models" / "factory.py")
    assert "mghft.hub" in factory  # the direction kept: models use the hub


def test_only_the_entry_point_imports_the_top_level_cli() -> None:
    users = [module_name(p) for p in MODULES if "mghft.cli" in imports(p)]
    assert users == ["mghft.__main__"]


def test_serve_and_interpret_never_import_training() -> None:
    for path in MODULES:
        me = module_name(path)
        if me.startswith(("mghft.serve", "mghft.interpret")) and me not in COMMAND_MODULES:
            assert not [m for m in imports(path) if m.startswith("mghft.train")], me


def test_the_package_front_door_is_lazy() -> None:
    assert imports(SRC / "mghft" / "__init__.py") <= {"mghft._lazy"}
