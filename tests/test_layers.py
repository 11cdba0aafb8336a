"""The package's imports form layers: no module imports one that (directly or through
others) imports it back, counting imports inside functions and the modules a registry
loads by name (methods/). docs/architecture.md draws the layers this computes."""
import ast
import os

from tests.runs import ROOT

PACKAGE = os.path.join(ROOT, 'aikd_jax')
# Packages that import all their modules by name at run time (a registry).
LOADS_ALL = ('aikd_jax.methods',)


def modules() -> dict[str, str]:
  found = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(folder, name)
        module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
        found[module.removesuffix('.__init__')] = path
  return found


def import_graph() -> dict[str, set[str]]:
  """Module -> the package modules it imports (anywhere in its file)."""
  mods, graph = modules(), {}
  for module, path in mods.items():
    deps = set()
    with open(path) as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        deps.update(a.name for a in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        deps.update(f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in mods
                    else node.module for a in node.names)
    if module in LOADS_ALL:
      deps.update(m for m in mods if m.startswith(module + '.'))
    graph[module] = {d for d in deps if d in mods and d != module}
  return graph


def layers(graph: dict[str, set[str]]) -> list[list[str]]:
  """Modules by layer: a module sits one above the highest module it imports. Raises
  AssertionError naming a cycle."""
  level, visiting = {}, []

  def depth(module: str) -> int:
    if module in level:
      return level[module]
    assert module not in visiting, 'import cycle: ' + ' -> '.join(
        visiting[visiting.index(module):] + [module])
    visiting.append(module)
    level[module] = 1 + max((depth(d) for d in graph[module]), default=-1)
    visiting.pop()
    return level[module]

  for module in graph:
    depth(module)
  return [sorted(m for m in graph if level[m] == i) for i in range(max(level.values()) + 1)]


def test_the_imports_have_no_cycle():
  assert layers(import_graph())


def test_the_leaves_import_nothing_of_ours_but_errors():
  graph = import_graph()
  for leaf in ('aikd_jax.errors', 'aikd_jax.fields', 'aikd_jax.paths', 'aikd_jax.losses',
               'aikd_jax.evaluation', 'aikd_jax.paper_tables'):
    assert graph[leaf] <= {'aikd_jax.errors'}, (leaf, graph[leaf])


def test_method_groups_are_parsed_above_the_methods():
  graph = import_graph()
  assert 'aikd_jax.methods' in graph['aikd_jax.config']
  for module, deps in graph.items():
    if module.startswith('aikd_jax.methods'):
      assert 'aikd_jax.config' not in deps, module


if __name__ == '__main__':  # prints the layers for docs/architecture.md
  for i, layer in enumerate(layers(import_graph())):
    print(i, ' '.join(m.removeprefix('aikd_jax.') for m in layer))
