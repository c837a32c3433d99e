"""The shape of the package: its floors (`medlab.FLOORS`) import only downwards, no import cycles among medlab's
modules (imports inside functions count), module paths from before the floors still import, and `import medlab`
stays light (no torch)."""
import ast
import io
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'medlab'


def module_files(package: Path) -> dict[str, Path]:
    "Dotted module name -> file, for every .py of `package` (nbdev's `_modidx` left out: it only names things)."
    mods = {}
    for f in package.rglob('*.py'):
        if f.name == '_modidx.py': continue
        parts = f.relative_to(package.parent).with_suffix('').parts
        mods['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = f
    return mods


def imported_modules(module: str, node: ast.AST, mods: dict[str, Path]) -> set[str]:
    "The modules of `mods` that the import statement `node` in `module` loads (relative imports resolved)."
    if isinstance(node, ast.Import): names = [a.name for a in node.names]
    else:
        base = node.module or ''
        if node.level:
            parts = module.split('.') if mods[module].name == '__init__.py' else module.split('.')[:-1]
            parts = parts[:len(parts) - (node.level - 1)]
            base = '.'.join(parts + ([base] if base else []))
        names = [base] + [f'{base}.{a.name}' for a in node.names]   # `from medlab import x` may load medlab.x
    found = set()
    for name in names:
        while name and name not in mods: name = name.rpartition('.')[0]
        if name and name != module and name != PACKAGE.name: found.add(name)   # the package's lazy facade is no edge
    return found


def import_edges(package: Path) -> dict[str, dict[str, list[tuple[str, int]]]]:
    "importer -> imported -> [(file, line)] of each import statement, those inside functions included."
    mods, edges = module_files(package), {}
    for module, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in imported_modules(module, node, mods):
                    edges.setdefault(module, {}).setdefault(target, []).append((f.relative_to(package.parent).as_posix(), node.lineno))
    return edges


def cycles(edges: dict[str, dict]) -> list[list[str]]:
    "The strongly connected groups of more than one module (Tarjan), each sorted."
    index, low, stack, on, found = {}, {}, [], set(), []
    def visit(v):
        index[v] = low[v] = len(index); stack.append(v); on.add(v)
        for w in edges.get(v, {}):
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop(); on.discard(w); group.append(w)
                if w == v: break
            if len(group) > 1: found.append(sorted(group))
    for v in sorted(edges):
        if v not in index: visit(v)
    return found


def describe(group: list[str], edges: dict) -> str:
    "A cycle as its modules and each import between them, with file and line."
    lines = [f"cycle: {' <-> '.join(group)}"]
    for a in group:
        for b in group:
            for file, line in edges.get(a, {}).get(b, []): lines.append(f'  {a} imports {b}: {file}:{line}')
    return '\n'.join(lines)


def floor_of(module: str, floors: tuple[str, ...]) -> int:
    "The floor a module sits on: its subpackage's place in `floors`; the facade and the CLI are above them all."
    parts = module.split('.')
    return floors.index(parts[1]) if len(parts) > 2 and parts[1] in floors else len(floors)


def upward_imports(edges: dict, floors: tuple[str, ...]) -> list[str]:
    "Each import from a floor to one above it, as 'importer (floor) imports imported (floor): file:line'."
    found = []
    for a, targets in sorted(edges.items()):
        for b, where in sorted(targets.items()):
            if floor_of(b, floors) > floor_of(a, floors):
                found += [f'{a} imports {b}, a floor up: {file}:{line}' for file, line in where]
    return found


def test_floors_import_only_downwards():
    import medlab
    found = upward_imports(import_edges(PACKAGE), medlab.FLOORS)
    assert not found, f'imports that point up the floors {" < ".join(medlab.FLOORS)} (move the shared thing down):\n' + '\n'.join(found)


def test_the_checker_finds_an_upward_import(tmp_path):
    pkg = tmp_path / 'medlab'
    for floor in ('core', 'ui'): (pkg / floor).mkdir(parents=True); (pkg / floor / '__init__.py').write_text('')
    (pkg / '__init__.py').write_text('')
    (pkg / 'core' / 'a.py').write_text('def late():\n    from medlab.ui.b import panel\n')
    (pkg / 'ui' / 'b.py').write_text('from medlab.core.a import late\npanel = 1\n')
    test = upward_imports(import_edges(pkg), ('core', 'ui'))
    assert test == ['medlab.core.a imports medlab.ui.b, a floor up: medlab/core/a.py:2'], test


def test_no_import_cycles():
    edges = import_edges(PACKAGE)
    found = cycles(edges)
    assert not found, 'import cycles among medlab modules (move the shared thing down a floor):\n' + \
        '\n'.join(describe(g, edges) for g in found)


def test_the_checker_finds_a_cycle_and_names_its_imports(tmp_path):
    "A function-local relative import closing a loop is a cycle, reported with both files and lines."
    pkg = tmp_path / 'medlab'; pkg.mkdir()
    (pkg / '__init__.py').write_text('')
    (pkg / 'a.py').write_text('import os\nfrom .b import thing\n')
    (pkg / 'b.py').write_text('thing = 1\ndef later():\n    from medlab.a import os\n')
    (pkg / 'c.py').write_text('from . import a\n')
    edges = import_edges(pkg)
    assert cycles(edges) == [['medlab.a', 'medlab.b']]
    text = describe(['medlab.a', 'medlab.b'], edges)
    assert 'medlab.a imports medlab.b: medlab/a.py:2' in text and 'medlab.b imports medlab.a: medlab/b.py:3' in text


@pytest.mark.parametrize('name, module', [('preview_augmentations', 'medlab.ui.previews'), ('histology_panel', 'medlab.ui.workflow_panels'),
                                          ('load_run', 'medlab.engine.predictor'), ('export_run', 'medlab.engine.export'),
                                          ('train', 'medlab.engine.training'), ('read_manifest', 'medlab.datasets.manifest')])
def test_moved_names_keep_their_public_door(name, module):
    "The lazy facade still gives each name, from its new home."
    import medlab
    assert getattr(medlab, name).__module__ == module


def test_openvino_network_is_importable_from_its_old_module():
    "Code written before the move (`from medlab.deploy import OpenVINONetwork`) gets the backend's class."
    from medlab.backends import OpenVINONetwork
    from medlab.deploy import OpenVINONetwork as old
    assert old is OpenVINONetwork


def test_every_module_path_from_before_the_floors_imports_its_new_home():
    "`from medlab.training import train` and the like, written before the floors, give the very same objects."
    import importlib
    import medlab
    for old, new in medlab.MOVED.items():
        module = importlib.import_module(f'medlab.{old}')
        if isinstance(new, str): assert module is importlib.import_module(f'medlab.{new}'), old
        else:   # a module split in several: each name from the first of its homes that has it
            homes = [importlib.import_module(f'medlab.{h}') for h in new]
            for name in {n for h in homes for n in h.__all__}:
                assert getattr(module, name) is getattr(next(h for h in homes if hasattr(h, name)), name), (old, name)
    from medlab.widgets import ConfigPanel, ParameterPanel, Panel
    assert (ConfigPanel.__module__, ParameterPanel.__module__, Panel.__module__) == \
        ('medlab.ui.config_panel', 'medlab.ui.workflow_panels', 'medlab.ui.controls')
    from medlab.data import read_manifest
    assert read_manifest is medlab.read_manifest


def test_a_bundle_written_before_the_floors_still_builds_its_network():
    "A MONAI bundle's `_target_: medlab.networks.FCN` (the path bundles held until 0.1) resolves in a fresh process."
    code = ("from monai.bundle import ConfigParser; "
            "net = ConfigParser({'net': {'_target_': 'medlab.networks.FCN', 'spatial_dims': 2, 'in_channels': 1, "
            "'out_channels': 2, 'features': [4, 8], 'norm': 'batch'}}).get_parsed_content('net'); "
            "print(type(net).__module__, type(net).__name__)")
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert done.stdout.split() == ['medlab.nets.networks', 'FCN'], done.stderr[-2000:]


def deferred_imports(package: Path) -> list[tuple[str, int, str, bool]]:
    "Each import inside a function: (file, line, imported module, whether a comment on its line says why)."
    found = []
    for f in sorted(package.rglob('*.py')):
        if f.name == '_modidx.py': continue
        text = f.read_text()
        commented = {t.start[0] for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT}
        for fn in ast.walk(ast.parse(text, str(f))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)): continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    name = node.names[0].name if isinstance(node, ast.Import) else ('.' * node.level + (node.module or ''))
                    found.append((f.relative_to(package.parent).as_posix(), node.lineno, name, node.lineno in commented))
    return sorted(set(found))


def test_few_deferred_medlab_imports_and_each_says_why():
    "An import of medlab inside a function hides the module graph: at most 15, each with a comment saying why."
    medlab_ones = [d for d in deferred_imports(PACKAGE) if d[2].startswith(('medlab', '.'))]
    silent = [f'{file}:{line} imports {name}' for file, line, name, why in medlab_ones if not why]
    assert not silent, 'deferred medlab imports without a comment saying why (move them to the top):\n' + '\n'.join(silent)
    assert len(medlab_ones) <= 15, f'{len(medlab_ones)} deferred medlab imports (at most 15):\n' + \
        '\n'.join(f'{file}:{line} imports {name}' for file, line, name, _ in medlab_ones)


def test_every_deferred_import_says_why():
    "A third-party import inside a function is there for a reason (an optional extra, start-up time): the comment says which."
    silent = [f'{file}:{line} imports {name}' for file, line, name, why in deferred_imports(PACKAGE) if not why]
    assert not silent, f'{len(silent)} deferred imports without a comment saying why (move them to the top):\n' + '\n'.join(silent)


def test_methods_are_written_where_grep_finds_them():
    "`Cls.name = _fn` hides a method from `grep 'def name'`: methods live in the class body or under fastcore's `@patch`."
    found = []
    for f in sorted(PACKAGE.rglob('*.py')):
        for node in ast.parse(f.read_text(), str(f)).body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                                                    and t.value.id[:1].isupper() for t in node.targets) \
                    and isinstance(node.value, (ast.Name, ast.Call, ast.Lambda)):
                found.append(f'{f.relative_to(PACKAGE.parent).as_posix()}:{node.lineno}: {ast.unparse(node)}')
    assert not found, 'methods attached by assignment (use @patch or the class body):\n' + '\n'.join(found)


def test_import_medlab_does_not_import_torch():
    done = subprocess.run([sys.executable, '-c', "import medlab, sys; assert 'torch' not in sys.modules, 'torch imported'"],
                          capture_output=True, text=True, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr
