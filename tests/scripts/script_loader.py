"""Helpers of the tests of ``scripts/``: import a script as a module (``scripts/`` is not a package), read a
markdown table back."""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(REPO_ROOT, "scripts")


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as the module ``sb3_mb_scripts_<name>`` (cached in ``sys.modules``)."""
    if SCRIPTS not in sys.path:  # as when run as ``python scripts/<name>.py``: the scripts import each other
        sys.path.insert(0, SCRIPTS)
    module_name = f"sb3_mb_scripts_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, os.path.join(SCRIPTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of a pytablewriter markdown table, header first, without the title and the rule."""
    lines = [line for line in markdown.splitlines() if line.startswith("|") and not line.startswith("|-")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
