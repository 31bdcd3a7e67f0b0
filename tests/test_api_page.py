"""The API reference page documents every public name of every module."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import tinyformer

API = (Path(__file__).resolve().parent.parent / "book" / "api.md").read_text()
DOCUMENTED = set(re.findall(r"\.\. auto(?:function|class|exception)::\s+(\S+)", API))


def public_names(module):
    """The module's __all__, or the functions and classes it defines itself."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [name for name, obj in vars(module).items()
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            and obj.__module__ == module.__name__]


def test_every_public_name_is_on_the_api_page():
    missing = []
    modules = [tinyformer] + [
        importlib.import_module(f"tinyformer.{info.name}")
        for info in pkgutil.iter_modules(tinyformer.__path__) if not info.name.startswith("_")]
    for module in modules:
        for name in public_names(module):
            obj = getattr(module, name)
            places = {f"{module.__name__}.{name}", f"tinyformer.{name}",
                      f"{getattr(obj, '__module__', '')}.{name}"}
            if not places & DOCUMENTED:
                missing.append(f"{module.__name__}.{name}")
    assert not missing, f"not on book/api.md: {missing}"
