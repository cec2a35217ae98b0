"""Multi-view depth: a plane-sweep cost volume over neighbouring frames, fused with the monocular prior.

One image cannot tell how far things are on a camera it was not trained on; two posed images can
(photo-consistency is geometry). For a reference frame (a keyframe, or the current frame) and
``S`` source frames chosen for parallax (:func:`select_source_views`):

1. :class:`MultiViewFeatureNet` turns every frame into unit-length features at 1/4 resolution
   (computed once per frame and cached, like the monocular encoding).
2. :func:`vln_core.geometry.plane_sweep.correlation_volume` warps the sources' features onto
   ``D`` fronto-parallel planes of the reference camera (uniform in inverse depth) and correlates
   them with the reference features: a ``(D, h, w)`` cost volume, metric by construction when the
   poses are.
3. :class:`CostRegulariser`, a small U-Net of separable 3D convolutions whose weights are shared
   by all depth planes (cheaper than MVSNet's full 3D CNN; unlike the planes-as-channels 2D
   networks of DeepVideoMVS / SimpleRecon it cannot learn a prior over depths, which would not
   transfer from simulation), gives per-pixel plane logits; depth is the probability-weighted
   inverse depth around the most likely plane, the confidence the probability mass there.
4. :class:`DepthFusion` blends the multi-view depth with the monocular depth (first aligned in
   scale to the confident multi-view pixels) pixel by pixel, trusting the monocular prior where
   parallax is too small, surfaces are textureless or the views do not overlap.

Frames and shapes: OpenCV optical axes; ``T_src_ref`` reference-to-source rigid transforms
(``inv(T_w_src) @ T_w_ref``); depth in metres along the optical axis; images ``(3, H, W)`` RGB in
[0, 1]; intrinsics ``K`` for the ``(H, W)`` image (scaled to the feature grid inside).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from vln_core.geometry.plane_sweep import (
    correlation_volume,
    inverse_depth_planes,
    plane_sweep_grid,
    scale_intrinsics,
    select_source_views,
)
from vln_core.models.geometry_encoder import normalize_images

__all__ = ["MultiViewArchitecture", "MultiViewFeatureNet", "CostRegulariser", "DepthFusion", "MultiViewDepth",
           "MultiViewOutput", "FEATURE_STRIDE", "plane_targets", "window_depth", "monocular_to_pose_scale",
           "DEPTH_SOURCES"]

#: ``model.depth_source`` values: fused with the monocular prior, the cost volume alone, monocular only.
DEPTH_SOURCES = ("fused", "multiview", "monocular")

#: The cost volume's grid: 1/4 of the input image.
FEATURE_STRIDE = 4

#: :func:`monocular_to_pose_scale` keeps the monocular scale when it is off by less than this factor.
MONO_SCALE_TOLERANCE = 1.5


@dataclass
class MultiViewArchitecture:
    """Sizes of the multi-view depth network."""

    feature_dim: int = 16
    num_planes: int = 32
    near_m: float = 0.2
    far_m: float = 10.0
    width: int = 8  # regulariser channels per plane at 1/4 (x2 at 1/8 and 1/16)
    fusion_width: int = 32


def _conv(c_in: int, c_out: int, stride: int = 1, k: int = 3, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride, k // 2)]
    if act:
        layers.append(nn.LeakyReLU(0.1, inplace=True))
    return nn.Sequential(*layers)


class _Res(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = _conv(c, c)
        self.b = _conv(c, c, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.b(self.a(x)), 0.1)


class MultiViewFeatureNet(nn.Module):
    """``(B, 3, H, W)`` RGB in [0, 1] -> ``(B, C, H/4, W/4)`` unit-length matching features.

    No batch norm: the same weights must give the same features whatever else is in the batch,
    and features are compared across frames with different exposure.
    """

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(3, 16, stride=2), _conv(16, 24), _conv(24, 32, stride=2), _Res(32), _Res(32),
                                  nn.Conv2d(32, feature_dim, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.body(normalize_images(images)), dim=1)


class _PlaneBlock(nn.Module):
    """A separable 3D convolution over a volume ``(B, c, D, h, w)``: 3x3 in the image plane with
    the same weights for every depth plane (run as a 2D convolution over ``B * D`` slices, which
    CPUs do far faster than ``Conv3d``), then 3 along the planes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(c_in, c_out, 3, stride, 1)
        self.depth = nn.Conv2d(c_out, c_out, (3, 1), 1, (1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, c, D, h, w = x.shape
        y = self.spatial(x.permute(0, 2, 1, 3, 4).reshape(B * D, c, h, w))
        c2, h2, w2 = y.shape[1:]
        y = F.leaky_relu(y, 0.1).reshape(B, D, c2, h2, w2).permute(0, 2, 1, 3, 4)
        y = self.depth(y.reshape(B, c2, D, h2 * w2))
        return F.leaky_relu(y, 0.1).reshape(B, c2, D, h2, w2)


class CostRegulariser(nn.Module):
    """Cost volume -> plane logits, with weights shared by every depth plane.

    A 2D network that reads the ``D`` planes as channels (DeepVideoMVS, SimpleRecon) can learn a
    prior over depths -- the training scenes' room sizes -- and lean on it instead of the
    photo-consistency; that prior is exactly what does not transfer from simulation to a real
    camera. Here every layer is a separable 3D convolution whose image-plane weights are the same
    at every depth, and the output has no per-plane bias, so the network can only aggregate
    evidence, guided by the reference image's features (edges), never prefer a depth for its own
    sake. It runs on the volume pooled to 1/8 of the image (a U-Net over 1/8, 1/16 and 1/32); its
    logits, brought back to 1/4, are added to the raw 1/4 correlation, which keeps the detail.
    """

    def __init__(self, num_planes: int, feature_dim: int, width: int) -> None:
        super().__init__()
        w0, w1 = width, width * 2
        self.guide = nn.Conv2d(feature_dim, w0, 1)
        self.enc0 = _PlaneBlock(2 + w0, w0)
        self.enc1 = _PlaneBlock(w0, w1, stride=2)
        self.enc2 = _PlaneBlock(w1, w1, stride=2)
        self.dec1 = _PlaneBlock(w1 + w1, w1)
        self.dec0 = _PlaneBlock(w1 + w0, w0)
        self.out = nn.Conv2d(w0, 1, 3, padding=1, bias=False)
        self.num_planes = num_planes

    def forward(self, cost: torch.Tensor, seen: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """``cost (B, D, h, w)``, ``seen (B, D, h, w)`` (share of sources seeing each hypothesis),
        ``features (B, C, h, w)`` -> logits ``(B, D, h, w)``."""
        B, D, h, w = cost.shape
        c8, s8 = F.avg_pool2d(cost, 2, ceil_mode=True), F.avg_pool2d(seen, 2, ceil_mode=True)
        h8, w8 = c8.shape[-2:]
        guide = self.guide(F.avg_pool2d(features, 2, ceil_mode=True))[:, :, None].expand(B, -1, D, h8, w8)
        x0 = self.enc0(torch.cat([c8[:, None], s8[:, None], guide], dim=1))
        x1 = self.enc1(x0)
        x2 = self.enc2(x1)
        up1 = F.interpolate(x2, size=x1.shape[-3:], mode="trilinear", align_corners=False)
        y1 = self.dec1(torch.cat([up1, x1], dim=1))
        up0 = F.interpolate(y1, size=x0.shape[-3:], mode="trilinear", align_corners=False)
        y0 = self.dec0(torch.cat([up0, x0], dim=1))
        c0 = y0.shape[1]
        logits8 = self.out(y0.permute(0, 2, 1, 3, 4).reshape(B * D, c0, h8, w8)).reshape(B, D, h8, w8)
        # the raw correlation is a strong cue by itself: the regularised logits are added to it
        return F.interpolate(logits8, size=(h, w), mode="bilinear", align_corners=False) + cost


class DepthFusion(nn.Module):
    """Per-pixel weight of multi-view against (scale-aligned) monocular log-depth, and a small
    log-depth correction."""

    def __init__(self, feature_dim: int, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(4 + feature_dim, width), _conv(width, width), _Res(width),
                                  nn.Conv2d(width, 2, 3, padding=1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, log_mvs: torch.Tensor, mvs_conf: torch.Tensor, log_mono: torch.Tensor, mono_conf: torch.Tensor,
                features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``(B, 1, h, w)`` except ``features (B, C, h, w)`` -> ``(fused log-depth, weight of
        the multi-view depth)``, each ``(B, 1, h, w)``."""
        centre = log_mvs.mean(dim=(2, 3), keepdim=True).detach()
        x = torch.cat([log_mvs - centre, mvs_conf, log_mono - centre, torch.log(mono_conf.clamp(min=1e-3)) / 3, features], 1)
        out = self.body(x)
        # initial weight: the multi-view confidence itself (logit of conf)
        prior = torch.logit(mvs_conf.clamp(0.02, 0.98))
        weight = torch.sigmoid(prior + out[:, :1])
        fused = weight * log_mvs + (1 - weight) * log_mono + 0.1 * torch.tanh(out[:, 1:2])
        return fused, weight


@dataclass
class MultiViewOutput:
    """What :meth:`MultiViewDepth.forward` returns for ``B`` reference frames.

    Attributes:
        depth: ``(B, H, W)`` metres: fused with the monocular prior when one was given, else the
            multi-view depth.
        multiview_depth: ``(B, H, W)`` metres from the cost volume alone.
        confidence: ``(B, H, W)`` in [0, 1]: probability mass near the chosen plane.
        weight: ``(B, H, W)`` the fusion's weight of the multi-view depth (1 without a prior).
        logits: ``(B, D, h, w)`` plane logits on the 1/4 grid (training).
        planes: ``(D,)`` plane depths, metres.
    """

    depth: torch.Tensor
    multiview_depth: torch.Tensor
    confidence: torch.Tensor
    weight: torch.Tensor
    logits: torch.Tensor
    planes: torch.Tensor


class MultiViewDepth(nn.Module):
    """The multi-view depth network (see the module doc).

    Args:
        arch: sizes and the plane range.
    """

    def __init__(self, arch: MultiViewArchitecture) -> None:
        super().__init__()
        self.arch = arch
        self.features = MultiViewFeatureNet(arch.feature_dim)
        self.regulariser = CostRegulariser(arch.num_planes, arch.feature_dim, arch.width)
        self.fusion = DepthFusion(arch.feature_dim, arch.fusion_width)
        self.register_buffer("planes", inverse_depth_planes(arch.near_m, arch.far_m, arch.num_planes), persistent=False)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Per-frame (cacheable) features: ``(B, 3, H, W)`` -> ``(B, C, H/4, W/4)``."""
        return self.features(images)

    def cost_volume(self, ref_features: torch.Tensor, src_features: torch.Tensor, K: torch.Tensor,
                    T_src_ref: torch.Tensor, src_valid: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``ref_features (B, C, h, w)``, ``src_features (B, S, C, h, w)``, ``K (B, 3, 3)`` of the
        full image, ``T_src_ref (B, S, 4, 4)``, ``src_valid (B, S)`` bool (padding) ->
        ``(cost (B, D, h, w), seen (B, D, h, w))`` (``seen``: share of the sources that see each hypothesis)."""
        h, w = ref_features.shape[-2:]
        Kf = scale_intrinsics(K.float(), FEATURE_STRIDE)
        grid, valid = plane_sweep_grid(Kf, Kf[:, None], T_src_ref.float(), self.planes, (h, w))
        if src_valid is not None:
            valid = valid & src_valid[:, :, None, None, None]
        cost, seen = correlation_volume(ref_features, src_features, grid, valid)
        if src_valid is not None:  # a share of the real sources, not of the padded list
            S = src_valid.shape[1]
            seen = seen * S / src_valid.sum(dim=1).clamp(min=1).to(seen.dtype)[:, None, None, None]
        # cosine similarity in [-1, 1] -> a logit-like scale
        return cost * float(ref_features.shape[1]) * 0.5, seen

    def plane_depth(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Plane logits ``(B, D, h, w)`` -> ``(depth (B, h, w), confidence (B, h, w))``: the
        probability-weighted inverse depth over the most likely plane and its two neighbours on
        each side (a multi-modal distribution is not averaged across its modes)."""
        prob = torch.softmax(logits, dim=1)
        D = prob.shape[1]
        best = prob.argmax(dim=1, keepdim=True)
        offsets = torch.arange(-2, 3, device=logits.device)[None, :, None, None]
        idx = (best + offsets).clamp(0, D - 1)  # (B, 5, h, w)
        p = torch.gather(prob, 1, idx)
        inv_planes = (1.0 / self.planes).to(prob.dtype)
        inv = inv_planes[idx]
        inv_depth = (p * inv).sum(1) / p.sum(1).clamp(min=1e-6)
        return 1.0 / inv_depth.clamp(min=1e-3), p.sum(1)

    def forward(self, ref_features: torch.Tensor, src_features: torch.Tensor, K: torch.Tensor, T_src_ref: torch.Tensor,
                size: tuple[int, int], mono_depth: Optional[torch.Tensor] = None,
                mono_conf: Optional[torch.Tensor] = None, src_valid: Optional[torch.Tensor] = None) -> MultiViewOutput:
        """Depth of ``B`` reference frames.

        Args:
            ref_features: ``(B, C, h, w)`` from :meth:`encode`.
            src_features: ``(B, S, C, h, w)``.
            K: ``(B, 3, 3)`` or ``(3, 3)`` intrinsics of the ``size`` image (all frames share it).
            T_src_ref: ``(B, S, 4, 4)`` reference-to-source transforms.
            size: ``(H, W)`` of the output.
            mono_depth / mono_conf: ``(B, H, W)`` the monocular prior, or None (multi-view only).
            src_valid: ``(B, S)`` bool, False for padding sources.
        """
        B = ref_features.shape[0]
        K = K.expand(B, 3, 3) if K.dim() == 2 else K
        cost, seen = self.cost_volume(ref_features, src_features, K, T_src_ref, src_valid)
        logits = self.regulariser(cost, seen, ref_features)
        mvs, conf = self.plane_depth(logits)  # (B, h, w)
        log_mvs = torch.log(mvs)[:, None]
        if mono_depth is not None:
            h, w = ref_features.shape[-2:]
            log_mono = F.interpolate(torch.log(mono_depth.clamp(min=1e-3))[:, None], size=(h, w), mode="bilinear",
                                     align_corners=False)
            mconf = F.interpolate(mono_conf[:, None] if mono_conf is not None else torch.ones_like(log_mono),
                                  size=(h, w), mode="bilinear", align_corners=False)
            # align the prior's scale to the confident multi-view pixels (monocular depth has none of its own)
            c = (conf[:, None] * seen.amax(dim=1, keepdim=True)).detach()
            shift = ((log_mvs - log_mono).detach() * c).sum(dim=(2, 3), keepdim=True) / (
                c.sum(dim=(2, 3), keepdim=True) + 0.01 * h * w)
            log_fused, weight = self.fusion(log_mvs, conf[:, None], log_mono + shift, mconf, ref_features)
        else:
            log_fused, weight = log_mvs, torch.ones_like(log_mvs)
        up = lambda x: F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]  # noqa: E731
        return MultiViewOutput(depth=torch.exp(up(log_fused)), multiview_depth=torch.exp(up(log_mvs)),
                               confidence=up(conf[:, None]), weight=up(weight), logits=logits, planes=self.planes)


def plane_targets(depth: torch.Tensor, planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-hot plane targets for the cross-entropy on plane logits.

    Args:
        depth: ``(B, h, w)`` true depth (metres, 0 = unknown) on the logits' grid.
        planes: ``(D,)`` plane depths (near first, uniform in inverse depth).

    Returns:
        ``(target (B, D, h, w), valid (B, h, w))``: the true inverse depth split linearly between
        its two nearest planes; pixels outside the plane range or without depth are not valid.
    """
    inv_planes = 1.0 / planes  # decreasing
    D = planes.numel()
    valid = (depth >= planes[0]) & (depth <= planes[-1])
    inv = 1.0 / depth.clamp(min=float(planes[0]))
    pos = (inv_planes[0] - inv) / (inv_planes[0] - inv_planes[-1]) * (D - 1)  # fractional plane index
    pos = pos.clamp(0, D - 1 - 1e-4)
    lo = pos.floor().long()
    frac = pos - lo.float()
    target = torch.zeros(depth.shape[0], D, *depth.shape[1:], dtype=depth.dtype, device=depth.device)
    target.scatter_(1, lo[:, None], (1 - frac)[:, None])
    target.scatter_add_(1, (lo + 1).clamp(max=D - 1)[:, None], frac[:, None])
    return target * valid[:, None], valid



def window_depth(network: Callable[..., MultiViewOutput], mono_depth: torch.Tensor, mono_conf: torch.Tensor,
                 features: torch.Tensor, K: torch.Tensor, T_wc: torch.Tensor, refs: list[int], source: str,
                 num_sources: int, candidates: Optional[list[list[int]]] = None,
                 mono_scale: float = 1.0) -> tuple[torch.Tensor, list[list[int]]]:
    """Depth of some frames of a set of posed frames from their neighbours among them: the one
    place that picks sources and batches the cost volumes (evaluation, the node's backends and
    video inference call it).

    Args:
        network: a :class:`MultiViewDepth` (or an engine's callable with its ``forward`` signature).
        mono_depth / mono_conf: ``(N, H, W)`` the monocular network's depth and confidence.
        features: ``(N, C, h, w)`` :meth:`MultiViewDepth.encode` of the frames.
        K: ``(3, 3)`` intrinsics of the ``(H, W)`` frames (shared).
        T_wc: ``(N, 4, 4)`` camera-to-world poses in any one world frame (camera-to-current works).
        refs: frames whose depth is wanted (indices).
        source: ``"fused"``, ``"multiview"`` or ``"monocular"`` (:data:`DEPTH_SOURCES`).
        num_sources: sources per reference (at most).
        candidates: per ref, the frames it may take sources from (default: all others).
        mono_scale: the factor that brings the monocular depth to the poses' scale, for choosing
            sources by parallax (a ref's typical depth is ``mono_scale`` x its monocular median).
            1 where the poses share the monocular scale (odometry chained on it); with metric
            poses see :func:`monocular_to_pose_scale`.

    Returns:
        ``(depth (R, H, W), sources per ref)``. A ref without a source of any parallax (a robot
        turning on the spot), and every ref with ``monocular``, keeps the monocular depth.
    """
    N, H, W = mono_depth.shape
    depth = mono_depth[refs].clone()
    chosen: list[list[int]] = [[] for _ in refs]
    if source == "monocular" or N < 2:
        return depth, chosen
    T = T_wc.double().cpu()
    for r, ref in enumerate(refs):
        cands = [i for i in (candidates[r] if candidates is not None else range(N)) if i != ref]
        if cands:
            picked = select_source_views(T[ref], T[cands], num_sources, mono_scale * float(mono_depth[ref].median()))
            chosen[r] = [cands[j] for j in picked]
    rows = [r for r, c in enumerate(chosen) if c]
    if not rows:
        return depth, chosen
    S = max(len(chosen[r]) for r in rows)
    src_idx = torch.zeros(len(rows), S, dtype=torch.long)
    src_valid = torch.zeros(len(rows), S, dtype=torch.bool)
    for k, r in enumerate(rows):
        src_idx[k, :len(chosen[r])] = torch.as_tensor(chosen[r])
        src_idx[k, len(chosen[r]):] = chosen[r][0]
        src_valid[k, :len(chosen[r])] = True
    ref_idx = torch.as_tensor([refs[r] for r in rows])
    T_src_ref = torch.linalg.inv(T[src_idx]) @ T[ref_idx][:, None]
    device = features.device
    fused = source == "fused"
    out = network(features[ref_idx.to(device)], features[src_idx.to(device)], K.to(device).float(),
                  T_src_ref.float().to(device), (H, W), mono_depth[ref_idx].to(device) if fused else None,
                  mono_conf[ref_idx].to(device) if fused else None, src_valid.to(device))
    depth[torch.as_tensor(rows)] = out.depth.to(depth.dtype).to(depth.device)
    return depth, chosen


def monocular_to_pose_scale(multiview_depth: torch.Tensor, mono_depth: torch.Tensor) -> float:
    """How far the monocular depth must be scaled to match the poses' scale, measured on one frame.

    Source views are chosen by parallax, the baseline over the scene's depth; the monocular network
    has no metric scale of its own (on a real camera it was 3.5x too far), so with metric poses a
    frame's monocular median depth picks sources for the wrong parallax. The multi-view depth of one
    frame has the poses' scale: the ratio of its median to the monocular median corrects the others.

    Within :data:`MONO_SCALE_TOLERANCE` of 1 the monocular scale is kept: there a source's
    selection score changes by a third at most, and one frame's median is no more precise than
    that (in simulation, where the monocular scale is right, correcting it anyway cost 0.002 CC on
    the validation episodes).

    Args:
        multiview_depth / mono_depth: ``(H, W)`` the same frame's multi-view and monocular depth.

    Returns:
        The ratio of the medians; 1 when it is within the tolerance or either median is not positive.
    """
    mv, mono = float(multiview_depth.median()), float(mono_depth.median())
    if not (mv > 0 and mono > 0):
        return 1.0
    ratio = mv / mono
    return 1.0 if 1.0 / MONO_SCALE_TOLERANCE <= ratio <= MONO_SCALE_TOLERANCE else ratio
