"""The package's architecture: the engine and the training loop know nothing of the Bernoulli
method, and no module imports another that (directly or not) imports it back."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "minibern"


def _modules() -> dict:
    """``{dotted module name: path}`` of every module of the package."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(path: Path, modules: dict, top_level_only: bool = False) -> set:
    """The package modules ``path`` imports (``from a import b`` counts a.b when b is one)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return {name for name in found if name in modules}


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(path, modules) for name, path in modules.items()}
    state = {}  # name -> "open" while on the DFS stack, "done" after

    def visit(name, stack):
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycle = stack[stack.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, stack + [target])
        state[name] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_engine_and_training_do_not_import_the_method():
    modules = _modules()
    for name, path in modules.items():
        if name.startswith(("minibern.bernoulli", "minibern.cli")) or name == "minibern.__main__":
            continue
        imports = _imports(path, modules)
        method = sorted(i for i in imports if i.startswith(("minibern.bernoulli", "minibern.cli")))
        assert not method, f"{name} imports {method}"


def test_an_ungated_run_loads_no_module_of_the_method(tmp_path):
    code = f"""
import sys
from types import SimpleNamespace
import numpy as np
import minibern.training
from minibern.models import build_model
from minibern.training import TrainConfig, Trainer, device_splits, run_rngs

rng = np.random.default_rng(0)
def split(n):
    return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64)
(xt, yt), (xv, yv), (xs, ys) = split(200), split(50), split(50)
data = SimpleNamespace(train_images=xt, train_labels=yt, val_images=xv, val_labels=yv,
                       test_images=xs, test_labels=ys)
config = TrainConfig(model="lenet300", epochs=1, batch_size=50, width_mult=0.1)
net = build_model("lenet300", 0.1, seed=run_rngs(0)[0])
Trainer(net, device_splits(data, net.input_shape), config, log=lambda *_: None).fit({str(tmp_path)!r})
print(sorted(m for m in sys.modules if m.startswith("minibern.bernoulli")))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
