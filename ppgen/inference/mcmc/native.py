"""NUTS transitions in C++, around TorchInductor's compiled leapfrog leaf.

On a compiled potential the leaf's arithmetic is a small part of a leaf for a small
model, while calling it from Python and keeping NUTS's books there cost many times
more: the generated Python wrapper allocates its buffers and converts its arguments
on every call, and the tree's bookkeeping is a dozen Python operations a leaf. Here the whole
transition (momentum draw, tree doubling, block U-turn checks, multinomial proposal;
the reference kernel's algorithm, :func:`.reference.nuts_transition`) runs in C++ (``native_nuts.cpp``),
calling the model's own TorchInductor kernels directly on buffers allocated once per
transition; Python sees one call per draw (``benchmarks/bench_transition.py`` times a
leaf both ways).

Several chains: each chain is a row, and runs alone through the same one-chain
kernels (its own tree, nothing masked or waited for), the rows spread over OpenMP
threads; warm-up adapts every chain's step size and metric in Python between
transitions (:mod:`.engine`). The C++ leaf (:meth:`NativeNUTS.leaf`) also serves the
warm-up's step-size search.

How: the lean kernel's generated wrapper (straight-line Python: buffer allocations,
views, calls of ``cpp_fused_*`` kernels) is run once with those calls recorded, each
argument located as a leaf input, an intermediate buffer (at an offset) or one of the
module's constant tensors (the data, kept alive here). The kernels' C++ sources (from
the wrapper's module, read with :mod:`ast`, never executed) are renamed and compiled
together with the recorded call sequence and ``native_nuts.cpp`` by TorchInductor's
own C++ code cache (the same compiler flags and vector ISA, cached on disk). Only
wrappers made of nothing else qualify: any other global (an external matmul, an ATen
fallback such as a Cholesky factor, a Python-level helper) and
:func:`compile_native_nuts` returns ``None`` and the reason, and the sampler keeps its
Python loop. Before use, the C++ leaf is checked against the compiled one at the
starting point with three momenta.

Randomness: a base seed drawn from the sampler's ``torch.Generator``; transition ``t``
of chain ``c`` (of ``C``) seeds xoshiro256** with ``base + t C + c``, so a run is
reproducible from ``ppgen.fit(seed=...)`` whatever the number of threads; the draws
differ from the Python path's. :meth:`NativeNUTS.replay` takes the Python path's
random numbers instead, which is how the tests check the two make the same trees.
"""

from __future__ import annotations

import ast
import logging
import re
from importlib import resources

import torch

from . import kept
from .compile_cache import use_private_cache
from .fallback import Refused
from .inductor import build_settings, disagreement, with_globals
from .integrator import State

#: Global names a qualifying wrapper's ``call`` may use besides its kernels and constants.
_PLAIN_NAMES = {"empty_strided_cpu", "reinterpret_tensor", "torch", "clear",
                "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8",
                "uint8", "bool"}
log = logging.getLogger("ppgen")
_REAL = {torch.float32: "float", torch.float64: "double"}
_ENTRY = re.compile(r'extern\s+"C"\s+void\s+kernel\s*\(')


class NativeNUTS:
    """NUTS transitions and leapfrog steps in C++, for any number of chains with a diagonal
    metric: each chain (row) alone, several on ``threads`` OpenMP threads.

    Like the compiled leaf, it takes its inputs' layout on trust (the sampler's own
    tensors): contiguous, in the potential's dtype, ``(C, D)`` positions, gradients,
    momenta and inverse metric, ``(C,)`` potentials and ``(C, 1)`` step sizes."""

    def __init__(self, entry, constants, max_tree_depth, seed, threads=1, thread_safe=True):
        self._entry, self._constants = entry, constants  # (keeps the constants alive)
        self.thread_safe = thread_safe
        self._pointers = torch.tensor([t.data_ptr() for t in constants] or [0], dtype=torch.int64)
        self.max_tree_depth, self.threads, self._seed, self._count = max_tree_depth, threads, seed, 0
        self._unused = torch.zeros(1, dtype=torch.float64)

    def reseed(self, generator):
        """Draw a new base seed from ``generator``."""
        self._seed, self._count = int(torch.randint(0, 2 ** 62, (1,), generator=generator)), 0

    def transition(self, state, step_size, metric):
        """One transition of every chain from ``state``; statistics as
        ``Sampler._transition_single``'s (Python scalars) for one chain, ``(C,)`` tensors
        as ``Sampler.transition``'s for several."""
        chains = state.z.shape[0]
        seed = self._seed + self._count * chains  # chain c's stream: seed + c, never reused
        self._count += 1
        return self._run(state, step_size, metric, state.z, self._unused, seed, 0)

    def replay(self, state, step_size, metric, momentum, uniforms):
        """One chain's :meth:`transition` with the given momentum and ``uniforms`` (float64)
        in :meth:`.randomness.Noise.uniforms`' layout (``max_tree_depth <= 6``): for tests."""
        return self._run(state, step_size, metric, momentum.contiguous(), uniforms.contiguous(), 0, 2)

    def _run(self, state, step_size, metric, momentum, uniforms, seed, mode):
        z = state.z
        chains = z.shape[0]
        z_out, grad_out, potential_out = torch.empty_like(z), torch.empty_like(z), torch.empty_like(state.potential)
        stats = torch.empty((chains, 5), dtype=torch.float64)
        self._entry(z, state.grad, state.potential, momentum, metric.inverse, step_size, uniforms, self._pointers,
                    seed, self.max_tree_depth, mode, chains, self.threads, z_out, grad_out, potential_out, z_out,
                    stats)
        new = State(z_out, potential_out, grad_out)
        if chains == 1:
            accept, depth, diverging, energy, leaves = stats[0].tolist()
            return new, {"accept": accept, "depth": int(depth), "diverging": diverging > 0, "energy": energy,
                         "leapfrogs": int(leaves)}
        return new, {"accept": stats[:, 0].to(z.dtype), "depth": stats[:, 1].long(),
                     "diverging": stats[:, 2] > 0, "energy": stats[:, 3].to(z.dtype),
                     "leapfrogs": stats[:, 4].to(z.dtype)}

    def value_and_grad(self, u):
        """``U(u)`` and its gradient for every chain: a leapfrog step of length 0 from rest."""
        zero, no_step = torch.zeros_like(u), u.new_zeros((u.shape[0], 1))
        out = self.leaf(u.contiguous(), zero, zero, zero, no_step, no_step, torch.ones_like(u))
        return out[3], out[2]

    def leaf(self, z, r, grad, rho, step, half_step, inverse):
        """One leapfrog step of every chain in C++, the compiled leaf's signature and outputs
        ``(z, r, grad, U, H, M^{-1} r, rho + r)`` (``half_step`` is ``step / 2``)."""
        z_out, r_out, grad_out, potential = (torch.empty_like(z), torch.empty_like(z), torch.empty_like(z),
                                             torch.empty_like(z[:, 0]))
        stats = torch.empty((z.shape[0], 5), dtype=torch.float64)
        self._entry(z, grad, potential, r, inverse, step, self._unused, self._pointers, 0, self.max_tree_depth, 1,
                    z.shape[0], self.threads, z_out, grad_out, potential, r_out, stats)
        velocity = inverse * r_out
        return z_out, r_out, grad_out, potential, stats[:, 0].to(z.dtype), velocity, rho + r_out


def compile_native_nuts(potential, max_tree_depth, generator):
    """A :class:`NativeNUTS` for one chain of ``potential`` (compiled, lean), checked
    against the Python leaf; raises :class:`~.fallback.Refused` (saying why) where it does
    not apply."""
    leaf = getattr(potential, "_leaf", None)
    call = getattr(leaf, "generated", None)
    z = potential.initial
    if call is None or z.shape[0] != 1 or z.dtype not in _REAL or z.device.type != "cpu":
        raise Refused("needs one chain's lean TorchInductor leaf on the CPU in float32 or float64")
    noise = torch.randn((3,) + tuple(z.shape), generator=torch.Generator().manual_seed(0), dtype=z.dtype)
    example = (z, noise[0], noise[1], noise[2], z.new_full((1, 1), 0.1), z.new_full((1, 1), 0.05),
               noise[0].abs() + 0.5)
    try:
        program = _record(call, example)
        source = _source(program, z.shape[1], z.dtype)
        from torch._inductor.codecache import CppPythonBindingsCodeCache

        use_private_cache()

        real = _REAL[z.dtype]
        argtypes = [f"const {real}*"] * 6 + ["const double*", "const int64_t*"] + ["int64_t"] * 5 + \
            [f"{real}*"] * 4 + ["double*"]
        with build_settings(trust_cpu=leaf.lean):  # as the leaf's kernels were compiled
            entry = CppPythonBindingsCodeCache.load_pybinding(argtypes, source)
    except Refused:  # the generated wrapper does something the C++ driver does not replay
        raise
    except Exception as exc:  # noqa: BLE001 - Inductor internals or the C++ compiler: keep Python's loop
        raise Refused(f"building failed ({type(exc).__name__}: {str(exc)[:200]})") from None
    native = NativeNUTS(entry, program["constants"], max_tree_depth, 0, thread_safe=program["thread_safe"])
    native.reseed(generator)
    why = _check(native, leaf, potential)
    if why:
        raise Refused(why)
    kept.keep(kept.key(potential), entry, program["constants"], program["thread_safe"])
    return native


def kept_native_nuts(potential, max_tree_depth, generator):
    """The C++ transitions an earlier process built for this very recorded potential
    (:mod:`.kept`), made the potential's compiled graph and leaf once they pass the checks
    a fresh build passes (the leaf against the eager leapfrog step, the potential against
    Pyro's at probe points); None where none is kept or it fails them."""
    z = potential.initial
    if z.shape[0] != 1 or z.dtype not in _REAL or z.device.type != "cpu" or not potential.sites:
        return None
    name = kept.key(potential)
    found = kept.load(name)
    if found is None:
        return None
    entry, constants, thread_safe = found
    native = NativeNUTS(entry, constants, max_tree_depth, 0, thread_safe=thread_safe)
    native.reseed(generator)

    def log_joint_and_grad(u):
        value, grad = native.value_and_grad(u)
        return -value, -grad

    # The potential at the probes (adopt), and one leapfrog step against Pyro's own potential
    # (evaluated eagerly, seconds for a long enumerated chain; the binary's integrator was
    # checked in full when it was built).
    why = _check(native, potential._leaf_eager, potential, scales=(1.0,)) or \
        potential.adopt(log_joint_and_grad, native.leaf)
    if why:
        log.info("NUTS: the kept C++ kernel is not used (%s); building it again", why)
        kept.forget(name)
        return None
    return native


def _check(native, leaf, potential, scales=(0.0, 1.0, 3.0)):
    """``""`` if the C++ leaf equals the Python kernel's at the start, with momenta of the
    given ``scales`` (a private generator: Pyro's random state is left alone)."""
    z = potential.initial
    _, grad = potential.value_and_grad(z)
    generator = torch.Generator().manual_seed(0)
    inverse, step = torch.ones_like(z), z.new_full((1, 1), 0.1)
    for scale in scales:
        r = scale * torch.randn(z.shape, generator=generator, dtype=z.dtype)
        args = (z, r, grad, torch.zeros_like(z), step, 0.5 * step, inverse)
        with torch.no_grad():
            why = disagreement(tuple(leaf(*args)), native.leaf(*args))
        if why:
            return f"the C++ leaf disagrees with the compiled one ({why})"
    return ""


def _record(call, example):
    """Run Inductor's generated ``call`` once on copies of ``example``, recording its buffers,
    its kernel calls and where each argument and output lives."""
    function = getattr(call, "__func__", call)
    names = function.__globals__
    kernels = {n for n in function.__code__.co_names if n.startswith("cpp_fused")}
    constants = {n: v for n, v in names.items() if isinstance(v, torch.Tensor)}
    other = set(function.__code__.co_names) - _PLAIN_NAMES - kernels - set(constants)
    if other or not kernels:
        raise Refused(f"the compiled leaf calls more than C++ kernels ({', '.join(sorted(other)) or 'none'})")
    allocate, buffers, calls = names["empty_strided_cpu"], [], []

    def empty_strided(size, stride, dtype):
        buffers.append(allocate(size, stride, dtype))
        return buffers[-1]

    def recorder(name):
        def run(*args):
            calls.append((name, args))
            return names[name](*args)
        return run

    inputs = [t.clone() for t in example]
    out = with_globals(call, {"empty_strided_cpu": empty_strided, **{n: recorder(n) for n in kernels}})(list(inputs))
    regions = [("in", i, t) for i, t in enumerate(inputs)] + [("buf", i, t) for i, t in enumerate(buffers)] + \
        [("ext", i, t) for i, t in enumerate(constants.values())]

    def locate(t):
        if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
            raise Refused(f"a kernel argument is not a CPU tensor ({type(t).__name__})")
        pointer = t.data_ptr()
        for kind, i, base in regions:
            start, size = base.untyped_storage().data_ptr(), base.untyped_storage().nbytes()
            if start <= pointer < start + size:
                return kind, i, pointer - start
        raise Refused("a kernel argument lives outside the wrapper's buffers")

    dim = example[0].shape[1]
    if len(out) != 7 or any(not t.is_contiguous() or t.numel() != n or t.dtype != example[0].dtype
                            for t, n in zip(out, (dim, dim, dim, 1, 1, dim, dim))):
        raise Refused("the compiled leaf's outputs are not laid out as expected")
    return {"calls": [(name, [locate(a) for a in args]) for name, args in calls],
            "outputs": [locate(t) for t in out], "buffers": [t.untyped_storage().nbytes() for t in buffers],
            "constants": list(constants.values()), "file": names.get("__file__")}


def _kernel_sources(path):
    """``{name: (argtypes, C++ source)}`` of every ``cpp_fused_*`` in a generated wrapper module."""
    if not path:
        raise Refused("the wrapper module has no source file")
    with open(path) as handle:
        tree = ast.parse(handle.read())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and isinstance(node.value, ast.Call) and getattr(node.value.func, "attr", "") == "cpp_pybinding":
            argtypes, source = (ast.literal_eval(a) for a in node.value.args[:2])
            found[node.targets[0].id] = (argtypes, source)
    return found


def _source(program, dim, dtype):
    """The C++ translation unit: the model's kernels, the recorded leaf, ``native_nuts.cpp``."""
    sources = _kernel_sources(program["file"])
    used = list(dict.fromkeys(name for name, _ in program["calls"]))
    # Integer division by zero is reported through one process-wide flag, which kernels
    # running on several threads at once would share: such a leaf runs one chain at a time.
    program["thread_safe"] = not any("integer_div_by_zero" in sources.get(n, ("", ""))[1] for n in used)
    parts, index = [], {}
    for i, name in enumerate(used):
        if name not in sources:
            raise Refused(f"no source for kernel {name}")
        argtypes, source = sources[name]
        if any(not a.strip().endswith("*") for a in argtypes):
            raise Refused(f"kernel {name} takes non-pointer arguments ({argtypes})")
        renamed, count = _ENTRY.subn(f"static void ppgen_kernel_{i}(", source)
        if count != 1:
            raise Refused(f"kernel {name}'s source has {count} entry points")
        parts.append(renamed)
        index[name] = (i, argtypes)
    offsets, total = [], 0
    for size in program["buffers"]:
        offsets.append(total)
        total += -(-size // 64) * 64

    def pointer(location):
        kind, i, offset = location
        base = {"in": f"(char*)in[{i}]", "buf": f"(scratch + {offsets[i] if kind == 'buf' else 0})",
                "ext": f"(char*)ext[{i}]"}[kind]
        return f"({base} + {offset})"

    body = []
    for name, args in program["calls"]:
        i, argtypes = index[name]
        body.append(f"    ppgen_kernel_{i}(" + ", ".join(f"({t})({pointer(a)})" for t, a in zip(argtypes, args)) + ");")
    body += [f"    out[{k}] = (PPGEN_REAL*)({pointer(a)});" for k, a in enumerate(program["outputs"])]
    real = _REAL[dtype]
    prelude = [f"#define PPGEN_REAL {real}", f"#define PPGEN_DIM {dim}",
               f"#define PPGEN_SCRATCH_BYTES {max(total, 64)}",
               "static void ppgen_leaf(void* const* in, char* scratch, const int64_t* ext, PPGEN_REAL** out) {",
               *body, "}"]
    driver = resources.files("ppgen.inference.mcmc").joinpath("native_nuts.cpp").read_text()
    return "\n".join(parts) + "\n\n" + "\n".join(prelude) + "\n\n" + driver
