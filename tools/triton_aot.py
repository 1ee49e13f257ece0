"""Compile the Triton kernels for a CUDA GPU on a machine without one (developer tooling, not public API).

The interpreter (``TRITON_INTERPRET=1``) checks what the kernels compute but not whether they
compile: it accepts Python that compiled Triton rejects, and says nothing of registers or shared
memory. This module closes that gap ahead of time, on the CPU:

1. :func:`record_launches` runs the real launch code (:mod:`contrastive.engine.triton_launch`)
   with the kernels replaced by recorders, so the arguments, constexprs and launch options
   are exactly those a GPU run would use;
2. :func:`compile_usage` specialises each launch the way ``JITFunction.run`` does and
   compiles it down to a cubin with the ``ptxas`` that ships with the triton wheel, in
   worker processes where ``TRITON_INTERPRET`` is off;
3. :func:`resource_usage` reads registers, spill stack and shared memory from the cubin
   (``cuobjdump -res-usage``) and whether the dots became tensor-core instructions.

Used by ``tests/test_engine_triton_compile.py`` and ``benchmarks/triton_static.py``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import multiprocessing
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from contrastive.engine import triton_launch

#: Shared memory one block may use (bytes, opt-in maximum) per compute capability we compile for.
SHARED_MEMORY_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}
_KERNELS = Path(triton_launch.__file__).with_name("triton_kernels.py")


@dataclass(frozen=True)
class Launch:
    """One recorded kernel launch: the kernel's name, its positional arguments and keywords."""

    kernel: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(hash=False)

    def key(self) -> tuple[object, ...]:
        """Return what decides the compiled binary: kernel, argument types and constexpr/launch keywords."""
        kinds = tuple(str(a.dtype) if hasattr(a, "dtype") else type(a).__name__ for a in self.args)
        return (self.kernel, kinds, tuple(sorted((k, str(v)) for k, v in self.kwargs.items())))


@dataclass(frozen=True)
class Usage:
    """Resources of one compiled kernel: registers and spill stack per thread, shared memory, dot kind."""

    registers: int
    stack_bytes: int
    shared_bytes: int
    tensor_cores: str


class _Recorder:
    """Stands in for a ``JITFunction``: ``kernel[grid](*args, **kwargs)`` appends a :class:`Launch`."""

    def __init__(self, name: str, launches: list[Launch]) -> None:
        self.name, self.launches = name, launches

    def __getitem__(self, grid: object) -> Callable[..., None]:
        def launch(*args: Any, **kwargs: Any) -> None:
            detached = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
            self.launches.append(Launch(self.name, detached, dict(kwargs)))

        return launch


@contextlib.contextmanager
def record_launches() -> Iterator[list[Launch]]:
    """Within the block, kernel launches of :mod:`~contrastive.engine.triton_launch` are recorded, not run.

    The launch code sees a compiling (not interpreting) setup, so dtypes and options are a GPU's,
    while CPU tensors are let through. Outputs stay as allocated (zeros or -inf).
    """
    from contrastive.engine import triton as engine

    launches: list[Launch] = []
    module = compiled_kernels()
    fake = ModuleType("recorded_kernels")
    for name in (n for n in dir(module) if n.endswith("_kernel")):
        setattr(fake, name, _Recorder(name, launches))
    saved = (triton_launch._kernels, engine.can_launch)
    triton_launch._kernels, engine.can_launch = (lambda: fake), (lambda device: True)
    try:
        with _environ("TRITON_INTERPRET", "0"):
            yield launches
    finally:
        triton_launch._kernels, engine.can_launch = saved


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    """Within the block the environment variable ``name`` is ``value``; afterwards as before."""
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def engine_launches(
    dtype: torch.dtype, dim: int, exponents: tuple[float, ...], tiles: str = ""
) -> list[Launch]:
    """Record the launches of general, symmetric and dual statistics (forward, backward) on ``dtype`` inputs.

    ``tiles`` overrides the automatic tile configuration, as the variable
    :data:`~contrastive.engine.triton_launch.TILES_ENV` does.
    """
    from contrastive.engine.triton import DualTritonRowStats, SymmetricTritonRowStats, TritonRowStats

    g = torch.Generator().manual_seed(0)
    a = torch.randn(70, dim, generator=g).to(dtype).requires_grad_()
    c = torch.randn(50, dim, generator=g).to(dtype).requires_grad_()
    labels_a, labels_c = torch.randint(0, 3, (70,), generator=g), torch.randint(0, 3, (50,), generator=g)
    index = torch.full((70,), -1)
    inv_tau = torch.tensor(5.0, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    with _environ(triton_launch.TILES_ENV, tiles), record_launches() as launches:
        for out in (
            TritonRowStats.apply(a, c, labels_a, labels_c, index, inv_tau, exponents, None),
            SymmetricTritonRowStats.apply(a, labels_a, inv_tau, exponents, None),
            DualTritonRowStats.apply(a, c, labels_a, labels_c, inv_tau, exponents, None),
        ):
            sum(x.nan_to_num(0.0, 0.0, 0.0).sum() for x in out).backward()
    return launches


def unique(launches: list[Launch]) -> list[Launch]:
    """Return one launch per distinct binary (first seen first)."""
    seen: dict[tuple[object, ...], Launch] = {}
    for launch in launches:
        seen.setdefault(launch.key(), launch)
    return list(seen.values())


class KernelCompileError(RuntimeError):
    """A recorded launch failed to compile (the message carries the kernel and Triton's or ptxas' error)."""


@functools.cache
def compiled_kernels() -> ModuleType:
    """Return a private copy of the kernel module, whose kernels are ``JITFunction``s in a process without
    ``TRITON_INTERPRET`` (the recorder needs only their names)."""
    spec = importlib.util.spec_from_file_location("contrastive.engine._triton_kernels_aot", _KERNELS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compile_launch(launch: Launch, capability: int = 90) -> Any:
    """Compile ``launch`` for an NVIDIA GPU of compute ``capability`` (90: H100); return the CompiledKernel.

    Must run in a process that never imported triton with ``TRITON_INTERPRET`` set (triton's own
    library functions are decorated at import); :func:`compile_usage` arranges that.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = getattr(compiled_kernels(), launch.kernel)
    target = GPUTarget("cuda", capability, 32)
    backend = make_backend(target)
    kwargs = {"debug": False, **launch.kwargs}
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    source = ASTSource(fn, signature, constexprs, attrs)
    return triton.compile(source, target=target, options=options.__dict__)


def _compile_and_measure(launch: Launch, capability: int) -> Usage:
    """Compile ``launch`` and return its :func:`resource_usage` (runs in a worker process)."""
    try:
        return resource_usage(compile_launch(launch, capability))
    except Exception as error:  # noqa: BLE001 - re-raised with its text: Triton's errors do not pickle
        message = f"{launch.kernel} for sm_{capability}: {type(error).__name__}: {error}"
        raise KernelCompileError(message) from None


def compile_usage(jobs: list[tuple[Launch, int]], workers: int | None = None) -> list[Usage]:
    """Compile each ``(launch, capability)`` in fresh worker processes; return their resource usage in order.

    Raises :class:`KernelCompileError` for the first launch that does not compile.
    """
    context = multiprocessing.get_context("spawn")
    # spawned workers copy the environment when they start: no interpreter from their first import on
    with (
        _environ("TRITON_INTERPRET", "0"),
        ProcessPoolExecutor(workers or min(len(jobs), os.cpu_count() or 1) or 1, mp_context=context) as pool,
    ):
        futures = [pool.submit(_compile_and_measure, launch, capability) for launch, capability in jobs]
        return [future.result() for future in futures]


def _cuobjdump() -> str:
    """Return the path of the ``cuobjdump`` shipped with triton's NVIDIA backend."""
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump")


def resource_usage(compiled: Any) -> Usage:
    """Return the registers, spill stack, shared memory and tensor-core instructions of a compiled kernel."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kernel.cubin"
        path.write_bytes(compiled.asm["cubin"])
        report = subprocess.run(
            [_cuobjdump(), "-res-usage", str(path)], capture_output=True, text=True, check=True
        ).stdout
    match = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+)", report)
    if match is None:
        raise RuntimeError(f"cannot read cuobjdump's resource usage from:\n{report}")
    ptx = compiled.asm["ptx"]
    tensor_cores = "wgmma" if "wgmma" in ptx else "mma" if re.search(r"\bmma\.sync", ptx) else "none"
    return Usage(
        registers=int(match.group(1)),
        stack_bytes=int(match.group(2)),
        shared_bytes=int(match.group(3)) + int(compiled.metadata.shared),
        tensor_cores=tensor_cores,
    )
