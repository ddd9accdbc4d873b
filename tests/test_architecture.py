"""The architecture stays visible: imports inside lcgen only point down the line of stages

    base (errors, config, io, workers) → sources (simulate, ingest) → features →
    models (with masking) → train (trainer, data, distributed) → uses of a trained run (evaluate, fill,
    embed, bundled) → plots → cli (demo).

Every import counts, also the ones deferred into functions. A new top-level module must be given a
stage here, which is the point: it makes the author say where it belongs."""

import ast
from pathlib import Path

import pytest

import lcgen

STAGES = ["base", "sources", "features", "models", "train", "uses", "plots", "cli"]
STAGE_OF = {
    "__version__": "base", "errors": "base", "config": "base", "io": "base", "workers": "base",
    "simulate": "sources", "ingest": "sources",
    "features": "features",
    "masking": "models", "models": "models",
    "train": "train",
    "evaluate": "uses", "fill": "uses", "embed": "uses", "bundled": "uses",
    "plots": "plots",
    "cli": "cli", "demo": "cli", "__main__": "cli",
}
PACKAGE = Path(lcgen.__file__).parent


def top_level(dotted: str) -> str:
    """``lcgen.features.preprocess`` -> ``features``."""
    return dotted.split(".")[1]


def lcgen_imports(path: Path) -> list[str]:
    """Every ``lcgen.*`` module (or name) a file imports, at any depth of the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "lcgen":
                found += [f"lcgen.{a.name}" for a in node.names]
            elif node.module.startswith("lcgen."):
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("lcgen.")]
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_module_has_a_stage():
    names = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in MODULES}
    assert names - STAGE_OF.keys() == set(), "give each new top-level module a stage in STAGE_OF"
    assert {"simulate", "ingest", "features", "models", "train", "evaluate", "embed"} <= names  # the stage subpackages exist


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    here = STAGES.index(STAGE_OF[path.relative_to(PACKAGE).parts[0].removesuffix(".py")])
    upward = [m for m in lcgen_imports(path) if STAGES.index(STAGE_OF[top_level(m)]) > here]
    assert upward == [], f"{path.name} ({STAGES[here]}) imports from a later stage: {upward}"


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from lcgen.train.trainer import fit\n    import lcgen.cli\n")
    assert lcgen_imports(bad) == ["lcgen.train.trainer", "lcgen.cli"]
    assert STAGES.index(STAGE_OF[top_level("lcgen.cli")]) > STAGES.index("train")
