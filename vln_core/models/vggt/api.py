"""What the rest of the project calls: :func:`load_vggt` -> :class:`VGGTGeometry`, whose
:meth:`~VGGTGeometry.predict_geometry` gives depth, confidence, camera-to-current poses,
intrinsics and points in our conventions; :class:`VGGTGeometryEncoder` is the same network as the
``full`` model's geometry stage.

    vggt = load_vggt("/models/VGGT-1B", device="cuda:0", dtype="bfloat16")
    geo = vggt.predict_geometry(frames)            # frames (N, 3, H, W) in [0, 1], current frame last
    geo.depth (N, H, W), geo.depth_conf (N, H, W), geo.T_cur_cam (N, 4, 4), geo.K (N, 3, 3),
    geo.points_cur (N, H, W, 3), geo.points_conf (N, H, W)

Depth and points are in VGGT's normalised scale (VGGT does not know metres); poses and
intrinsics are exact conversions of its predictions (:mod:`vln_core.models.vggt.convert`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vln_core.models.geometry_encoder import GeometryOutput
from vln_core.models.vggt.convert import (
    camera_to_current_pose_encoding,
    resize_intrinsics,
    vggt_points_to_current,
    vggt_to_camera_to_current,
)
from vln_core.models.vggt.loading import VGGTCheckpointError, match_state_dict, read_state_dict, resolve_checkpoint
from vln_core.models.vggt.network import VGGT, VGGT_1B, VGGTConfig

__all__ = ["GeometryPrediction", "VGGTGeometry", "VGGTGeometryOutput", "VGGTGeometryEncoder", "load_vggt",
           "load_vggt_network", "vggt_input_size", "VGGTCheckpointError"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def vggt_input_size(image_hw: tuple[int, int], width: int = 518, patch: int = 14) -> tuple[int, int]:
    """VGGT's preprocessing size for an image: width ``width``, height scaled with the aspect ratio
    and rounded to a multiple of ``patch`` (518x392 for 640x480)."""
    H, W = image_hw
    return max(patch, int(round(H * width / W / patch)) * patch), width


def set_compute_dtype(network: VGGT, dtype: torch.dtype | str) -> VGGT:
    """Aggregator weights in ``dtype`` (bf16 on GPU halves its memory and time); the heads stay
    float32, as VGGT runs them."""
    network.aggregator.to(_as_dtype(dtype))
    for head in (network.camera_head, network.depth_head, network.point_head):
        if head is not None:
            head.float()
    return network


def load_vggt_network(path: str, config: VGGTConfig = VGGT_1B, device: torch.device | str = "cpu",
                      dtype: torch.dtype | str = torch.float32) -> VGGT:
    """Build :class:`VGGT` for ``config`` and load the checkpoint at ``path`` strictly.

    The network is built on the meta device and takes the checkpoint's tensors (no second
    copy in memory); ``track_head.*`` keys are dropped explicitly, anything else that does not
    match raises.

    Raises:
        VGGTCheckpointError: path missing / unreadable, or keys missing, unexpected or mis-shaped
            (the message names them).
    """
    file = resolve_checkpoint(path)
    state = read_state_dict(file)
    with torch.device("meta"):
        network = VGGT(config)
    drop = ("track_head.",) + (() if config.point_head else ("point_head.",))
    state, _ = match_state_dict(network, state, source=f"checkpoint {str(file)!r}", drop_prefixes=drop)
    network.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    set_compute_dtype(network, dtype)
    return network.to(device).eval().requires_grad_(False)


@dataclass
class GeometryPrediction:
    """Geometry of ``N`` frames in our conventions (current = last frame), at the input's ``(H, W)``."""

    depth: torch.Tensor  # (N, H, W) VGGT scale, along the optical axis
    depth_conf: torch.Tensor  # (N, H, W) >= 1
    T_cur_cam: torch.Tensor  # (N, 4, 4) camera-to-current, OpenCV axes
    K: torch.Tensor  # (N, 3, 3) pinhole at (H, W)
    points_cur: torch.Tensor | None  # (N, H, W, 3) point-head points in the current camera frame
    points_conf: torch.Tensor | None  # (N, H, W) >= 1
    pose_enc: torch.Tensor  # (N, 9) VGGT's own encoding (world-to-camera of frame 0), for reference
    network_hw: tuple[int, int]  # (H', W') the network ran at


class VGGTGeometry(nn.Module):
    """A loaded VGGT with :meth:`predict_geometry`. Build it with :func:`load_vggt`."""

    def __init__(self, network: VGGT) -> None:
        super().__init__()
        self.network = network

    @property
    def device(self) -> torch.device:
        return self.network.camera_head.embed_pose.weight.device

    @torch.no_grad()
    def predict_geometry(self, frames: torch.Tensor, size: tuple[int, int] | None = None,
                         with_points: bool = True) -> GeometryPrediction:
        """Run VGGT on one clip.

        Args:
            frames: ``(N, 3, H, W)`` RGB in [0, 1], oldest first, the current frame last.
            size: ``(H', W')`` to run the network at (multiples of the patch size); default
                :func:`vggt_input_size` (width 518, as VGGT was trained). Outputs come back at ``(H, W)``.
            with_points: also run the point head.

        Returns:
            :class:`GeometryPrediction`.
        """
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must have shape (N, 3, H, W) in [0, 1], got {tuple(frames.shape)}")
        N, _, H, W = frames.shape
        p = self.network.cfg.patch_size
        size = tuple(size) if size is not None else vggt_input_size((H, W), patch=p)
        if size[0] % p or size[1] % p:
            raise ValueError(f"size {size} must be multiples of the patch size {p}")
        x = frames.to(self.device, torch.float32)
        if size != (H, W):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0.0, 1.0)
        out = self.network(x[None], with_points=with_points)
        T_cur_cam, K = vggt_to_camera_to_current(out.pose_enc[0], size)
        points = conf = None
        if out.world_points is not None:
            points = vggt_points_to_current(out.world_points[0], out.pose_enc[0])
            conf = out.world_points_conf[0]
        depth, depth_conf = out.depth[0], out.depth_conf[0]
        if size != (H, W):
            def back(t: torch.Tensor) -> torch.Tensor:  # (N, h, w[, c]) -> (N, H, W[, c])
                chw = t.unsqueeze(1) if t.dim() == 3 else t.permute(0, 3, 1, 2)
                r = F.interpolate(chw, size=(H, W), mode="bilinear", align_corners=False)
                return r[:, 0] if t.dim() == 3 else r.permute(0, 2, 3, 1)

            depth, depth_conf = back(depth), back(depth_conf)
            points = back(points) if points is not None else None
            conf = back(conf) if conf is not None else None
            K = resize_intrinsics(K, size, (H, W))
        return GeometryPrediction(depth=depth, depth_conf=depth_conf, T_cur_cam=T_cur_cam, K=K, points_cur=points,
                                  points_conf=conf, pose_enc=out.pose_enc[0], network_hw=size)


def load_vggt(path: str, device: torch.device | str = "cpu", dtype: torch.dtype | str = torch.float32,
              config: VGGTConfig = VGGT_1B) -> VGGTGeometry:
    """Load VGGT(-1B) from a local ``model.safetensors`` / ``.pt`` (or its directory).

    Args:
        path: the checkpoint file or the directory holding it (nothing is downloaded).
        device: where it runs.
        dtype: the aggregator's dtype (``bfloat16`` on GPU); the heads run in float32.
        config: the architecture (VGGT-1B by default).

    Raises:
        VGGTCheckpointError: path missing, or a checkpoint that does not match (keys named).
    """
    return VGGTGeometry(load_vggt_network(path, config, device, dtype))


@dataclass
class VGGTGeometryOutput(GeometryOutput):
    """:class:`GeometryOutput` plus VGGT's point map, for keyframe sampling on its own points."""

    points_cur: torch.Tensor | None = None  # (B, N, H, W, 3) in the current camera frame
    points_conf: torch.Tensor | None = None  # (B, N, H, W)
    K: torch.Tensor | None = None  # (B, N, 3, 3) VGGT's intrinsics at (H, W)


class VGGTGeometryEncoder(nn.Module):
    """VGGT as the ``full`` model's geometry stage (drop-in for
    :class:`~vln_core.models.geometry_encoder.GeometryEncoder`).

    The pretrained network stays frozen (its parameters are listed by :meth:`frozen_parameters`
    and it runs without autograd while they are frozen). Frames are resized to the nearest
    smaller multiple of the patch size; outputs come back at the input size.

    Args:
        network: a loaded (or random, for timing) :class:`VGGT`.
        with_points: run the point head too (keyframe sampling uses its points and confidence).
    """

    def __init__(self, network: VGGT, with_points: bool = True) -> None:
        super().__init__()
        self.network = network
        self.patch_size = network.cfg.patch_size
        self.dim = 2 * network.cfg.embed_dim  # width of the patch tokens handed to fusion
        self.with_points = with_points and network.point_head is not None
        self.network.requires_grad_(False)

    def frozen_parameters(self) -> list[nn.Parameter]:
        return list(self.network.parameters())

    def set_compute_dtype(self, dtype: torch.dtype | str) -> None:
        set_compute_dtype(self.network, dtype)

    def forward(self, frames: torch.Tensor) -> VGGTGeometryOutput:
        """Args:
            frames: ``(B, N, 3, H, W)`` RGB in [0, 1], current frame last.

        Returns:
            :class:`VGGTGeometryOutput`: depth / confidence ``(B, N, H, W)``, our camera-to-current
            ``pose_enc (B, N, 9)``, patch tokens ``(B, N, h*w, 2C)``, camera tokens ``(B, N, 2C)``,
            grid ``(h, w)``, points in the current frame and their confidence, VGGT's ``K``.
        """
        B, N, _, H, W = frames.shape
        p = self.patch_size
        h, w = max(1, H // p), max(1, W // p)
        x = frames.reshape(B * N, 3, H, W)
        if (h * p, w * p) != (H, W):
            x = F.interpolate(x, size=(h * p, w * p), mode="bilinear", align_corners=False)
        grad = torch.is_grad_enabled() and any(q.requires_grad for q in self.network.parameters())
        with torch.set_grad_enabled(grad):
            out = self.network(x.view(B, N, 3, h * p, w * p), with_points=self.with_points, with_tokens=True)
        T_cur_cam, K = vggt_to_camera_to_current(out.pose_enc, (h * p, w * p))
        depth, depth_conf = out.depth, out.depth_conf
        points = conf = None
        if out.world_points is not None:
            points, conf = vggt_points_to_current(out.world_points, out.pose_enc), out.world_points_conf
        if (h * p, w * p) != (H, W):
            def back(t: torch.Tensor) -> torch.Tensor:  # (B, N, h', w'[, c]) -> (B, N, H, W[, c])
                lead = t.shape[:2]
                chw = t.flatten(0, 1).unsqueeze(1) if t.dim() == 4 else t.flatten(0, 1).permute(0, 3, 1, 2)
                r = F.interpolate(chw, size=(H, W), mode="bilinear", align_corners=False)
                r = r[:, 0] if t.dim() == 4 else r.permute(0, 2, 3, 1)
                return r.reshape(lead + r.shape[1:])

            depth, depth_conf = back(depth), back(depth_conf)
            points = back(points) if points is not None else None
            conf = back(conf) if conf is not None else None
            K = resize_intrinsics(K, (h * p, w * p), (H, W))
        tokens = out.tokens  # (B, N, P, 2C)
        return VGGTGeometryOutput(
            depth=depth, depth_conf=depth_conf, pose_enc=camera_to_current_pose_encoding(T_cur_cam, K, (H, W)),
            patch_tokens=tokens[:, :, out.patch_start:], camera_tokens=tokens[:, :, 0], grid=(h, w),
            points_cur=points, points_conf=conf, K=K)
