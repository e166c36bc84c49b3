"""Import the repository's scripts (tools/, datasets/) as modules, by path."""

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_script(relative_path: str) -> ModuleType:
    path = REPO_ROOT / relative_path
    name = "d2seg_script_" + path.stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def run_script(relative_path: str, *args: str, timeout: float = 300, env: dict | None = None):
    """Run a repository script as a user would (`python SCRIPT ARGS` from the repository
    root); returns (exit code, stdout + stderr)."""
    result = subprocess.run(
        [sys.executable, relative_path, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return result.returncode, result.stdout + result.stderr
