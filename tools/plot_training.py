#!/usr/bin/env python3
"""Draw a run's training curves (train_log.jsonl + eval_log.jsonl) as one PNG, with OpenCV only.

    python tools/plot_training.py runs/embedded --out models/embedded/training_curves.png \\
        [--terms depth pose heatmap_kl goal waypoint]

One panel per loss term: the logged training values (grey) and the held-out evaluations (red dots).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _panel(name: str, train: list[tuple[int, float]], evals: list[tuple[int, float]], max_step: int,
           size: tuple[int, int] = (260, 380)) -> np.ndarray:
    h, w = size
    img = np.full((h, w, 3), 255, np.uint8)
    pad_l, pad_r, pad_t, pad_b = 48, 10, 26, 24
    values = [v for _, v in train + evals]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-9:
        hi = lo + 1.0

    def xy(step: float, v: float) -> tuple[int, int]:
        x = pad_l + (w - pad_l - pad_r) * step / max(max_step, 1)
        y = h - pad_b - (h - pad_t - pad_b) * (v - lo) / (hi - lo)
        return int(round(x)), int(round(y))

    cv2.rectangle(img, (pad_l, pad_t), (w - pad_r, h - pad_b), (200, 200, 200), 1)
    pts = np.array([xy(s, v) for s, v in train], np.int32)
    if len(pts) > 1:
        cv2.polylines(img, [pts], False, (120, 120, 120), 1, cv2.LINE_AA)
    for s, v in evals:
        cv2.circle(img, xy(s, v), 4, (0, 0, 220), -1, cv2.LINE_AA)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, name, (pad_l, 18), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"{hi:.3g}", (2, pad_t + 8), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"{lo:.3g}", (2, h - pad_b), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"step {max_step}", (w - 80, h - 6), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="training output folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--terms", nargs="+", default=["depth", "pose", "heatmap_kl", "goal", "waypoint", "loss"])
    args = parser.parse_args()
    run = Path(args.run)
    train, evals = _read(run / "train_log.jsonl"), _read(run / "eval_log.jsonl")
    if not train:
        print(f"error: {run / 'train_log.jsonl'} is missing or empty", file=sys.stderr)
        return 2
    max_step = max(r["step"] for r in train)
    panels = [_panel(t, [(r["step"], r[t]) for r in train if t in r], [(r["step"], r[t]) for r in evals if t in r], max_step)
              for t in args.terms]
    while len(panels) % 3:
        panels.append(np.full_like(panels[0], 255))
    rows = [np.concatenate(panels[i:i + 3], axis=1) for i in range(0, len(panels), 3)]
    legend = np.full((22, rows[0].shape[1], 3), 255, np.uint8)
    cv2.putText(legend, "grey: training batches (logged every 20 steps)   red: held-out scenes (data/sim_eval)", (8, 15),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, np.concatenate(rows + [legend]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
