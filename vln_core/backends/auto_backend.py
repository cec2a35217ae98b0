"""``node.backend: auto``: the exact geometry backend when depth and poses arrive, else the learned one.

:class:`AutoBackend` holds the :class:`~vln_core.backends.geometry_backend.GeometryBackend` and, created
on first use (loading a checkpoint takes seconds), the learned backend (``model`` by default).
:class:`~vln_core.runtime.NavigationRuntime` calls :meth:`AutoBackend.choose` at every step with
how long ago depth and poses last arrived; every other call (``infer``, ``output_size``,
``frame_geometry``, the ``needs_*`` attributes the runtime pairs frames by) goes to the backend
chosen. The choice and its reason are in :meth:`describe` (``/diagnostics``), e.g.
``geometry: depth and poses paired`` or ``model (rgb_pose): no depth image for 2.0 s``.

Rules (``window_s`` = :data:`AUTO_WINDOW_S`, the same 2 s after which diagnostics call an input
stale):

* depth and poses both arrived within ``window_s``: ``geometry``;
* otherwise the learned backend, in ``rgb_pose`` when poses arrive (unless ``node.learned_mode``
  forces ``rgb_only``), else ``rgb_only``;
* before the first choice, images wait up to ``window_s`` (from the first image) for depth and
  poses, so an RGB-D robot never loads the learned model because its first image beat its first
  depth image.

Switching backends clears the keyframe memory (keyframes of one backend lack what the other
needs); the runtime does that and logs it as ``backend_switched``.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from vln_core.config import VLNConfig
from vln_core.backends.base import (
    BackendResult,
    BackendUnavailableError,
    CameraFrame,
    HeatmapBackend,
    create_backend,
    register_backend,
)
from vln_core.backends.geometry_backend import GeometryBackend

__all__ = ["AutoBackend", "AUTO_WINDOW_S", "AUTO_LEARNED_BACKEND"]

#: Depth / poses count as arriving when the last one came at most this long ago (seconds).
AUTO_WINDOW_S = 2.0
#: The learned backend ``auto`` falls back to.
AUTO_LEARNED_BACKEND = "model"


def _age_text(age_s: Optional[float], what: str) -> str:
    return f"no {what} received yet" if age_s is None else f"no {what} for {age_s:.1f} s"


@register_backend("auto")
class AutoBackend(HeatmapBackend):
    """See the module doc.

    Args:
        cfg: the project config.
        learned: registry name of the learned backend (default :data:`AUTO_LEARNED_BACKEND`).
        geometry: the geometry backend (default: ``GeometryBackend(cfg)``).
        learned_factory: builds the learned backend (default: ``create_backend(learned, cfg)``).
        window_s: see :data:`AUTO_WINDOW_S`.
    """

    def __init__(self, cfg: VLNConfig, learned: str = AUTO_LEARNED_BACKEND,
                 geometry: Optional[HeatmapBackend] = None,
                 learned_factory: Optional[Callable[[VLNConfig], HeatmapBackend]] = None,
                 window_s: float = AUTO_WINDOW_S) -> None:
        self.cfg = cfg
        self.learned_name = learned
        self.geometry = geometry if geometry is not None else GeometryBackend(cfg)
        self._default_factory = learned_factory is None
        self._learned_factory = learned_factory or (lambda c: create_backend(learned, c))
        self._learned: Optional[HeatmapBackend] = None
        self._learned_error: Optional[str] = None
        self.window_s = float(window_s)
        self.active: Optional[HeatmapBackend] = None  # None until the first choice
        self.choice = ""  # "geometry" or the learned backend's name
        self.reason = f"not chosen yet: waiting up to {self.window_s:g} s for depth and poses"

    # ------------------------------------------------------------------ choice
    @property
    def learned(self) -> HeatmapBackend:
        """The learned backend, created on first use; a failed creation is not retried (the
        error names the cause, e.g. a missing checkpoint)."""
        if self._learned is None:
            if self._learned_error is not None:
                raise BackendUnavailableError(self._learned_error)
            try:
                self._learned = self._learned_factory(self.cfg)
            except Exception as exc:
                self._learned_error = (f"auto: no depth and poses for the geometry backend, and the learned backend "
                                       f"{self.learned_name!r} could not be created: {type(exc).__name__}: {exc}")
                raise BackendUnavailableError(self._learned_error) from exc
        return self._learned

    @property
    def loaded_learned(self) -> Optional[HeatmapBackend]:
        """The learned backend if it was created already (never creates it)."""
        return self._learned

    @property
    def learned_error(self) -> Optional[str]:
        """Why the learned backend cannot be used (start-up check or a failed creation), or None."""
        return self._learned_error

    def check_learned(self) -> Optional[str]:
        """Start-up check of the learned path without building the model: for ``model``, its
        checkpoint (``node.model_path`` or the shipped one) must exist and load (archive CRC,
        readable, finite weights). Returns the problem (also kept: the learned backend is then
        not tried again) or None. Other learned backends and custom factories are not checked."""
        if self._learned is not None or self._learned_error is not None:
            return self._learned_error
        if self.learned_name != "model" or not self._default_factory:
            return None
        from vln_core.models.shipped import SHIPPED_CHECKPOINT
        from vln_core.train.checkpoint import load_checkpoint

        path = getattr(self.cfg.node, "model_path", "") or SHIPPED_CHECKPOINT
        try:
            state = load_checkpoint(path)
        except Exception as exc:  # noqa: BLE001 - InputError names the file; anything else too
            self._learned_error = (f"auto: the learned backend {self.learned_name!r} could not be created (checked at "
                                   f"start-up; only geometry, with depth and poses, can serve): {exc}")
            return self._learned_error
        del state
        return None

    def replace_learned(self, backend: HeatmapBackend) -> None:
        """Serve ``backend`` as the learned backend from now on (a hot-swapped model): it replaces
        the loaded one (closed), or an earlier failure (a fixed checkpoint makes the path usable)."""
        old, self._learned, self._learned_error = self._learned, backend, None
        if self.active is not None and self.active is old:
            self.active = backend
        if old is not None:
            old.close()

    def decide(self, depth_age_s: Optional[float], pose_age_s: Optional[float],
               images_for_s: Optional[float]) -> tuple[Optional[str], str]:
        """``(choice, reason)`` for the ages (seconds since the last depth image / pose, None =
        never) and how long images have been arriving; choice None = wait (no choice yet)."""
        depth_ok = depth_age_s is not None and depth_age_s <= self.window_s
        pose_ok = pose_age_s is not None and pose_age_s <= self.window_s
        if depth_ok and pose_ok:
            return "geometry", "geometry: depth and poses paired"
        if self.active is None and (images_for_s is None or images_for_s < self.window_s):
            return None, f"auto: waiting up to {self.window_s:g} s for depth and poses before choosing a backend"
        forced_rgb_only = getattr(self.cfg.node, "learned_mode", "auto") == "rgb_only"
        mode = "rgb_pose" if pose_ok and not forced_rgb_only else "rgb_only"
        why = []
        if not depth_ok:
            why.append(_age_text(depth_age_s, "depth image"))
        if not pose_ok:
            why.append(_age_text(pose_age_s, "poses"))
        if forced_rgb_only and pose_ok:
            why.append("node.learned_mode is rgb_only")
        return self.learned_name, f"{self.learned_name} ({mode}): " + ", ".join(why)

    def choose(self, depth_age_s: Optional[float], pose_age_s: Optional[float],
               images_for_s: Optional[float]) -> tuple[bool, str]:
        """Make the choice of :meth:`decide` current (creating the learned backend when first
        chosen). Returns ``(switched, reason)``: ``switched`` is True when a backend was active
        and another one now is. Raises what creating the learned backend raises (the previous
        choice stays)."""
        name, reason = self.decide(depth_age_s, pose_age_s, images_for_s)
        if name is None:
            self.reason = reason
            return False, reason
        backend = self.geometry if name == "geometry" else self.learned
        switched = self.active is not None and backend is not self.active
        self.active, self.choice, self.reason = backend, name, reason
        return switched, reason

    def _current(self) -> HeatmapBackend:
        return self.active if self.active is not None else self.geometry

    # ------------------------------------------------------------------ the chosen backend's facts
    @property
    def name(self) -> str:  # type: ignore[override]
        return f"auto ({self.choice})" if self.choice else "auto"

    @property
    def needs_depth(self) -> bool:  # type: ignore[override]
        return self._current().needs_depth

    @property
    def needs_intrinsics(self) -> bool:  # type: ignore[override]
        return self._current().needs_intrinsics

    @property
    def needs_pose(self) -> bool:  # type: ignore[override]
        return self._current().needs_pose

    @property
    def predicts_waypoints(self) -> bool:  # type: ignore[override]
        return self._current().predicts_waypoints or self._learned_heads_on_geometry()

    def _learned_heads_on_geometry(self) -> bool:
        """Geometry serves and ``node.auto_learned_heads``: the learned goal and waypoint heads
        run on the current frame too (unless the learned backend failed to load)."""
        return (self.active is self.geometry and self.active is not None and self._learned_error is None
                and self.cfg.node.auto_learned_heads)

    @property
    def goal_activation(self) -> str:  # type: ignore[override]
        return getattr(self._learned, "goal_activation", "softmax") if self._learned is not None else "softmax"

    @property
    def decided(self) -> bool:
        return self.active is not None

    def infer(self, current: CameraFrame, keyframes: list[CameraFrame], instruction: str) -> BackendResult:
        if self.active is None:
            raise BackendUnavailableError(f"auto backend: {self.reason}")
        result = self.active.infer(current, keyframes, instruction)
        if self._learned_heads_on_geometry():
            try:
                learned = self.learned
            except BackendUnavailableError:
                return result  # the exact heatmaps still serve; diagnostics say why (learned_error)
            heads = getattr(learned, "goal_and_waypoints", None)
            if heads is not None:
                goal, waypoints = heads(current, instruction)
                result = BackendResult(heatmaps=result.heatmaps, waypoints=waypoints, goal_heatmap=goal)
        return result

    def output_size(self, current: CameraFrame) -> tuple[int, int]:
        return self._current().output_size(current)

    def frame_geometry(self, frame: CameraFrame) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return self._current().frame_geometry(frame)

    def describe(self) -> dict[str, str]:
        info = dict(self._current().describe()) if self.active is not None else {}
        info["backend"] = self.name
        info["auto_selection"] = self.reason
        info["auto_learned_backend"] = self.learned_name + (
            " (not loaded)" if self._learned is None and self._learned_error is None else
            " (failed to load)" if self._learned_error else " (loaded)")
        return info

    def close(self) -> None:
        self.geometry.close()
        if self._learned is not None:
            self._learned.close()
