"""Drawing frame-indexed heatmaps over the current image (cv2 only, uint8 RGB in and out).

``overlay_mosaic`` is the picture a person looks at to judge the heatmaps: one tile per keyframe,
each the current frame with that keyframe's content coloured where it lands (turbo colormap),
the part hidden behind the current frame's surfaces hatched in magenta, a thumbnail of the
keyframe in the top-right corner, its label and fractions in the top-left, and an arrow at the
image border towards the out-of-view content (a top-down compass: up = ahead, left = left,
down = behind).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import cv2
import numpy as np

from vln_core.errors import InputError

__all__ = ["colorize_heatmap", "blend_heatmap", "overlay_mosaic", "depth_error_panel", "HIDDEN_COLOR", "ARROW_COLOR"]

#: RGB colour of hidden (occluded) mass: hatching and contour.
HIDDEN_COLOR = (255, 0, 255)
#: RGB colour of the out-of-view arrow and its text.
ARROW_COLOR = (255, 255, 255)
#: Heatmap level (fraction of the display peak) outlining a keyframe's footprint; outside it the
#: current frame is dimmed to ``UNCOVERED_BRIGHTNESS``.
FOOTPRINT_LEVEL = 0.03
UNCOVERED_BRIGHTNESS = 0.4
#: Hidden-mass level (fraction of the display peak) above which the hatching is drawn.
HIDDEN_LEVEL = 0.08
#: Out-of-view fraction above which the arrow is drawn.
ARROW_MIN_FRACTION = 0.05
#: |bearing| above which out-of-view content is called "behind" (radians, ~110 degrees).
BEHIND_BEARING = math.radians(110.0)
#: |bearing| below which out-of-view content is "ahead" (above/below the image or too close), degrees.
AHEAD_DEG = 8.0

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_rgb(rgb: Any, name: str) -> np.ndarray:
    rgb = _to_numpy(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"{name} must be a (H, W, 3) uint8 RGB image, got shape {rgb.shape} dtype {rgb.dtype}")
    return rgb


def _normalised(h: Any) -> np.ndarray:
    """``h`` scaled to [0, 1] by its maximum (zeros stay zeros; NaN/inf become 0)."""
    h = np.nan_to_num(_to_numpy(h).astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if h.ndim != 2:
        raise InputError(f"heatmap must be (H, W), got shape {h.shape}")
    peak = float(h.max()) if h.size else 0.0
    return np.clip(h / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(h)


def colorize_heatmap(h: Any) -> np.ndarray:
    """Turbo-coloured image of a heatmap scaled by its own maximum.

    Args:
        h: ``(H, W)`` float heatmap (numpy or torch), any non-negative scale.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    n = _normalised(h)
    bgr = cv2.applyColorMap((n * 255.0 + 0.5).astype(np.uint8), cv2.COLORMAP_TURBO)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def blend_heatmap(rgb: Any, h: Any, alpha: float = 0.65) -> np.ndarray:
    """Colour a heatmap over an image; where the heatmap is zero the image is untouched.

    The per-pixel opacity is ``alpha * sqrt(h / max h)`` so faint tails stay visible without
    hiding the image under the peak's colour everywhere. ``h`` is resized (bilinear) to the image.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB image.
        h: ``(h, w)`` float heatmap.
        alpha: opacity at the heatmap's peak, in [0, 1].

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    rgb = _check_rgb(rgb, "rgb")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    n = _normalised(h)
    if n.shape != rgb.shape[:2]:
        n = cv2.resize(n, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    return _blend_unit(rgb, n, alpha)


def _blend_unit(rgb: np.ndarray, n: np.ndarray, alpha: float) -> np.ndarray:
    """Blend a map already in [0, 1] (same size as ``rgb``) without rescaling it."""
    n = np.clip(n, 0.0, 1.0)
    bgr = cv2.applyColorMap((n * 255.0 + 0.5).astype(np.uint8), cv2.COLORMAP_TURBO)
    color = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32)
    a = (alpha * np.sqrt(n))[..., None]
    out = rgb.astype(np.float32) * (1.0 - a) + color * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _text_box(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color=(255, 255, 255),
              bg=(0, 0, 0), thickness: int = 1, anchor: str = "tl") -> tuple[int, int, int, int]:
    """Draw ``text`` on a filled box; ``org`` is the box's top-left corner, or by ``anchor`` its
    top-right ("tr"), bottom-centre ("bc"), top-centre ("tc") or centre ("c"); the box is kept inside
    the image. Returns the box (x0, y0, x1, y1)."""
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thickness)
    pad = max(2, int(round(4 * scale)))
    bw, bh = tw + 2 * pad, th + base + 2 * pad
    x, y = org
    if anchor == "tr":
        x -= bw
    elif anchor == "bc":
        x -= bw // 2
        y -= bh
    elif anchor == "tc":
        x -= bw // 2
    elif anchor == "c":
        x -= bw // 2
        y -= bh // 2
    x = int(np.clip(x, 0, max(0, img.shape[1] - bw)))
    y = int(np.clip(y, 0, max(0, img.shape[0] - bh)))
    cv2.rectangle(img, (x, y), (x + bw, y + bh), bg, -1)
    cv2.putText(img, text, (x + pad, y + pad + th), _FONT, scale, color, thickness, cv2.LINE_AA)
    return x, y, x + bw, y + bh


def _stripes(height: int, width: int, spacing: int, thickness: int) -> np.ndarray:
    """(H, W) bool diagonal stripe pattern."""
    yy, xx = np.mgrid[0:height, 0:width]
    return ((xx + yy) % spacing) < thickness


def _hatch(img: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], stripes: np.ndarray, thickness: int) -> None:
    """Diagonal ``stripes`` of ``color`` inside ``mask`` plus the mask's outline."""
    if not mask.any():
        return
    img[mask & stripes] = color
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(img, contours, -1, color, max(1, thickness), cv2.LINE_AA)


def _direction_words(bearing: float) -> str:
    deg = math.degrees(bearing)
    if abs(bearing) > BEHIND_BEARING:
        return "behind"
    if abs(deg) < AHEAD_DEG:
        return "ahead, above/below"
    return f"{'left' if deg > 0 else 'right'} {abs(deg):.0f} deg"


def _draw_arrow(img: np.ndarray, tail: tuple[int, int], tip: tuple[int, int], thickness: int) -> None:
    cv2.arrowedLine(img, tail, tip, (0, 0, 0), thickness + 3, cv2.LINE_AA, tipLength=0.35)
    cv2.arrowedLine(img, tail, tip, ARROW_COLOR, thickness, cv2.LINE_AA, tipLength=0.35)


def _draw_out_of_view_arrow(img: np.ndarray, bearing: float, fraction: float, scale: float) -> None:
    """Arrow at the image border towards the out-of-view content, with its direction and fraction.

    ``|bearing| > 110 deg``: bottom border, pointing down ("behind"); ``|bearing| < 8 deg``: top
    border, pointing up (the content is ahead but above/below the image or too close);
    otherwise the left or right border at mid height, pointing outwards, the text giving the angle.
    """
    H, W = img.shape[:2]
    thickness = max(2, int(round(3 * scale)))
    length = int(0.16 * min(H, W))
    text = f"{_direction_words(bearing)}, {100 * fraction:.0f}% out of view"
    margin = 6
    if abs(bearing) > BEHIND_BEARING:
        tip = (W // 2, H - margin)
        tail = (W // 2, H - margin - length)
        _draw_arrow(img, tail, tip, thickness)
        _text_box(img, text, (W // 2, tail[1] - 4), scale, ARROW_COLOR, anchor="bc")
    elif abs(math.degrees(bearing)) < AHEAD_DEG:
        tip = (W // 2, margin + int(60 * scale))  # below the label rows
        tail = (W // 2, tip[1] + length)
        _draw_arrow(img, tail, tip, thickness)
        _text_box(img, text, (W // 2, tail[1] + 4), scale, ARROW_COLOR, anchor="tc")
    else:
        left = bearing > 0
        y = H // 2
        tip = (margin, y) if left else (W - 1 - margin, y)
        tail = (tip[0] + length, y) if left else (tip[0] - length, y)
        _draw_arrow(img, tail, tip, thickness)
        _text_box(img, text, (margin, y + thickness + 6) if left else (W - 1 - margin, y + thickness + 6),
                  scale, ARROW_COLOR, anchor="tl" if left else "tr")


def _field(result: Any, name: str) -> np.ndarray:
    return _to_numpy(getattr(result, name))


def overlay_mosaic(
    current_rgb: Any,
    result: Any,
    keyframe_labels: Sequence[str],
    keyframe_rgbs: Sequence[Any] | None = None,
    columns: int | None = None,
    alpha: float = 0.65,
    tile_width: int | None = None,
) -> np.ndarray:
    """One tile per keyframe: the current frame with that keyframe's heatmap drawn over it.

    Each tile shows: the visible part of the heatmap in turbo colours; the hidden part (behind
    the current frame's surfaces) hatched and outlined in magenta; the label and the in-view /
    hidden / out-of-view fractions top-left; the keyframe's own image as a thumbnail top-right
    (when given); "no overlap" greyed out when the keyframe does not land in the view; and, when
    at least 5% of its content is out of view, an arrow at the border towards that content
    (up = ahead, left/right, bottom border = behind) with the fraction.

    Args:
        current_rgb: ``(H, W, 3)`` uint8 RGB current frame (any size; heatmaps are resized to it).
        result: :class:`vln_core.heatmaps.InterFrameHeatmaps` (torch or numpy fields) with
            ``heatmap``/``occluded`` ``(K, h, w)`` over the current frame.
        keyframe_labels: K strings, e.g. ``"kf 12"``.
        keyframe_rgbs: None or K ``(h_k, w_k, 3)`` uint8 RGB keyframe images (thumbnails).
        columns: tiles per row (default ``ceil(sqrt(K))``).
        alpha: heatmap opacity at its peak.
        tile_width: width of each tile (the current frame is resized to it); default: the
            frame's own width, but at least 400 px so text stays readable.

    Returns:
        ``(rows * tile_h + gaps, columns * tile_w + gaps, 3)`` uint8 RGB mosaic with a legend strip
        at the bottom.
    """
    current_rgb = _check_rgb(current_rgb, "current_rgb")
    heat = _field(result, "heatmap")
    occluded = _field(result, "occluded")
    num_key = heat.shape[0]
    if len(keyframe_labels) != num_key:
        raise InputError(f"need {num_key} keyframe_labels, got {len(keyframe_labels)}")
    if keyframe_rgbs is not None and len(keyframe_rgbs) != num_key:
        raise InputError(f"need {num_key} keyframe_rgbs, got {len(keyframe_rgbs)}")
    in_view = _field(result, "in_view_fraction")
    hidden_frac = _field(result, "occluded_fraction")
    out_frac = _field(result, "out_of_view_fraction")
    bearing = _field(result, "out_of_view_bearing")
    overlap = _field(result, "has_overlap").astype(bool)

    H0, W0 = current_rgb.shape[:2]
    zoom = (tile_width / W0) if tile_width else max(1.0, 400 / W0)
    W, H = int(round(W0 * zoom)), int(round(H0 * zoom))
    base = cv2.resize(current_rgb, (W, H), interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR) if zoom != 1.0 else current_rgb.copy()
    scale = max(0.45, 0.55 * W / 640.0)

    hatch_thickness = max(1, int(2 * scale))
    stripes = _stripes(H, W, spacing=max(6, int(10 * scale)), thickness=hatch_thickness)
    tiles = []
    for k in range(num_key):
        hk = heat[k].astype(np.float32)
        ok = occluded[k].astype(np.float32)
        # display scale: a high percentile, so a few dense pixels (surfaces seen at grazing
        # angles pile up many points) do not wash out the rest of the footprint; 0 when there is
        # nothing to draw (an all-zero or NaN map with has_overlap set: frame_indexed_heatmaps
        # zeroes a map whose splatted total is 0), which was a 0/0 RuntimeWarning below
        positive = hk[hk > 0]
        peak = float(np.percentile(positive, 99.0)) if positive.size else 0.0
        if overlap[k] and peak > 0:
            footprint = (hk > FOOTPRINT_LEVEL * peak).astype(np.uint8)
            # drop single-pixel specks and pinholes so the outline reads as a region
            kernel = np.ones((3, 3), np.uint8)
            footprint = cv2.morphologyEx(cv2.morphologyEx(footprint, cv2.MORPH_CLOSE, kernel), cv2.MORPH_OPEN, kernel)
            footprint = cv2.resize(footprint, (W, H), interpolation=cv2.INTER_LINEAR).astype(bool)
            dimmed = (base.astype(np.float32) * UNCOVERED_BRIGHTNESS).astype(np.uint8)
            tile = np.where(footprint[..., None], base, dimmed)
            visible = np.clip(hk - ok, 0.0, None) / peak
            tile = _blend_unit(tile, cv2.resize(visible, (W, H), interpolation=cv2.INTER_LINEAR), alpha)
            contours, _ = cv2.findContours(footprint.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(tile, contours, -1, (255, 255, 255), 1, cv2.LINE_AA)
            occ_img = cv2.resize(ok / peak, (W, H), interpolation=cv2.INTER_LINEAR)
            hidden_mask = occ_img > HIDDEN_LEVEL
            _hatch(tile, hidden_mask, HIDDEN_COLOR, stripes, hatch_thickness)
        else:
            tile = (base.astype(np.float32) * 0.35).astype(np.uint8)
            text = "no overlap with current view" if not overlap[k] else "empty heatmap (nothing to draw)"
            _text_box(tile, text, (W // 2, H // 2), scale * 1.1, anchor="c")

        # label and fractions, top-left
        x0, y0, x1, y1 = _text_box(tile, str(keyframe_labels[k]), (0, 0), scale * 1.6, (255, 255, 0), thickness=2)
        stats = f"in view {100 * in_view[k]:.0f}%  hidden {100 * hidden_frac[k]:.0f}%  out {100 * out_frac[k]:.0f}%"
        _text_box(tile, stats, (0, y1), scale)

        # keyframe thumbnail, top-right
        if keyframe_rgbs is not None:
            thumb_src = _check_rgb(keyframe_rgbs[k], f"keyframe_rgbs[{k}]")
            tw = int(W * 0.28)
            th = max(1, int(round(tw * thumb_src.shape[0] / thumb_src.shape[1])))
            thumb = cv2.resize(thumb_src, (tw, th), interpolation=cv2.INTER_AREA)
            bx = W - tw - 4
            tile[4:4 + th, bx:bx + tw] = thumb
            cv2.rectangle(tile, (bx - 2, 2), (bx + tw + 1, 4 + th + 1), (255, 255, 0), 2)
            _text_box(tile, str(keyframe_labels[k]), (bx + tw, 4 + th + 2), scale * 0.9, (255, 255, 0), anchor="tr")

        if out_frac[k] >= ARROW_MIN_FRACTION and np.isfinite(bearing[k]):
            _draw_out_of_view_arrow(tile, float(bearing[k]), float(out_frac[k]), scale)
        tiles.append(tile)

    cols = columns or int(math.ceil(math.sqrt(num_key)))
    cols = max(1, min(cols, num_key))
    rows = int(math.ceil(num_key / cols))
    gap = 6
    mosaic = np.full((rows * H + (rows - 1) * gap, cols * W + (cols - 1) * gap, 3), 32, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        mosaic[r * (H + gap):r * (H + gap) + H, c * (W + gap):c * (W + gap) + W] = tile

    # legend strip: shrink the text until the three entries fit the mosaic's width
    items = (
        ("colour: keyframe content landing here (low -> high); dimmed: none lands", (230, 230, 230)),
        ("hatched: hidden behind current surfaces", HIDDEN_COLOR),
        ("arrow: out-of-view content (bottom = behind)", ARROW_COLOR),
    )
    bar_w = min(120, mosaic.shape[1] // 8)
    legend_scale = scale
    while legend_scale > 0.3:
        width = 16 + bar_w + sum(cv2.getTextSize(t, _FONT, legend_scale, 1)[0][0] + 20 for t, _ in items)
        if width <= mosaic.shape[1]:
            break
        legend_scale *= 0.9
    legend_h = int(34 * max(1.0, legend_scale / 0.55))
    legend = np.full((legend_h, mosaic.shape[1], 3), 20, np.uint8)
    legend[8:legend_h - 8, 8:8 + bar_w] = colorize_heatmap(
        np.tile(np.linspace(0, 1, bar_w, dtype=np.float32), (legend_h - 16, 1))
    )
    x = 16 + bar_w
    for text, color in items:
        cv2.putText(legend, text, (x, legend_h // 2 + int(6 * legend_scale)), _FONT, legend_scale, color, 1, cv2.LINE_AA)
        x += cv2.getTextSize(text, _FONT, legend_scale, 1)[0][0] + 20
    return np.concatenate([mosaic, legend], axis=0)


#: |log(predicted / true depth)| at which the depth-error tile saturates (a factor of about 1.65).
DEPTH_ERROR_SATURATION = 0.5


def depth_error_panel(rgb: Any, true_depth: Any, pred_depth: Any, label: str = "") -> np.ndarray:
    """One row of four tiles: the image, the true depth, the predicted depth (both viridis, near
    dark, on the true depth's 2-98 % range) and the error ``log(predicted / true)``: blue where the
    prediction is too near, red where too far, white where right, grey where the truth has no
    measurement. Where depth is wrong is where the heatmaps go wrong.

    Args:
        rgb: ``(H, W, 3)`` uint8; true_depth / pred_depth: ``(H, W)`` metres (true 0 = unmeasured).
        label: drawn on the image tile.

    Returns:
        ``(H, 4 W, 3)`` uint8 RGB.
    """
    image = _check_rgb(rgb, "rgb").copy()
    true = np.nan_to_num(_to_numpy(true_depth).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    pred = np.nan_to_num(_to_numpy(pred_depth).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if true.shape != image.shape[:2] or pred.shape != image.shape[:2]:
        raise InputError(f"depth maps {true.shape} / {pred.shape} must match the image {image.shape[:2]}")
    measured = true > 0
    lo, hi = (np.percentile(true[measured], [2, 98]) if measured.any() else (0.0, 1.0))
    hi = max(hi, lo + 1e-3)

    def coloured(d: np.ndarray, mask: np.ndarray) -> np.ndarray:
        n = np.clip((d - lo) / (hi - lo), 0.0, 1.0)
        tile = cv2.cvtColor(cv2.applyColorMap((n * 255 + 0.5).astype(np.uint8), cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)
        tile[~mask] = 96
        return tile

    both = measured & (pred > 0)
    ratio = np.zeros_like(true)
    ratio[both] = np.clip(np.log(pred[both] / true[both]) / DEPTH_ERROR_SATURATION, -1.0, 1.0)
    error = np.full(image.shape, 255, np.uint8)
    error[..., 0] = np.where(ratio < 0, 255 * (1 + ratio), 255).astype(np.uint8)  # too near: blue
    error[..., 1] = (255 * (1 - np.abs(ratio))).astype(np.uint8)
    error[..., 2] = np.where(ratio > 0, 255 * (1 - ratio), 255).astype(np.uint8)  # too far: red
    error[~both] = 96
    if label:
        _text_box(image, label, (4, 14), 0.4)
    return np.concatenate([image, coloured(true, measured), coloured(pred, pred > 0), error], axis=1)
