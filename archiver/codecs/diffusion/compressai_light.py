"""Import the parts of compressai the codec uses without its point-cloud half.

``import compressai`` runs the package's ``__init__``, which imports every subpackage; its
point-cloud transforms and its transform registry import ``torch_geometric``, which in turn
imports most of its own library. On the 2-core reference machine that is about 2.5 s of the
start-up of every ``archiver decode``, for code the codec never calls. ``load()`` executes
``compressai/__init__.py`` and ``compressai/registry/__init__.py`` from their own source, minus
the statements that pull those parts in; the entropy models, layers, latent codecs and models
then import normally. When anything about that is unexpected (another compressai version), it
falls back to the plain import: slower, never wrong.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types

#: the compressai the install command installs (``pip install --no-deps``, README "Set up"): the
#: release whose layout ``_TRIMS`` matches; without its declared torchvision, torch-geometric and
#: pandas, which the codec never imports (pyproject.toml says why it is not a dependency)
REQUIRED = "compressai==1.2.8"

#: (module, the import statement sources to leave out)
_TRIMS = (
    ("compressai", ("compressai",)),  # `from compressai import (datasets, ..., transforms, zoo)`
    ("compressai.registry", ("transforms",)),  # `from .transforms import TRANSFORMS, register_transform`
)


def _exec_trimmed(name: str, drop: tuple[str, ...]):
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(name)
    mod = importlib.util.module_from_spec(spec)
    tree = ast.parse(spec.loader.get_source(name), spec.origin)
    kept = [n for n in tree.body if not (isinstance(n, ast.ImportFrom) and n.module in drop)]
    if len(kept) != len(tree.body) - 1:
        raise ImportError(f"{name}: unexpected layout")
    tree.body = kept
    sys.modules[name] = mod
    if "." in name:
        parent, _, child = name.rpartition(".")
        setattr(sys.modules[parent], child, mod)
    exec(compile(tree, spec.origin, "exec"), mod.__dict__)
    return mod


def load() -> None:
    """Make ``compressai.entropy_models``, ``.layers``, ``.latent_codecs`` and ``.models`` importable
    cheaply; ImportError naming the install command when compressai is not installed."""
    if "compressai" in sys.modules:
        return
    if importlib.util.find_spec("compressai") is None:
        raise ImportError(f"compressai is not installed: pip install --no-deps {REQUIRED} (README, Set up)")
    # compressai.entropy_models runs `import scipy.stats` (~0.7 CPU-seconds) for one call,
    # ``norm.ppf`` in GaussianConditional.update, which the codec's entropy models replace by the
    # same function from scipy.special (entropy.py ``norm_ppf``). While compressai loads,
    # ``scipy.stats`` is a placeholder; afterwards ``scipy.stats`` is scipy's own lazy submodule
    # attribute: anyone who does call ``norm.ppf`` gets the real module then.
    placeholder = None
    if "scipy.stats" not in sys.modules:
        placeholder = sys.modules["scipy.stats"] = types.ModuleType("scipy.stats")
    try:
        _load()
        for name in ("compressai.entropy_models", "compressai.layers", "compressai.latent_codecs", "compressai.models"):
            importlib.import_module(name)
    finally:
        if placeholder is not None and sys.modules.get("scipy.stats") is placeholder:
            del sys.modules["scipy.stats"]


def _load() -> None:
    try:
        _exec_trimmed(*_TRIMS[0])
        reg = _exec_trimmed(*_TRIMS[1])
        reg.TRANSFORMS = {}

        def register_transform(name):
            def decorator(cls):
                reg.TRANSFORMS[name] = cls
                return cls

            return decorator

        reg.register_transform = register_transform
    except Exception:  # noqa: BLE001 - any surprise: forget the partial modules, import the whole package
        for k in [k for k in sys.modules if k == "compressai" or k.startswith("compressai.")]:
            del sys.modules[k]
        import compressai  # noqa: F401  # heavy: compressai (torch), optional
