"""ROS 2 parameter files (``--params-file``) checked the way a user needs: which file, which
line, which key, and whether its top-level node names apply to this node at all. No ROS import:
rcl parses the file itself; these helpers explain what it rejected or silently ignored.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Sequence

__all__ = ["params_files_from_args", "check_params_file", "explain_params_file_error", "params_file_node_names", "node_name_matches"]


def params_files_from_args(argv: Sequence[str]) -> list[str]:
    """The files given as ``--params-file FILE`` in a ROS command line."""
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--params-file"]


def _null_keys(tree: Any, prefix: str = "") -> list[str]:
    if isinstance(tree, dict):
        out = []
        for key, value in tree.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            out += [name] if value is None else _null_keys(value, name)
        return out
    return []


def check_params_file(path: str | Path) -> Optional[str]:
    """What rcl would reject in a parameter file, as one line naming the file (None: fine).

    Checked before ``rclpy.init`` so the user gets the line, the column and the key instead of
    rcl's parser error: a missing file, YAML that does not parse, a key without a value.
    """
    import yaml

    file = Path(path)
    if not file.is_file():
        return f"parameter file {path} does not exist or is not a file"
    try:
        tree = yaml.safe_load(file.read_text(errors="replace"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or type(exc).__name__
        return f"parameter file {path} is not valid YAML{line}: {what}"
    empty = [k.split("ros__parameters.", 1)[-1] for k in _null_keys(tree)]
    if empty:
        return (f"parameter file {path}: no value for {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''} "
                "(write a value or delete the key)")
    return None


def explain_params_file_error(rcl_message: str, argv: Sequence[str] = ()) -> str:
    """One line for an ``RCLError`` of ``rclpy.init``: the parameter file and what is wrong.

    Args:
        rcl_message: ``str(RCLError)``, e.g. ``failed to initialize rcl: Couldn't parse params
            file: '--params-file x.yaml'. Error: No value at line 3, at .../parse.c:258, ...``.
        argv: the command line (to find the file when the message does not name it).
    """
    text = " ".join(str(rcl_message).split())
    match = re.search(r"params file: '--params-file ([^']+)'\. Error: (.*)", text)
    if match is None:
        files = params_files_from_args(argv)
        where = f" (parameter file{'s' if len(files) > 1 else ''} {', '.join(files)})" if files else ""
        detail = re.sub(r", at [^,]*\.c:\d+", "", text)
        return f"ROS could not start{where}: {detail}"
    path, problem = match.group(1), re.sub(r", at [^,]*\.c:\d+", "", match.group(2)).strip().rstrip(".")
    found = check_params_file(path)
    return f"{found} (rcl: {problem})" if found else f"parameter file {path} was rejected by rcl: {problem}"


def params_file_node_names(path: str | Path) -> Optional[list[str]]:
    """Top-level keys (node names) of a parameter file, or None if it does not parse."""
    import yaml

    try:
        tree = yaml.safe_load(Path(path).read_text(errors="replace"))
    except (OSError, yaml.YAMLError):
        return None
    return [str(k) for k in tree] if isinstance(tree, dict) else None


def node_name_matches(key: str, name: str, fully_qualified: str) -> bool:
    """Does a parameter file's top-level ``key`` apply to the node ``name`` (``/ns/name``)?
    Wildcards as rcl has them: ``/**`` (every node), ``/**/name``, ``/ns/*``-style segments."""
    key = key.strip()
    if key in ("/**", "**"):
        return True
    if not key.startswith("/"):
        key = "/" + key
    if key == fully_qualified or key == "/" + name:
        return True
    pattern = "^" + "".join(
        "(/[^/]+)*" if seg == "**" else "/[^/]+" if seg == "*" else "/" + re.escape(seg)
        for seg in key.strip("/").split("/")
    ) + "$"
    return re.match(pattern, fully_qualified) is not None
