"""The package layout of docs/design.md, checked on the source (AST only, nothing imported):

- stages import one way, lower to higher never: _util < model < security < onnx < checkpoint < engines <
  export < verify < serving < cli; nothing imports cli;
- torch only where a model is built (model, checkpoint, export, verify) at module level; the torch-free
  stages never import it at module level (inside a function, behind an extra, is how they reach it).

Every import counts, module-level or inside a function, `import x` or `from x import y`, and also the
module names given to `importlib.import_module` and to the lazy tables of the stage ``__init__`` files.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "vitexport"
ORDER = ("_util", "model", "security", "onnx", "checkpoint", "engines", "export", "verify", "serving", "cli")
RANK = {stage: i for i, stage in enumerate(ORDER)}
TORCH_FREE = ("_util", "security", "onnx", "engines", "serving", "cli")
# Top-level modules outside the stage folders: the package's lazy public API and old public paths.
TOP_LEVEL = {"__init__": len(ORDER) - 1, "runtime": RANK["serving"], "batch": RANK["serving"]}


def _stage(module: str) -> str | None:
    """``vitexport.<stage>...`` -> stage; None for other packages and for the package root itself."""
    parts = module.split(".")
    if parts[0] != "vitexport" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in RANK else f"<top>{parts[1]}"


def _rank_of(path: Path) -> tuple[str, int]:
    rel = path.relative_to(PACKAGE)
    if len(rel.parts) == 1:
        return f"<top>{rel.stem}", TOP_LEVEL[rel.stem]
    return rel.parts[0], RANK[rel.parts[0]]


def _resolve(node: ast.ImportFrom, path: Path) -> str:
    if not node.level:
        return node.module or ""
    base = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    base = base[: len(base) - node.level]  # a package's __init__ counts as the package's own module
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(source: str, path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported module, at module level) for every import in ``source``, string-named ones included."""
    tree = ast.parse(source)
    top = {id(n) for n in tree.body} | {id(n) for s in tree.body if isinstance(s, (ast.If, ast.Try))
                                         for n in ast.walk(s)}
    found: list[tuple[int, str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(node, path)
            if module == "vitexport":  # `from vitexport import x`: x may be a subpackage
                found += [(node.lineno, f"vitexport.{a.name}" if a.name != "__version__" else "vitexport",
                           id(node) in top) for a in node.names]
            else:
                found.append((node.lineno, module, id(node) in top))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            found += [(node.lineno, a.value, False) for a in node.args[:1] if isinstance(a, ast.Constant)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("vitexport."):
            if all(part.isidentifier() for part in node.value.split(".")) and _stage(node.value) in RANK:
                found.append((node.lineno, node.value, False))  # a module named in a lazy table or registry
    return found


def violations(path: Path, source: str | None = None) -> list[str]:
    source = path.read_text() if source is None else source
    here, rank = _rank_of(path)
    out = []
    for line, module, module_level in imports_of(source, path):
        stage = _stage(module)
        where = f"{path.relative_to(PACKAGE.parent)}:{line}"
        if stage == "cli" and here != "cli":
            out.append(f"{where} imports {module}: nothing imports the CLI")
        elif stage in RANK and RANK[stage] > rank:
            out.append(f"{where} imports {module}: {here} is below {stage} ({' < '.join(ORDER)})")
        elif stage is not None and stage.startswith("<top>") and not here.startswith("<top>"):
            out.append(f"{where} imports {module}: stages import stages, not the top-level re-exports")
        if module_level and here in TORCH_FREE and module.split(".")[0] == "torch":
            out.append(f"{where} imports torch at module level: {here} is torch-free")
    return out


def test_every_stage_imports_only_lower_stages_and_torch_only_where_models_are_built() -> None:
    found = [v for path in sorted(PACKAGE.rglob("*.py")) for v in violations(path)]
    assert not found, "\n".join(found)


def test_every_module_lives_in_a_stage_folder() -> None:
    loose = [p.name for p in PACKAGE.glob("*.py") if p.stem not in TOP_LEVEL]
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert not loose and folders == set(ORDER), (loose, folders ^ set(ORDER))


@pytest.mark.parametrize(("where", "source", "expected"), [
    ("model/vit.py", "from vitexport.export.attention import ATTENTION_CHOICES\n", "model is below export"),
    ("_util/files.py", "def f():\n    from vitexport.model import config\n", "_util is below model"),
    ("security/sniff.py", "import importlib\nimportlib.import_module('vitexport.checkpoint.load')\n",
     "security is below checkpoint"),
    ("engines/ort.py", "from vitexport import verify\n", "engines is below verify"),
    ("serving/predictor.py", "import torch\n", "serving is torch-free"),
    ("verify/sweep.py", "from vitexport.cli.app import cli\n", "nothing imports the CLI"),
    ("onnx/spec.py", "from vitexport.runtime import Predictor\n", "not the top-level re-exports"),
    ("checkpoint/load.py", "from .. import export\n", "checkpoint is below export"),
])
def test_the_check_fails_on_a_new_back_edge(where: str, source: str, expected: str) -> None:
    """Each kind of back-edge, planted in a real module's place, is reported (the check can fail)."""
    found = violations(PACKAGE / where, source)
    assert any(expected in v for v in found), found


TOOLS = ("scripts", "benchmarks", "samples")


def tool_imports_of_tests(path: Path, source: str | None = None) -> list[str]:
    """Imports of the test suite (``tests``, ``tests.*``) in a tool's source."""
    found = imports_of(path.read_text() if source is None else source, path)
    return [f"{path.name}:{line} imports {module}" for line, module, _ in found
            if module == "tests" or module.startswith("tests.")]


def test_tools_use_library_code_never_tests() -> None:
    """scripts/, benchmarks/ and samples/ (the allowlist generator among them) import the library, not tests/."""
    root = PACKAGE.parent
    found = [v for tool in TOOLS for path in sorted((root / tool).rglob("*.py")) for v in tool_imports_of_tests(path)]
    assert not found, "\n".join(found)
    planted = "def configs():\n    from tests.helpers.models import CONFIGS\n"
    assert tool_imports_of_tests(root / "scripts" / "gen_torchscript_allowlist.py", planted)
