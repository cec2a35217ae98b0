"""launch/nav.launch.py, checked statically (the `launch` packages are not installable from PyPI).

The file is parsed with `ast`: every executable it starts must be a console script of the
package (or rviz2), every file it names must exist and be installed by setup.py, and it must
declare the launch arguments the README documents.
"""
from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from vln_core.config import NodeConfig, TopicsConfig

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "nav.launch.py"
PACKAGE_DIR = REPO / "ros2_ws" / "src" / "vln_heatmap"
SETUP = PACKAGE_DIR / "setup.py"
REQUIRED_ARGUMENTS = {
    "camera_topic", "depth_topic", "camera_info_topic", "odometry_topic",
    "params_file", "backend", "model_path", "rviz",
}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _module_constants(tree: ast.Module) -> dict[str, object]:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def _kw(call: ast.Call, key: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == key), None)


def _value(node: ast.expr, constants: dict[str, object]) -> object:
    if isinstance(node, ast.Name):
        return constants[node.id]
    return ast.literal_eval(node)


def _console_scripts() -> dict[str, str]:
    setup_call = _calls(_tree(SETUP), "setup")[0]
    entry_points = ast.literal_eval(_kw(setup_call, "entry_points"))
    return {s.split("=")[0].strip(): s.split("=")[1].strip() for s in entry_points["console_scripts"]}


@pytest.fixture(scope="module")
def launch_tree() -> ast.Module:
    compile(LAUNCH.read_text(), str(LAUNCH), "exec")  # valid Python
    return _tree(LAUNCH)


def test_declares_the_documented_arguments(launch_tree):
    declared = {}
    for call in _calls(launch_tree, "DeclareLaunchArgument"):
        name = ast.literal_eval(call.args[0])
        declared[name] = call
        assert _kw(call, "description") is not None, f"launch argument {name} has no description"
    missing = REQUIRED_ARGUMENTS - set(declared)
    assert not missing, f"launch file does not declare {sorted(missing)}"
    assert ast.literal_eval(_kw(declared["rviz"], "choices")) == ["true", "false"]
    backends = list(typing.get_args(typing.get_type_hints(NodeConfig)["backend"]))
    assert ast.literal_eval(_kw(declared["backend"], "choices")) == backends
    assert ast.literal_eval(_kw(declared["backend"], "default_value")) == NodeConfig().backend


def test_executables_are_package_entry_points(launch_tree):
    constants = _module_constants(launch_tree)
    scripts = _console_scripts()
    nodes = _calls(launch_tree, "Node")
    assert nodes, "launch file starts no Node"
    packages = set()
    for call in nodes:
        package = _value(_kw(call, "package"), constants)
        executable = _value(_kw(call, "executable"), constants)
        packages.add(package)
        if package == "vln_heatmap":
            assert executable in scripts, f"{executable} is not a console script of vln_heatmap ({sorted(scripts)})"
            module, func = scripts[executable].split(":")
            module_file = PACKAGE_DIR / (module.replace(".", "/") + ".py")
            assert module_file.is_file(), f"entry point module {module_file} missing"
            assert any(isinstance(n, ast.FunctionDef) and n.name == func for n in _tree(module_file).body)
            # parameters: the params file first, then the overrides; remappings from the topic arguments
            params = _kw(call, "parameters")
            assert isinstance(params, ast.List) and len(params.elts) == 2
            assert _kw(call, "remappings") is not None
            assert _value(_kw(call, "name"), constants) == "vln_heatmap_node"  # the parameter file's key
        else:
            assert (package, executable) == ("rviz2", "rviz2"), f"unexpected executable {package}/{executable}"
            condition = _kw(call, "condition")
            assert isinstance(condition, ast.Call) and condition.func.id == "IfCondition"
    assert packages == {"vln_heatmap", "rviz2"}


def test_referenced_files_exist_and_are_installed(launch_tree):
    """Paths built as ``share / "config" / "vln_heatmap.yaml"`` exist in the package and setup.py installs them."""
    referenced = set()
    for node in ast.walk(launch_tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant):
            parts = []
            cur = node
            while isinstance(cur, ast.BinOp) and isinstance(cur.right, ast.Constant):
                parts.insert(0, cur.right.value)
                cur = cur.left
            referenced.add("/".join(parts))
    referenced = {r for r in referenced if "/" in r}
    assert {"config/vln_heatmap.yaml", "rviz/vln_heatmap.rviz"} <= referenced, referenced
    setup_text = SETUP.read_text()
    for rel in referenced:
        assert (PACKAGE_DIR / rel).is_file(), f"launch file refers to {rel}, missing in {PACKAGE_DIR}"
        assert f'"{rel}"' in setup_text, f"setup.py does not install {rel}"
    rviz = yaml.safe_load((PACKAGE_DIR / "rviz/vln_heatmap.rviz").read_text())
    topics = {d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"] if "Topic" in d}
    assert "/vln_heatmap_node/overlay" in topics and "/vln_heatmap_node/waypoints" in topics


def test_remapped_topics_are_config_topics(launch_tree):
    """The launch file remaps the topics the node subscribes to: read with the config system."""
    constants = _module_constants(launch_tree)
    topic_fields = {f.name for f in dataclasses.fields(TopicsConfig)}
    assert set(constants["TOPIC_ARGUMENTS"].values()) <= topic_fields
    assert set(constants["TOPIC_ARGUMENTS"]) == {"camera_topic", "depth_topic", "camera_info_topic", "odometry_topic"}
    imports = [n for n in launch_tree.body if isinstance(n, ast.ImportFrom) and n.module == "vln_core.config"]
    assert imports and "load_config" in {a.name for a in imports[0].names}
    assert _calls(launch_tree, "load_config"), "launch file does not read the parameter file with load_config"
