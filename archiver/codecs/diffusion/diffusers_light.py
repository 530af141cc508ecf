"""Import the diffusers classes the embedded backbones use without the rest of diffusers.

Why: ``from diffusers.models.autoencoders.vae import ...`` runs the ``__init__`` of
``diffusers.models.autoencoders``, which imports every autoencoder diffusers ships (~40);
``unet_2d`` does the same through ``diffusers.models.unets`` and ``diffusers.models.transformers``
(~100 transformer models); ``diffusers.utils`` imports ``torch._dynamo`` (with sympy, triton and
torch.distributed) only for the ``torch.compile`` hint ``maybe_allow_in_graph``; and
``diffusers.quantizers`` imports ``transformers``. Together with ``torch._inductor`` (see
``tensors._use_deterministic``) that was ~5 of the ~10 CPU-seconds of an ``archiver decode`` of a
small .dlc (docs/operations.md, "Start-up time").

``load()`` makes those three sub-packages plain namespaces while the codec's modules load (each
runs its real ``__init__`` the first time anything else is asked of it, so later imports of any
other diffusers class work as usual, as the same class objects), and hides ``torch._dynamo`` and
``transformers`` during that import, so diffusers takes its own fallbacks for them (and hands
diffusers the map of installed distributions built on first use, which it never reads for the
packages archiver has):
``maybe_allow_in_graph`` = identity (a ``torch.compile`` hint; archiver never compiles) and a
placeholder for transformers' quantization config (used only by quantized pipelines, which
archiver does not build). Nothing the codec computes depends on either. The classes are
diffusers' own, loaded from diffusers' own files: decoded pixels are bit-identical (the release
fixtures in tests/data/dlc check it, in a fresh process). When anything is unexpected (another
diffusers layout) it falls back to the plain import: slower, never wrong.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import threading
import types
from collections.abc import Mapping

#: sub-packages whose ``__init__`` imports every model of its kind
_LAZY_PACKAGES = ("diffusers.models.autoencoders", "diffusers.models.unets", "diffusers.models.transformers")
#: what the embedded backbones import (block_ae.py, rd_ae.py, tiny.py)
_NEEDED = ("diffusers.configuration_utils", "diffusers.models.modeling_utils", "diffusers.models.modeling_outputs",
           "diffusers.models.autoencoders.vae", "diffusers.models.unets.unet_2d",
           "diffusers.schedulers.scheduling_ddim")

_lock = threading.RLock()


def _deferred_package(name: str) -> types.ModuleType:
    """The package ``name`` without running its ``__init__`` until an attribute that is not a
    loaded submodule is asked for (PEP 562 ``__getattr__``)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(name)
    mod = importlib.util.module_from_spec(spec)

    def __getattr__(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if importlib.util.find_spec(f"{name}.{attr}") is not None:  # a submodule: load just that
            return importlib.import_module(f"{name}.{attr}")
        with _lock:
            if mod.__dict__.get("__getattr__") is __getattr__:
                del mod.__dict__["__getattr__"]
                spec.loader.exec_module(mod)  # the real __init__, in the same module object
        try:
            return mod.__dict__[attr]
        except KeyError:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}") from None

    mod.__getattr__ = __getattr__
    sys.modules[name] = mod
    parent, _, child = name.rpartition(".")
    setattr(sys.modules[parent], child, mod)
    return mod


def load() -> None:
    """Make the modules in ``_NEEDED`` importable cheaply (idempotent; a no-op once diffusers
    was imported some other way: there is nothing left to save)."""
    with _lock:
        if "diffusers" in sys.modules:
            return
        import torch  # noqa: F401  imported normally, before anything is hidden  # heavy: torch, optional and slow to import

        hidden: list[str] = []

        def hide(name: str) -> None:
            if name not in sys.modules:
                sys.modules[name] = None  # `import name` raises ImportError meanwhile
                hidden.append(name)

        real_map = importlib.metadata.packages_distributions
        try:
            hide("torch._dynamo")
            # diffusers.utils maps every installed distribution's files at import (~0.5-1.5 CPU-s),
            # for the names of three optional packages only: it gets the same map, built on first use
            importlib.metadata.packages_distributions = lambda: _LazyMap(real_map)
            import diffusers.models  # noqa: F401  diffusers' lazy top level (and diffusers.utils)  # heavy: diffusers, optional and slow to import
            importlib.metadata.packages_distributions = real_map

            # only now: diffusers.utils records which packages are installed (find_spec would
            # report a hidden one as missing for the rest of the process)
            hide("transformers")
            for name in _LAZY_PACKAGES:
                _deferred_package(name)
            for name in _NEEDED:
                importlib.import_module(name)
        except Exception:  # noqa: BLE001 - any surprise: forget the partial modules, import the plain way
            for k in [k for k in sys.modules if k == "diffusers" or k.startswith("diffusers.")]:
                del sys.modules[k]
            _unhide(hidden)
            hidden.clear()
            for name in _NEEDED:
                importlib.import_module(name)
        finally:
            importlib.metadata.packages_distributions = real_map
            _unhide(hidden)


class _LazyMap(Mapping):
    """``build()``'s mapping, built the first time it is read."""

    def __init__(self, build):
        self._build, self._map = build, None

    def _m(self) -> Mapping:
        if self._map is None:
            self._map = self._build()
        return self._map

    def __getitem__(self, key):
        return self._m()[key]

    def __iter__(self):
        return iter(self._m())

    def __len__(self) -> int:
        return len(self._m())


def _unhide(names) -> None:
    for name in names:
        if sys.modules.get(name, 0) is None:
            del sys.modules[name]
