"""The package's layering, written as a test (ARCHITECTURE.md draws it).

Every ``import`` in ``ppgen`` (module level or inside a function) is read with
:mod:`ast`, nothing is executed. A module may import only the layers its own layer
allows, no two modules may import each other directly or through others, and no
module imports another module's private (``_``-prefixed) name.
"""

import ast
import collections
import pathlib
import subprocess
import sys

import ppgen

ROOT = pathlib.Path(ppgen.__file__).parent

#: What each layer (the first name under ``ppgen``) may import from the others. The
#: protocol layer (``model``, ``registry``, ``data``, ``errors``) and the building blocks
#: (``nn``, ``distributed``) sit at the bottom; the front ends (``report``, ``cli``) at the top.
ALLOWED = {
    "errors": set(),
    "data": {"errors"},
    "model": {"errors", "data"},
    "registry": {"errors", "model"},
    "nn": {"errors", "data"},
    "distributed": {"errors", "data"},
    # Families know the protocol and the layers of ppgen.nn, never a method or a diagnostic.
    "models": {"errors", "data", "model", "registry", "nn"},
    # The synthetic targets (ring, grid, two moons) live with the families that draw from them.
    "datasets": {"errors", "models"},
    # Methods know the protocol, never a concrete family; ``Fit.to_arviz`` and ``Fit.summary``
    # hand the fit to ppgen.diagnostics (which reads fits and imports no inference module).
    "inference": {"errors", "data", "model", "registry", "nn", "distributed", "diagnostics"},
    "diagnostics": {"errors", "data", "model", "nn"},
    "report": {"errors", "data", "model", "registry", "nn", "distributed", "models", "datasets",
               "inference", "diagnostics", "ppgen"},
    "cli": {"errors", "data", "model", "registry", "nn", "distributed", "models", "datasets",
            "inference", "diagnostics", "report", "ppgen"},
    "ppgen": {"errors", "data", "model", "registry", "models", "datasets", "inference", "diagnostics"},
}


def _modules():
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ["ppgen", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name, path):
    """``[(imported module, imported name or None, line)]`` of every ppgen import in a module."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names if alias.name.startswith("ppgen")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("ppgen"):
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.append((submodule, None, node.lineno) if submodule in MODULES
                             else (target, alias.name, node.lineno))
    return found


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ppgen"


def test_every_layer_is_known():
    assert {_layer(m) for m in MODULES} <= set(ALLOWED)


def test_modules_import_only_the_layers_below_them():
    wrong = [f"{MODULES[m].relative_to(ROOT.parent)}:{line} imports {target} ({_layer(m)} -> {_layer(target)})"
             for m, found in IMPORTS.items() for target, _, line in found
             if _layer(target) != _layer(m) and _layer(target) not in ALLOWED[_layer(m)]]
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_another_modules_private_name():
    wrong = [f"{MODULES[m].relative_to(ROOT.parent)}:{line} imports {name} from {target}"
             for m, found in IMPORTS.items() for target, name, line in found
             if name and name.startswith("_") and not name.startswith("__")]
    assert not wrong, "\n".join(wrong)


def _graph():
    """Module -> the modules it imports, leaving out a package importing its own
    submodules and a module importing the packages it is inside of."""
    graph = collections.defaultdict(set)
    for m, found in IMPORTS.items():
        for target, _, _ in found:
            while target not in MODULES:
                target = target.rpartition(".")[0]
            if target == m or target.startswith(m + ".") or m.startswith(target + "."):
                continue
            graph[m].add(target)
    return graph


def _cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"ppgen.a": {"ppgen.b"}, "ppgen.b": {"ppgen.c"}, "ppgen.c": {"ppgen.a"}}) == \
        [["ppgen.a", "ppgen.b", "ppgen.c"]]


def test_modules_stay_under_500_lines():
    long = {str(p.relative_to(ROOT.parent)): n for p in MODULES.values()
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long


def test_every_family_lives_in_its_own_folder():
    from ppgen import registry
    for name, cls in registry.families().items():
        parts = cls.__module__.split(".")
        assert parts[:2] == ["ppgen", "models"] and len(parts) == 4, (name, cls.__module__)


#: The public API whose type hints a type checker checks (mypy, configured in pyproject.toml):
#: ``fit``, the methods, ``Fit``, the protocols and every family's constructor.
TYPED = ["ppgen/model.py", "ppgen/registry.py", *(f"ppgen/inference/{name}.py" for name in (
    "api", "method", "methods", "variational", "sampling", "exact", "contrastive", "adversarial", "result",
    "persistence", "training")), *(f"ppgen/models/{name}.py" for name in (
        "bayesnet/network", "hmm/base", "hmm/families", "mixture/gaussian_mixture", "factor/factor",
        "conjugate/conjugate", "vae/vae", "vae/conv_vae", "autoencoder/autoencoder", "flows/flows", "rbm/base",
        "rbm/rbm", "diffusion/ddpm", "gan/gan")), *(f"ppgen/inference/mcmc/{name}.py" for name in (
            "reference", "integrator", "metric", "randomness", "proposal", "termination"))]


def test_public_api_type_checks():
    run = subprocess.run([sys.executable, "-m", "mypy", *TYPED], cwd=ROOT.parent,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr


def test_method_names_come_from_one_list():
    from ppgen import registry
    from ppgen.cli import build_parser
    from ppgen.inference import METHODS

    for name, cls in registry.families().items():
        assert set(cls.methods) <= set(METHODS), (name, cls.methods)
    fit = next(a for a in build_parser()._subparsers._group_actions[0].choices["fit"]._actions
               if a.dest == "method")
    assert set(fit.choices) == set(METHODS)
    assert all(METHODS[name].name == name for name in METHODS)


def test_every_family_constructor_is_typed_and_checked():
    import inspect

    from ppgen import registry

    typed = {str(ROOT.parent / path) for path in TYPED}
    for name, cls in registry.families().items():
        init = cls.__init__
        assert inspect.getsourcefile(init) in typed, (name, inspect.getsourcefile(init))
        signature = inspect.signature(init)
        missing = [p for p in list(signature.parameters)[1:]
                   if signature.parameters[p].annotation is inspect.Parameter.empty]
        assert not missing and signature.return_annotation is not inspect.Signature.empty, (name, missing)


def test_no_absolute_paths_of_a_development_machine():
    """Scripts reach the shared data through ``../shared`` or ``PPGEN_SHARED_DATA``, never a
    machine's absolute path (they must run on a user's machine)."""
    import re

    pattern = re.compile(r"""["'](/(?:work|home|root|check|Users|tmp)/[^"']*)["']""")
    found = []
    for folder in ("ppgen", "benchmarks", "examples", "tests"):
        for path in sorted((ROOT.parent / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                for match in pattern.finditer(line):
                    if "shared" in match.group(1) or "data" in match.group(1):
                        found.append(f"{path.relative_to(ROOT.parent)}:{number}: {match.group(1)}")
    assert not found, found


def test_import_ppgen_leaves_heavy_libraries_for_later():
    """``import ppgen`` costs little beyond torch and pyro: pandas, ArviZ, matplotlib and the
    FX tracing machinery load when first used (each is tenths of a second to import)."""
    code = ("import sys, ppgen; print(' '.join(m for m in ('pandas', 'arviz', 'matplotlib', "
            "'torch.fx.passes.fake_tensor_prop') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "", run.stdout
