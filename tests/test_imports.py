"""The package's layers only look down: no import cycle among retinanet's modules, and evaluation is
pure numpy/scipy (no torch, no model, engine or command-line code)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "retinanet"
# What evaluation must never reach: the model, the loops that run it, and argparse helpers.
ABOVE_EVALUATION = {
    "retinanet.model", "retinanet.anchors", "retinanet.box_coder", "retinanet.matcher", "retinanet.losses",
    "retinanet.postprocess", "retinanet.frozen_batchnorm", "retinanet.hub", "retinanet.export",
    "retinanet.engine", "retinanet.training", "retinanet.validation", "retinanet.validation_scripts",
    "retinanet.distributed", "retinanet.cli",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> "tuple[set, set]":
    """(retinanet modules, other top-level packages) that module ``name`` imports anywhere in its code,
    function bodies included."""
    ours, others = set(), set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # "from retinanet.data import dataset" imports the submodule when there is one
            targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "retinanet" or target.startswith("retinanet."):
                ours.add(target)
            else:
                others.add(target.split(".")[0])
    return ours, others


GRAPH = {name: imports_of(name)[0] for name in MODULES}


def find_cycle():
    state = {}

    def visit(name, path):
        state[name] = "open"
        for target in sorted(GRAPH[name]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target in MODULES and target not in state:
                found = visit(target, path + [target])
                if found:
                    return found
        state[name] = "done"
        return None

    for name in sorted(MODULES):
        if name not in state:
            found = visit(name, [name])
            if found:
                return found
    return None


def test_the_walk_sees_function_level_imports_and_the_package():
    assert len(MODULES) > 30 and "retinanet.evaluation.voc" in MODULES
    assert "retinanet.checkpoint" in GRAPH["retinanet.model"]  # imported at the top of model.py
    assert "retinanet.evaluation.matching" in GRAPH["retinanet.evaluation.voc"]


def test_no_import_cycle():
    assert find_cycle() is None, " -> ".join(find_cycle())


def test_evaluation_imports_no_model_engine_or_cli_code_and_no_torch():
    for name in sorted(MODULES):
        if name.startswith("retinanet.evaluation"):
            ours, others = imports_of(name)
            assert not ours & ABOVE_EVALUATION, (name, sorted(ours & ABOVE_EVALUATION))
            assert "torch" not in others and "torchvision" not in others, name


def test_the_checkpoint_layer_knows_no_model_code():
    for name in ("retinanet.checkpoint", "retinanet.state_dicts"):
        ours, _ = imports_of(name)
        assert not ours & {"retinanet.model", "retinanet.hub"}, name
