"""The package's shape: no import cycles inside score_jax (imports through importlib counted), no private names
imported across modules, no module-level `__getattr__`, and a trained model's loader free of the objectives."""

import ast
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "score_jax"


def module_names():
  """`{dotted name: path}` of every module of the package (`__init__` files name their package)."""
  names = {}
  for path in PACKAGE.rglob("*.py"):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return names


def imports_of(path, modules):
  """Modules of the package that `path` imports anywhere in the file, with the names taken from them."""
  found = {}
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name in modules:
          found.setdefault(alias.name, set())
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in modules:
      for alias in node.names:
        submodule = f"{node.module}.{alias.name}"
        if submodule in modules:  # `from score_jax import sampling`: an edge to that module itself
          found.setdefault(submodule, set())
        else:
          found.setdefault(node.module, set()).add(alias.name)
    elif _is_import_module_call(node) and node.args[0].value in modules:  # importlib.import_module("score_jax...")
      found.setdefault(node.args[0].value, set())
  return found


def _is_import_module_call(node):
  return (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
          and isinstance(node.args[0].value, str)
          and (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
               or isinstance(node.func, ast.Name) and node.func.id == "import_module"))


def import_graph():
  modules = module_names()
  return {name: imports_of(path, modules) for name, path in modules.items()}


def find_cycle(graph):
  """One import cycle as a list of modules, or None (depth-first search)."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for target in graph[node]:
      if state.get(target) == "open":
        return stack[stack.index(target):] + [target]
      if target not in state:
        cycle = visit(target)
        if cycle:
          return cycle
    stack.pop()
    state[node] = "done"
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def test_no_import_cycle_inside_the_package():
  graph = import_graph()
  assert "score_jax.sampling.pc" in graph and "score_jax.models.score_model" in graph
  cycle = find_cycle(graph)
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
  graph = {"a": {"b": set()}, "b": {"c": set()}, "c": {"a": set()}, "d": {}}
  assert find_cycle(graph) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b": set()}, "b": {}}) is None


def test_no_private_name_is_imported_from_another_module():
  private = [f"{module} imports {name} from {source}" for module, imports in import_graph().items()
             for source, names in imports.items() for name in names if name.startswith("_")]
  assert not private, private


def test_an_import_through_importlib_is_an_edge(tmp_path):
  (tmp_path / "a.py").write_text("import importlib\nB = importlib.import_module('pkg.b')\n")
  (tmp_path / "b.py").write_text("import pkg.a\n")
  modules = {"pkg.a": tmp_path / "a.py", "pkg.b": tmp_path / "b.py"}
  graph = {name: imports_of(path, modules) for name, path in modules.items()}
  assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]


def test_no_module_level_getattr():
  """A module-level `__getattr__` (a lazy or compatibility name) hides an import from the graph above."""
  found = [name for name, path in module_names().items()
           for node in ast.parse(path.read_text()).body
           if isinstance(node, ast.FunctionDef) and node.name in ("__getattr__", "__dir__")]
  assert not found, found


def test_loading_a_trained_model_imports_no_objective():
  """`trained_model.load_model` reads a network: its import closure holds no objective, optimizer or train step."""
  code = ("import sys, score_jax.trained_model; "
          "print(' '.join(m for m in sys.modules if m.startswith('score_jax')))")
  loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=PACKAGE.parent).stdout.split()
  assert "score_jax.trained_model" in loaded and "score_jax.models" in loaded
  assert not [m for m in loaded if m.startswith(("score_jax.objectives", "score_jax.optim", "score_jax.train_steps",
                                                 "score_jax.run_setup"))], loaded
