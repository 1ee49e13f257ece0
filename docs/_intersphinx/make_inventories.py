"""Write the small intersphinx inventories in this folder, so the docs build offline.

CI builds the documentation without network access, so intersphinx cannot download
the inventories of Python, PyTorch, NumPy, pluggy, pytest and hypothesis there. This
script writes, for each project, an ``objects.inv`` (format 2) holding exactly the
external objects these docs refer to, with their addresses in that project's
documentation; ``docs/conf.py`` points intersphinx at these files. The links in the
built pages go to the real documentation.

    python docs/_intersphinx/make_inventories.py           # rewrite the .inv files from TARGETS
    python docs/_intersphinx/make_inventories.py --fetch   # with network: download the real ones

When a new external reference appears in the docs, the build (``-n``) names it as
missing: add it to ``TARGETS`` and run the script.
"""

from __future__ import annotations

import argparse
import urllib.request
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: project -> (version, base url, {name: (domain:role, address relative to the base url[, shown as])})
TARGETS: dict[str, tuple[str, str, dict[str, tuple[str, ...]]]] = {
    "python": (
        "3",
        "https://docs.python.org/3",
        {
            **{
                name: ("py:class", f"library/functions.html#{name}")
                for name in ("int", "float", "bool", "object", "type")
            },
            **{
                name: ("py:class", f"library/stdtypes.html#{name}")
                for name in ("str", "bytes", "tuple", "list", "dict", "set")
            },
            "None": ("py:data", "library/constants.html#None"),
            **{
                name: ("py:exception", f"library/exceptions.html#{name}")
                for name in (
                    "AssertionError",
                    "AttributeError",
                    "LookupError",
                    "RuntimeError",
                    "TypeError",
                    "UserWarning",
                    "ValueError",
                )
            },
            **{
                f"typing.{name}": ("py:data", f"library/typing.html#typing.{name}")
                for name in ("Any", "ClassVar", "Literal", "Union", "Optional")
            },
            **{
                f"typing.{name}": ("py:class", f"library/typing.html#typing.{name}")
                for name in ("Generic", "NamedTuple", "Protocol", "TypeVar")
            },
            **{
                f"collections.abc.{name}": (
                    "py:class",
                    f"library/collections.abc.html#collections.abc.{name}",
                )
                for name in ("Callable", "Iterable", "Iterator", "Mapping", "Sequence")
            },
            "argparse.ArgumentParser": ("py:class", "library/argparse.html#argparse.ArgumentParser"),
            "argparse.Namespace": ("py:class", "library/argparse.html#argparse.Namespace"),
            "pathlib.Path": ("py:class", "library/pathlib.html#pathlib.Path"),
            "types.SimpleNamespace": ("py:class", "library/types.html#types.SimpleNamespace"),
            "threading.RLock": ("py:function", "library/threading.html#threading.RLock"),
            "dataclasses.dataclass": ("py:function", "library/dataclasses.html#dataclasses.dataclass"),
        },
    ),
    "torch": (
        "stable",
        "https://docs.pytorch.org/docs/stable",
        {
            "torch": ("py:module", "torch.html#module-torch"),
            "torch.Tensor": ("py:class", "tensors.html#torch.Tensor"),
            "torch.Size": ("py:class", "size.html#torch.Size"),
            "torch.tensor_split": ("py:function", "generated/torch.tensor_split.html#torch.tensor_split"),
            "torch.nn.Sequential": ("py:class", "generated/torch.nn.Sequential.html#torch.nn.Sequential"),
            # where the public classes are defined; autodoc names them so (shown by the public name)
            "torch._C.Generator": (
                "py:class",
                "generated/torch.Generator.html#torch.Generator",
                "torch.Generator",
            ),
            "torch.nn.modules.module.Module": (
                "py:class",
                "generated/torch.nn.Module.html#torch.nn.Module",
                "torch.nn.Module",
            ),
            "torch.nn.modules.container.Sequential": (
                "py:class",
                "generated/torch.nn.Sequential.html#torch.nn.Sequential",
                "torch.nn.Sequential",
            ),
            "torch.dtype": ("py:class", "tensor_attributes.html#torch.dtype"),
            "torch.device": ("py:class", "tensor_attributes.html#torch.device"),
            "torch.Generator": ("py:class", "generated/torch.Generator.html#torch.Generator"),
            "torch.nn.Module": ("py:class", "generated/torch.nn.Module.html#torch.nn.Module"),
            "torch.nn.ModuleList": ("py:class", "generated/torch.nn.ModuleList.html#torch.nn.ModuleList"),
            "torch.nn.Parameter": (
                "py:class",
                "generated/torch.nn.parameter.Parameter.html#torch.nn.parameter.Parameter",
            ),
            "torch.nn.parallel.DistributedDataParallel": (
                "py:class",
                "generated/torch.nn.parallel.DistributedDataParallel.html"
                "#torch.nn.parallel.DistributedDataParallel",
            ),
            "torch.optim.Optimizer": ("py:class", "optim.html#torch.optim.Optimizer"),
            "torch.utils.data.distributed.DistributedSampler": (
                "py:class",
                "data.html#torch.utils.data.distributed.DistributedSampler",
            ),
            "torch.distributed": ("py:module", "distributed.html#module-torch.distributed"),
            "torch.distributed.nn.functional.all_gather": (
                "py:function",
                "distributed.html#torch.distributed.nn.functional.all_gather",
            ),
            "torch.distributed.nn.functional.all_reduce": (
                "py:function",
                "distributed.html#torch.distributed.nn.functional.all_reduce",
            ),
        },
    ),
    "numpy": (
        "stable",
        "https://numpy.org/doc/stable",
        {
            "numpy.ndarray": ("py:class", "reference/generated/numpy.ndarray.html#numpy.ndarray"),
            "numpy.random.Generator": ("py:class", "reference/random/generator.html#numpy.random.Generator"),
        },
    ),
    "pluggy": (
        "stable",
        "https://pluggy.readthedocs.io/en/stable",
        {
            f"pluggy.{name}": ("py:class", f"api_reference.html#pluggy.{name}")
            for name in ("HookimplMarker", "HookspecMarker", "PluginManager")
        },
    ),
    "pytest": (
        "stable",
        "https://docs.pytest.org/en/stable",
        {
            f"pytest.{name}": ("py:class", f"reference/reference.html#pytest.{name}")
            for name in ("Config", "ExceptionInfo", "Item", "Parser", "Session", "TempPathFactory")
        },
    ),
    "hypothesis": (
        "latest",
        "https://hypothesis.readthedocs.io/en/latest",
        {
            f"hypothesis.strategies.{name}": (
                "py:class",
                f"reference/strategies.html#hypothesis.strategies.{name}",
            )
            for name in ("SearchStrategy", "DrawFn")
        },
    ),
}


def inventory_bytes(project: str, version: str, objects: dict[str, tuple[str, ...]]) -> bytes:
    """An ``objects.inv`` in Sphinx's format 2 for ``objects``."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "".join(
        f"{name} {target[0]} 1 {target[1]} {target[2] if len(target) > 2 else '-'}\n"
        for name, target in sorted(objects.items())
    )
    return header.encode() + zlib.compress(body.encode())


def main() -> None:
    """Write (or, with ``--fetch``, download) one ``<project>.inv`` per project."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fetch", action="store_true", help="download the projects' real inventories")
    args = parser.parse_args()
    for project, (version, base, objects) in TARGETS.items():
        path = HERE / f"{project}.inv"
        if args.fetch:
            with urllib.request.urlopen(f"{base}/objects.inv", timeout=60) as response:  # noqa: S310
                path.write_bytes(response.read())
        else:
            path.write_bytes(inventory_bytes(project, version, objects))
        print(f"wrote {path.relative_to(HERE.parent.parent)}")


if __name__ == "__main__":
    main()
