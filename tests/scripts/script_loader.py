"""Import a file of the top-level ``scripts/`` folder as a module (it is not a package)."""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(REPO_ROOT, "scripts")


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as the module ``sb3_mb_scripts_<name>`` (cached in ``sys.modules``)."""
    module_name = f"sb3_mb_scripts_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, os.path.join(SCRIPTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
