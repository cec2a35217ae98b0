#!/usr/bin/env python3
"""Picture of the embedded model's depth on a posed RGB-D folder: colour, the depth camera, the
monocular network (scaled by the matches, as the earlier model served it) and the multi-view depth.

    python tools/depth_panel.py ../shared/data/real_rgbd_box --frame 8 --out docs/images/depth_real_box.png \\
        [--checkpoint models/embedded/checkpoint.pt] [--frames 16] [--stride 1]

The frame's window is ``--frames`` frames ending ``--stride`` apart around it (the frame itself is
the window's ``--frame``-th). Depth is drawn on one colour scale (turbo, near = blue), black where
the depth camera has no measurement in its panel; AbsRel against the depth camera is printed on
each predicted panel. Bad input: exit status 2 and one line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vln_core.errors import InputError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="posed RGB-D folder (frame-NNNNNN.color.png / .depth.png / .pose.txt)")
    parser.add_argument("--frame", type=int, default=8, help="position of the pictured frame in the window")
    parser.add_argument("--frames", type=int, default=16, help="window length (default 16)")
    parser.add_argument("--stride", type=int, default=1, help="folder frames between window frames")
    parser.add_argument("--start", type=int, default=10, help="folder frame the window starts at")
    parser.add_argument("--checkpoint", default=None, help="default: the shipped models/embedded/checkpoint.pt")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args(argv)
    try:
        import cv2
        import numpy as np
        import torch

        from vln_core.atomic import atomic_write_bytes
        from vln_core.data.posed_images import load_posed_sequence
        from vln_core.geometry.matching import orb_features
        from vln_core.models.shipped import load_model_checkpoint
        from vln_core.preprocess import preprocess_frames
        from vln_core.models.window_geometry import window_geometry

        if not 0 <= args.frame < args.frames or args.stride < 1:
            raise InputError("need 0 <= --frame < --frames and --stride >= 1")
        seq = load_posed_sequence(args.folder, stride=args.stride, start=args.start, max_frames=args.frames)
        if len(seq.colors) < args.frames or seq.depths is None:
            raise InputError(f"{args.folder}: fewer than {args.frames} frames with depth from frame {args.start}")
        model, _ = load_model_checkpoint(args.checkpoint)
        size = tuple(int(s) for s in model.frame_size)
        pre = preprocess_frames(list(seq.colors), list(seq.depths), seq.K, size)
        T_wc = torch.from_numpy(np.stack(seq.poses)).float()
        T = torch.linalg.inv(T_wc[-1]) @ T_wc
        orb = [orb_features(f) for f in pre.frames]
        with torch.no_grad():
            enc = model.encode_frames(pre.frames)
            panels = {}
            for name, source in (("monocular + match scale", "monocular"), ("multi-view (fused)", "fused")):
                depth, _, _ = window_geometry(
                    enc.depth.float(), enc.depth_conf.float(), pre.K, T, True, depth_source=source,
                    num_sources=model.cfg.model.multiview_sources,
                    network=model.multiview if model.has_multiview else None,
                    features=model.multiview_features(pre.frames) if model.has_multiview else None,
                    orb=orb, match_indices=[args.frame])
                panels[name] = depth[args.frame].numpy()
        true = pre.depths[args.frame].numpy()
        valid = true > 0
        lo, hi = np.percentile(true[valid], [2, 98]) if valid.any() else (0.3, 5.0)

        def draw(depth: np.ndarray, label: str, mask: np.ndarray | None = None) -> np.ndarray:
            x = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
            img = cv2.applyColorMap((x * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
            if mask is not None:
                img[~mask] = 0
            cv2.putText(img, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
            return img

        colour = cv2.cvtColor((pre.frames[args.frame].permute(1, 2, 0).numpy() * 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
        row = [colour, draw(true, "depth camera", valid)]
        for name, depth in panels.items():
            absrel = float(np.mean(np.abs(depth[valid] - true[valid]) / true[valid])) if valid.any() else float("nan")
            row.append(draw(depth, f"{name}: AbsRel {absrel:.2f}"))
        ok, buf = cv2.imencode(".png", np.concatenate(row, axis=1))
        if not ok:
            raise InputError(f"could not encode {args.out}")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(Path(args.out), buf.tobytes())
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} (depth scale {lo:.2f}-{hi:.2f} m)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
