"""The package's layers only look down: no import cycle among retinanet's modules, every module imports
only from its own layer and the layers below it, and evaluation is pure numpy/scipy (no torch, no
model, engine or command-line code)."""
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


# Each layer: its modules (a name ending in ".*" covers a subpackage) and the layers it may import.
LAYERS = {
    "foundation": ({"retinanet", "errors", "io_utils", "coco_names"}, set()),
    "checkpoints": ({"checkpoint", "state_dicts"}, {"foundation"}),
    "modeling": ({"boxes", "anchors", "box_coder", "matcher", "losses", "postprocess", "frozen_batchnorm", "model"},
                 {"foundation", "checkpoints"}),
    "data": ({"data", "data.*"}, {"foundation"}),
    "evaluation": ({"evaluation", "evaluation.*"}, {"foundation", "data"}),
    "engine": ({"hub", "export", "precision", "distributed", "training", "engine", "validation"},
               {"foundation", "checkpoints", "modeling", "data", "evaluation"}),
    "interface": ({"cli", "validation_scripts", "plots", "visualization"},
                  {"foundation", "checkpoints", "modeling", "data", "evaluation", "engine"}),
}


def layer_of(name: str) -> str:
    short = name[len("retinanet."):] if name.startswith("retinanet.") else name
    for layer, (members, _) in LAYERS.items():
        if short in members or any(m.endswith(".*") and short.startswith(m[:-1]) for m in members):
            return layer
    raise AssertionError(f"{name} is in no layer: add it to LAYERS")


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


def upward_imports(graph) -> "list[str]":
    """Every import of a module from a layer it may not use, as readable lines."""
    found = []
    for name in sorted(graph):
        layer = layer_of(name)
        allowed = LAYERS[layer][1] | {layer}
        found += [f"{name} ({layer}) imports {target} ({layer_of(target)})"
                  for target in sorted(graph[name]) if layer_of(target) not in allowed]
    return found


def test_every_module_imports_only_its_own_layer_and_the_layers_below():
    assert not upward_imports(GRAPH), "\n".join(upward_imports(GRAPH))


def test_the_layer_rule_catches_upward_imports():
    graph = {"retinanet.evaluation.voc": {"retinanet.model", "retinanet.data.crowdhuman"},
             "retinanet.checkpoint": {"retinanet.hub"}, "retinanet.model": {"retinanet.checkpoint"}}
    assert upward_imports(graph) == [
        "retinanet.checkpoint (checkpoints) imports retinanet.hub (engine)",
        "retinanet.evaluation.voc (evaluation) imports retinanet.model (modeling)",
    ]


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
