"""The layering of engine/, written down and held: stages import only stages below them
(data < model < serving < evaluation < training), the top-level entry modules may use any
stage, no module imports itself in a circle, and the modules the dashboard lists runs
with (config, runs) never import TensorFlow. An import inside a function must not be how
a rule is dodged: imports anywhere in a file count."""

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["data", "model", "serving", "evaluation", "training"]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("engine"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("engine"))
    return found


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_stages_import_only_stages_below_them():
    wrong = []
    for path in (ROOT / "engine").rglob("*.py"):
        parts = path.relative_to(ROOT / "engine").parts
        if len(parts) < 2 or parts[0] not in ORDER:
            continue  # top-level modules (entry points, config, runs) sit above the stages
        stage = ORDER.index(parts[0])
        for name in _imports(path):
            target = name.split(".")
            if len(target) > 1 and target[1] in ORDER and ORDER.index(target[1]) > stage:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "upward imports:\n" + "\n".join(sorted(wrong))


def test_no_import_circle_between_modules():
    modules = {_module(p): p for p in (ROOT / "engine").rglob("*.py")}
    graph = defaultdict(set)
    for name, path in modules.items():
        for target in _imports(path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + ".") and target != "engine":
                graph[name].add(target)
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in list(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_run_listing_modules_stay_free_of_tensorflow():
    code = "import sys, engine.config, engine.runs; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == "False", result.stderr


def test_every_entry_main_answers_help():
    for verb in ("train", "cv", "launch", "evaluate", "predict", "audit", "health", "report", "shortcuts",
                 "refer", "map"):
        result = subprocess.run([sys.executable, "-m", f"engine.{verb}", "--help"], capture_output=True,
                                text=True, cwd=ROOT, timeout=120)
        assert result.returncode == 0 and "usage" in result.stdout.lower(), (verb, result.stderr[-500:])


HEAVY = {"tensorflow", "keras", "sklearn", "scipy", "faiss", "pydicom", "nibabel", "openTSNE"}


def _loads_at_import() -> dict[str, set[str]]:
    """Each engine module's heavy libraries (HEAVY) loaded by importing it: its own
    module-level imports, and those of the engine modules it imports, transitively."""
    modules = {_module(p): p for p in (ROOT / "engine").rglob("*.py")}
    direct, heavy = {}, {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        targets, roots = set(), set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                node.body = []  # a function's imports run when it is called, not at import
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for full in names:
                roots.add(full.split(".")[0])
                while full and full not in modules:
                    full = full.rpartition(".")[0]
                if full:
                    targets.add(full)
        # a package's __init__ runs before any of its modules
        parts = name.split(".")
        targets.update(".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in modules)
        direct[name] = (targets - {name}, roots & HEAVY)

    def closure(name, seen):
        if name in heavy:
            return heavy[name]
        seen = seen | {name}
        found = set(direct[name][1])
        for target in direct[name][0]:
            if target not in seen:
                found |= closure(target, seen)
        return found

    for name in modules:
        heavy[name] = closure(name, set())
    return heavy


def test_imports_inside_functions_only_keep_a_heavy_library_lazy():
    """An import inside a function is there to keep TensorFlow, scikit-learn, SciPy or an
    optional format or index library (pydicom, nibabel, faiss, openTSNE) from loading
    with a module that does not need it yet: the dashboard's pages and every engine
    verb's --help stay quick. Any other import belongs at the top of its module."""
    loads = _loads_at_import()
    modules = {_module(p): p for p in (ROOT / "engine").rglob("*.py")}
    needless = []
    for name, path in modules.items():
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and node.module:
                    # "from engine.data import pipeline" imports the module engine.data.pipeline
                    imported = [f"{node.module}.{a.name}" for a in node.names]
                    imported = [t if t in modules else node.module for t in imported]
                elif isinstance(node, ast.Import):
                    imported = [a.name for a in node.names]
                else:
                    continue
                brings = set()
                for target in imported:
                    if target.split(".")[0] == "engine":
                        while target and target not in modules:
                            target = target.rpartition(".")[0]
                        brings |= loads.get(target, set())
                    else:
                        brings |= {target.split(".")[0]} & HEAVY
                if not brings - loads[name]:
                    needless.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {target} "
                                    f"(nothing heavier than {name} already loads)")
    assert not needless, "\n".join(needless)
