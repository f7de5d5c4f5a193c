"""The layout stays true: imports point down, as DESIGN.md's Layout draws them, read from the source by `ast`:

data/                    imports nothing of ours
agent/                   data/
world_model/model/       data/
world_model/training/    model/ (and evaluation/: an ablation judges each variant with the yardstick)
world_model/evaluation/  model/
world_model/cli.py       wires them; nothing in world_model/ imports agent/ or play/
play/                    the three above
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data", "agent", "world_model", "play")

# Where a module lives -> what it must not import. The longest matching prefix of a module's name rules.
UP = ("world_model.cli", "agent", "play")  # what sits above the three stages
FORBIDDEN = {
    "data": ("agent", "world_model", "play"),
    "agent": ("world_model", "play"),
    "world_model": ("agent", "play"),
    "world_model.model": ("world_model.training", "world_model.evaluation", *UP),
    "world_model.training": UP,
    "world_model.evaluation": ("world_model.training", *UP),
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a source file, at any depth (imports inside functions too); `from a
    import b` gives a, then a.b (b may be a module)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def wrong_arrows(root: Path) -> list[str]:
    """Every import under `root` that points the wrong way, as 'file:line: importer -> imported'."""
    wrong = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            rule = max((p for p in FORBIDDEN if _within(name, p)), key=len, default=None)
            if rule is None:
                continue
            seen = set()
            for line, module in imports_of(path):
                if line not in seen and any(_within(module, banned) for banned in FORBIDDEN[rule]):
                    seen.add(line)  # one line, one arrow: `from a.b import c` names a.b, not also a.b.c
                    wrong.append(f"{path.relative_to(root)}:{line}: {name} -> {module}")
    return wrong


def test_imports_point_down():
    assert wrong_arrows(ROOT) == []


def test_every_module_of_world_model_is_in_a_stage_or_on_top():
    """A new file lands in model/, training/ or evaluation/; only the CLI sits on top of them."""
    top = sorted(p.name for p in (ROOT / "world_model").glob("*.py"))
    assert top == ["__init__.py", "cli.py"]
    stages = sorted(p.name for p in (ROOT / "world_model").iterdir() if (p / "__init__.py").exists())
    assert stages == ["evaluation", "model", "training"]


def test_an_arrow_the_wrong_way_is_found(tmp_path):
    """The rule itself: the model importing evaluation (also lazily, inside a function), and world_model
    importing play, are each named with their file and line; an arrow down is not."""
    for folder in ("data", "world_model/model", "world_model/evaluation", "world_model/training"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "data" / "actions.py").write_text("import numpy\n")
    (tmp_path / "world_model" / "model" / "warp.py").write_text(
        "from data.actions import ActionSpec\n\n\ndef f():\n    from world_model.evaluation import metrics\n"
    )
    (tmp_path / "world_model" / "training" / "loop.py").write_text(
        "import world_model.model.warp\nimport play.app\n"
    )
    (tmp_path / "world_model" / "evaluation" / "metrics.py").write_text(
        "from world_model.model import warp\n"
    )
    assert wrong_arrows(tmp_path) == [
        "world_model/model/warp.py:5: world_model.model.warp -> world_model.evaluation",
        "world_model/training/loop.py:2: world_model.training.loop -> play.app",
    ]
