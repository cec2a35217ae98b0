"""The package layout the one-pipeline move set up (../shared/architecture.md), checked on the code.

* ``vln_core/models`` holds networks: it imports nothing from the runtime, the backends or the
  export, neither at the top of a module nor inside a function, and importing every one of its
  modules loads none of them;
* the backends and the export import nothing from the runtime (the runtime runs backends, not
  the other way round);
* every model configuration registered makes its heatmaps through the one reprojection: the
  retired token decoder is gone from the code.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "vln_core"


def imported_modules(folder: Path) -> dict[str, set[str]]:
    """``{file: modules it imports}`` for every .py under ``folder``, function-level imports included."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[str(path.relative_to(REPO))] = names
    return found


@pytest.mark.parametrize("folder,forbidden", [
    ("models", ("vln_core.runtime", "vln_core.backends", "vln_core.export")),
    ("backends", ("vln_core.runtime",)),
    ("export", ("vln_core.runtime", "vln_core.backends")),
])
def test_import_graph_points_one_way(folder, forbidden):
    offending = {file: sorted(m for m in modules if m.startswith(forbidden))
                 for file, modules in imported_modules(PACKAGE / folder).items()}
    offending = {file: mods for file, mods in offending.items() if mods}
    assert not offending, offending


def test_importing_every_model_module_loads_no_runtime_backend_or_export():
    modules = sorted(".".join(p.relative_to(REPO).with_suffix("").parts) for p in (PACKAGE / "models").rglob("*.py"))
    modules = [m[: -len(".__init__")] if m.endswith(".__init__") else m for m in modules]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print(sorted(m for m in sys.modules if m.startswith(('vln_core.runtime', 'vln_core.backends', "
              "'vln_core.export'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout
    assert len(modules) > 15  # the check saw the whole package


def test_the_token_heatmap_decoder_is_retired():
    from vln_core.models import list_models
    from vln_core.models import heads

    assert list_models() == ["base", "embedded", "full", "small"]
    assert not hasattr(heads, "HeatmapDecoder") and hasattr(heads, "GoalHeatmapDecoder")
    users = [f for f, mods in imported_modules(PACKAGE).items() if "vln_core.models.reprojected_heatmaps" in mods
             or "vln_core.models.reprojected_heatmaps.reprojected_heatmap_outputs" in mods]
    assert {"vln_core/models/spatial_model.py", "vln_core/models/reprojection_model.py"} <= set(users), users
