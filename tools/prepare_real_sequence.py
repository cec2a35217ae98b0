#!/usr/bin/env python3
"""Convert a public real posed RGB-D sequence into the project's "posed images" folder layout.

    python tools/prepare_real_sequence.py --format tum SRC_DIR --out data/real/NAME \\
        [--camera fr1|fr2|fr3 | --intrinsics FX FY CX CY] [--start N] [--max-frames N] \\
        [--max-dt 0.02] [--source-note TEXT ...]

Formats:

``tum``
    A TUM RGB-D benchmark sequence folder (``rgb.txt``, ``depth.txt``, ``groundtruth.txt``,
    ``rgb/``, ``depth/``) or a folder in the same layout. Each colour frame is associated with the
    nearest depth frame (``|dt| < --max-dt``) and a ground-truth pose interpolated at the colour
    timestamp (linear translation, quaternion slerp between the two bracketing ground-truth
    samples, which must lie within ``--max-dt`` of the frame on each side); colour frames that do
    not associate are dropped. The camera motion between the depth and the colour timestamps is
    compensated by forward-warping each depth map from the ground-truth pose at its own timestamp
    to the pose at the colour timestamp (``--no-motion-compensation`` keeps it as recorded; holes
    the warp leaves are 0 = no measurement). Ground truth (``tx ty tz qx qy qz qw``, the colour camera's optical
    frame in the motion-capture world) is already camera-to-world with OpenCV optical axes.
    Depth (uint16, 5000 per metre) is rewritten as uint16 millimetres (0 stays 0 = no
    measurement). The intrinsics are the published per-camera values (``--camera``, detected from
    the ``freiburgN`` name in ``rgb.txt``'s header when not given) or ``--intrinsics``; the lens
    distortion TUM publishes is not applied (the images are used as recorded).

Output (see ``vln_core/data/posed_images.py``): ``frame-NNNNNN.color.png`` (the source PNG bytes),
``frame-NNNNNN.depth.png`` (uint16 mm on the colour grid), ``frame-NNNNNN.pose.txt`` (4x4
camera-to-world in metres, re-expressed relative to the first kept frame, which becomes the
identity), ``intrinsics.K.txt`` and ``README.md`` (source, frames, rate, conversion). Frame
numbers are consecutive from 0 in time order, at the source rate.

Everything is written into a new temporary folder beside ``--out`` and renamed to ``--out`` at the
end; an existing ``--out`` is never touched (the run stops instead), and on failure only the
temporary folder this run created is removed. Bad input exits with status 2 and one line.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

#: published TUM RGB-D colour intrinsics (fx, fy, cx, cy), 640x480
TUM_CAMERAS = {
    "fr1": (517.3, 516.5, 318.6, 255.3),
    "fr2": (520.9, 521.0, 325.1, 249.7),
    "fr3": (535.4, 539.2, 320.1, 247.6),
}
TUM_DEPTH_PER_METRE = 5000.0


class BadInput(Exception):
    """Bad input: reported as one line, exit status 2."""


# ------------------------------------------------------------------------------- small helpers


def _read_stamped_list(path: Path) -> list[tuple[float, list[str]]]:
    """``timestamp rest...`` lines of a TUM text file, comments skipped, sorted by time."""
    if not path.is_file():
        raise BadInput(f"{path} does not exist")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            rows.append((float(parts[0]), parts[1:]))
        except ValueError:
            raise BadInput(f"{path}:{lineno}: first field is not a timestamp: {line[:60]!r}") from None
    if not rows:
        raise BadInput(f"{path} holds no entries")
    rows.sort(key=lambda r: r[0])
    return rows


def _quat_to_R(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _slerp(q0: np.ndarray, q1: np.ndarray, a: float) -> np.ndarray:
    q0 = q0 / np.linalg.norm(q0)
    q1 = q1 / np.linalg.norm(q1)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + a * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1 - a) * theta) * q0 + np.sin(a * theta) * q1) / np.sin(theta)


def _nearest(times: np.ndarray, t: float) -> int:
    i = int(np.searchsorted(times, t))
    if i == 0:
        return 0
    if i == len(times):
        return len(times) - 1
    return i if times[i] - t < t - times[i - 1] else i - 1


def _rotation_angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


# ------------------------------------------------------------------------------- TUM


@dataclass
class Frame:
    t_color: float
    color: Path
    t_depth: float
    depth: Path
    T_wc: np.ndarray  # colour camera at the colour timestamp
    T_wc_depth: np.ndarray  # colour camera at the depth timestamp


def _interpolate_pose(t_gt: np.ndarray, gt: np.ndarray, t: float, max_dt: float) -> Optional[np.ndarray]:
    """4x4 pose at ``t`` from the two bracketing samples (each within ``max_dt``), else None."""
    k = int(np.searchsorted(t_gt, t))  # t_gt[k-1] <= t < t_gt[k]
    if k == 0 or k == len(t_gt) or t - t_gt[k - 1] >= max_dt or t_gt[k] - t >= max_dt:
        return None
    a = (t - t_gt[k - 1]) / (t_gt[k] - t_gt[k - 1])
    T = np.eye(4)
    T[:3, :3] = _quat_to_R(_slerp(gt[k - 1, 3:], gt[k, 3:], a))
    T[:3, 3] = (1 - a) * gt[k - 1, :3] + a * gt[k, :3]
    return T


def _warp_depth(metres: np.ndarray, K: np.ndarray, T_from: np.ndarray, T_to: np.ndarray) -> np.ndarray:
    """Forward-warp a depth map taken at pose ``T_from`` into the same camera at ``T_to``.

    Nearest pixel, nearest surface wins (z-buffer); pixels nothing lands on are 0 (no invented
    values). Compensates the camera motion between the depth and the colour timestamps.
    """
    H, W = metres.shape
    v, u = np.nonzero(metres > 0)
    z = metres[v, u]
    pts = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], axis=1)
    T = np.linalg.inv(T_to) @ T_from
    pts = pts @ T[:3, :3].T + T[:3, 3]
    zc = pts[:, 2]
    ok = zc > 1e-6
    uc = np.rint(K[0, 0] * pts[ok, 0] / zc[ok] + K[0, 2]).astype(np.int64)
    vc = np.rint(K[1, 1] * pts[ok, 1] / zc[ok] + K[1, 2]).astype(np.int64)
    zc = zc[ok]
    inside = (uc >= 0) & (uc < W) & (vc >= 0) & (vc < H)
    uc, vc, zc = uc[inside], vc[inside], zc[inside]
    order = np.argsort(-zc)  # far first, so nearer points overwrite
    out = np.zeros_like(metres)
    out[vc[order], uc[order]] = zc[order]
    return out


def _tum_camera_from_header(path: Path) -> Optional[str]:
    head = "\n".join(path.read_text().splitlines()[:5]).lower()
    for n in ("1", "2", "3"):
        if f"freiburg{n}" in head or f"fr{n}_" in head:
            return f"fr{n}"
    return None


def _tum_frames(src: Path, max_dt: float) -> tuple[list[Frame], dict]:
    colors = _read_stamped_list(src / "rgb.txt")
    depths = _read_stamped_list(src / "depth.txt")
    truth = _read_stamped_list(src / "groundtruth.txt")
    t_depth = np.array([t for t, _ in depths])
    t_gt = np.array([t for t, _ in truth])
    try:
        gt = np.array([[float(v) for v in rest[:7]] for _, rest in truth])
    except ValueError:
        raise BadInput(f"{src / 'groundtruth.txt'}: pose fields are not numbers") from None
    if gt.ndim != 2 or gt.shape[1] != 7:
        raise BadInput(f"{src / 'groundtruth.txt'}: expected 'timestamp tx ty tz qx qy qz qw' lines")

    frames: list[Frame] = []
    dropped = {"no depth": 0, "no pose": 0, "missing file": 0}
    for t, rest in colors:
        if not rest:
            raise BadInput(f"{src / 'rgb.txt'}: entry at {t} has no file name")
        j = _nearest(t_depth, t)
        if abs(t_depth[j] - t) >= max_dt:
            dropped["no depth"] += 1
            continue
        T = _interpolate_pose(t_gt, gt, t, max_dt)
        T_depth = _interpolate_pose(t_gt, gt, float(t_depth[j]), max_dt)
        if T is None or T_depth is None:
            dropped["no pose"] += 1
            continue
        color_path, depth_path = src / rest[0], src / depths[j][1][0]
        if not color_path.is_file() or not depth_path.is_file():
            dropped["missing file"] += 1
            continue
        frames.append(Frame(t, color_path, float(t_depth[j]), depth_path, T, T_depth))
    stats = {"colour entries": len(colors), "dropped": dropped}
    return frames, stats


# ------------------------------------------------------------------------------- writing


def _write_sequence(frames: list[Frame], K: np.ndarray, out_tmp: Path, motion_compensate: bool) -> dict:
    T0_inv = np.linalg.inv(frames[0].T_wc)
    size = None
    depth_values = []
    for n, f in enumerate(frames):
        color = cv2.imread(str(f.color), cv2.IMREAD_UNCHANGED)
        if color is None or color.dtype != np.uint8 or color.ndim != 3 or color.shape[2] != 3:
            raise BadInput(f"{f.color}: not an 8-bit 3-channel colour image")
        raw = cv2.imread(str(f.depth), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.dtype != np.uint16 or raw.ndim != 2:
            raise BadInput(f"{f.depth}: not a single-channel 16-bit depth PNG")
        if raw.shape != color.shape[:2]:
            raise BadInput(
                f"{f.depth}: depth {raw.shape[1]}x{raw.shape[0]} differs from colour "
                f"{color.shape[1]}x{color.shape[0]}; this format expects registered depth"
            )
        if size is None:
            size = color.shape[:2]
        elif color.shape[:2] != size:
            raise BadInput(f"{f.color}: image size changes within the sequence")
        metres = raw.astype(np.float64) / TUM_DEPTH_PER_METRE
        if motion_compensate:
            metres = _warp_depth(metres, K, f.T_wc_depth, f.T_wc)
        mm = np.rint(metres * 1000.0)
        mm[(metres <= 0) | (mm >= 65535)] = 0
        mm = mm.astype(np.uint16)
        stem = out_tmp / f"frame-{n:06d}"
        if f.color.suffix.lower() == ".png":
            shutil.copyfile(f.color, f"{stem}.color.png")
        else:
            cv2.imwrite(f"{stem}.color.png", color)
        if not cv2.imwrite(f"{stem}.depth.png", mm):
            raise BadInput(f"could not write {stem}.depth.png")
        T = T0_inv @ f.T_wc
        np.savetxt(f"{stem}.pose.txt", T, fmt="%.9f")
        if n % 10 == 0:
            depth_values.append(metres[metres > 0][::37])
    np.savetxt(out_tmp / "intrinsics.K.txt", K, fmt="%.6f")
    d = np.concatenate(depth_values) if depth_values else np.zeros(1)
    return {"size": size, "depth_median": float(np.median(d)),
            "depth_p5": float(np.percentile(d, 5)), "depth_p95": float(np.percentile(d, 95))}


def _motion_summary(frames: list[Frame]) -> dict:
    T0_inv = np.linalg.inv(frames[0].T_wc)
    poses = [T0_inv @ f.T_wc for f in frames]
    path = sum(float(np.linalg.norm(b[:3, 3] - a[:3, 3])) for a, b in zip(poses, poses[1:]))
    rot = sum(_rotation_angle_deg(a[:3, :3].T @ b[:3, :3]) for a, b in zip(poses, poses[1:]))
    extent = np.ptp(np.array([p[:3, 3] for p in poses]), axis=0)
    return {"path_m": path, "rotation_deg": rot, "extent_m": extent,
            "end_offset_m": float(np.linalg.norm(poses[-1][:3, 3])),
            "end_angle_deg": _rotation_angle_deg(poses[-1][:3, :3])}


def _readme(args, frames: list[Frame], K: np.ndarray, stats: dict, written: dict, motion: dict) -> str:
    dts = np.diff([f.t_color for f in frames])
    rate = 1.0 / float(np.median(dts)) if len(dts) else float("nan")
    dd = np.array([abs(f.t_depth - f.t_color) for f in frames])
    lines = [
        f"# {args.out.name}",
        "",
        "Real posed RGB-D sequence converted with `tools/prepare_real_sequence.py "
        f"--format {args.format}`.",
        "",
        "## Source",
        "",
    ]
    lines += [f"- {note}" for note in (args.source_note or [])] or ["- (no source note given)"]
    lines += [
        f"- source folder at conversion: `{args.src}`",
        "",
        "## Frames",
        "",
        f"- {len(frames)} frames, `frame-000000` .. `frame-{len(frames) - 1:06d}`, consecutive in time "
        f"(source colour timestamps {frames[0].t_color:.6f} .. {frames[-1].t_color:.6f}, "
        f"{frames[-1].t_color - frames[0].t_color:.2f} s)",
        f"- frame rate: median {rate:.1f} Hz (colour frame spacing {1000 * float(np.median(dts)):.1f} ms, "
        f"max {1000 * float(np.max(dts)):.1f} ms)" if len(dts) else "- single frame",
        f"- colour entries in the source: {stats['colour entries']}; dropped before --start/--max-frames: "
        + ", ".join(f"{k} {v}" for k, v in stats["dropped"].items()),
        f"- kept from position {args.start} of the associated frames"
        + (f", at most {args.max_frames}" if args.max_frames else ""),
        f"- image size {written['size'][1]}x{written['size'][0]}",
        f"- depth (sampled every 10th frame): median {written['depth_median']:.2f} m, "
        f"5-95 % {written['depth_p5']:.2f}-{written['depth_p95']:.2f} m",
        f"- camera motion: path {motion['path_m']:.2f} m, summed rotation {motion['rotation_deg']:.0f} deg, "
        f"extent x/y/z {motion['extent_m'][0]:.2f}/{motion['extent_m'][1]:.2f}/{motion['extent_m'][2]:.2f} m, "
        f"last frame {motion['end_offset_m']:.2f} m / {motion['end_angle_deg']:.0f} deg from the first",
        "",
        "## Conversion",
        "",
        f"- colour: each colour frame; depth: the nearest depth frame (|dt| < {1000 * args.max_dt:.0f} ms; "
        f"median {1000 * float(np.median(dd)):.1f} ms, max {1000 * float(np.max(dd)):.1f} ms); "
        + ("the depth map is used as recorded" if args.no_motion_compensation else
           "the camera motion between the depth and the colour timestamps is compensated: each depth map "
           "is forward-warped (nearest pixel, z-buffer, holes left 0) from the ground-truth pose at its own "
           "timestamp to the pose at the colour timestamp, with the colour K")
        + "; the Kinect's own depth-to-colour registration is kept (no re-registration)",
        f"- depth: source uint16 / {TUM_DEPTH_PER_METRE:g} per metre -> uint16 millimetres, 0 = no measurement",
        f"- pose: ground truth interpolated at the colour timestamp (bracketing samples within "
        f"{1000 * args.max_dt:.0f} ms; linear translation, slerp rotation), camera-to-world, OpenCV optical "
        "axes, metres, re-expressed relative to the first kept frame (`frame-000000.pose.txt` is the identity)",
        "- intrinsics.K.txt: " + np.array2string(K, precision=2, separator=" ").replace("\n", "")
        + f" ({args.intrinsics_origin}); lens distortion not applied",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- main


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="source sequence folder")
    parser.add_argument("--format", required=True, choices=["tum"], help="layout of the source")
    parser.add_argument("--out", required=True, type=Path, help="output folder (must not exist)")
    parser.add_argument("--camera", choices=sorted(TUM_CAMERAS), help="TUM camera (default: from rgb.txt header)")
    parser.add_argument("--intrinsics", nargs=4, type=float, metavar=("FX", "FY", "CX", "CY"),
                        help="pinhole intrinsics of the colour images (overrides --camera)")
    parser.add_argument("--start", type=int, default=0, help="first associated frame kept (position)")
    parser.add_argument("--max-frames", type=int, default=None, help="keep at most this many frames")
    parser.add_argument("--max-dt", type=float, default=0.02, help="association tolerance in seconds")
    parser.add_argument("--no-motion-compensation", action="store_true",
                        help="use each depth map as recorded instead of warping it to the colour timestamp")
    parser.add_argument("--source-note", action="append",
                        help="a line for README.md's Source section (repository, commit, path, licence); repeatable")
    args = parser.parse_args(argv)

    out_tmp: Optional[Path] = None
    try:
        if not args.src.is_dir():
            raise BadInput(f"source folder {args.src} does not exist")
        if args.out.exists():
            raise BadInput(f"{args.out} already exists; choose a new --out (nothing is overwritten)")
        if args.start < 0 or (args.max_frames is not None and args.max_frames < 2):
            raise BadInput("--start must be >= 0 and --max-frames >= 2")
        if not 0 < args.max_dt <= 0.1:
            raise BadInput(f"--max-dt must be in (0, 0.1] seconds, got {args.max_dt}")

        missing = [n for n in ("rgb.txt", "depth.txt", "groundtruth.txt") if not (args.src / n).is_file()]
        if missing:
            raise BadInput(f"{args.src} is not a TUM sequence folder (missing {', '.join(missing)})")
        if args.intrinsics:
            fx, fy, cx, cy = args.intrinsics
            if fx <= 0 or fy <= 0:
                raise BadInput("--intrinsics: focal lengths must be positive")
            args.intrinsics_origin = "given with --intrinsics"
        else:
            camera = args.camera or _tum_camera_from_header(args.src / "rgb.txt")
            if camera is None:
                raise BadInput("cannot tell the TUM camera from rgb.txt; give --camera fr1|fr2|fr3 or --intrinsics")
            fx, fy, cx, cy = TUM_CAMERAS[camera]
            args.intrinsics_origin = f"published TUM {camera} colour intrinsics"
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

        frames, stats = _tum_frames(args.src, args.max_dt)
        frames = frames[args.start:]
        if args.max_frames is not None:
            frames = frames[: args.max_frames]
        if len(frames) < 2:
            raise BadInput(f"{args.src}: fewer than 2 frames associate colour, depth and pose (after --start)")

        args.out.parent.mkdir(parents=True, exist_ok=True)
        out_tmp = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.partial-", dir=args.out.parent))
        written = _write_sequence(frames, K, out_tmp, not args.no_motion_compensation)
        motion = _motion_summary(frames)
        (out_tmp / "README.md").write_text(_readme(args, frames, K, stats, written, motion))
        if args.out.exists():
            raise BadInput(f"{args.out} appeared while converting; left untouched")
        out_tmp.rename(args.out)
        out_tmp = None
        print(f"{args.out}: {len(frames)} frames, {written['size'][1]}x{written['size'][0]}, "
              f"depth median {written['depth_median']:.2f} m, path {motion['path_m']:.2f} m, "
              f"rotation {motion['rotation_deg']:.0f} deg")
        return 0
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if out_tmp is not None and out_tmp.is_dir():
            shutil.rmtree(out_tmp)  # only the temporary folder this run created


if __name__ == "__main__":
    sys.exit(main())
