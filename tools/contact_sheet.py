#!/usr/bin/env python3
"""Contact sheet of episodes: one row of evenly spaced frames per episode, instruction underneath.

Usage::

    python tools/contact_sheet.py data/sim --out docs/images/sim_contact_sheet.png \
        [--episodes 8] [--frames 6] [--thumb 160] [--max-bytes 1500000]

Reads episodes with :func:`vln_core.data.episode.read_episode`; works for any episode source
(simulator, recordings, rosbag imports).
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vln_core.data.episode import list_episodes, read_episode  # noqa: E402
from vln_core.errors import InputError  # noqa: E402


def _text_block(text: str, width: int, line_height: int = 18, scale: float = 0.5) -> np.ndarray:
    """White block with ``text`` wrapped to ``width`` pixels (black, Hershey font)."""
    chars = max(10, int(width / (scale * 19)))
    lines = textwrap.wrap(text, chars) or [""]
    block = np.full((line_height * len(lines) + 8, width, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(block, line, (6, 4 + line_height * (i + 1) - 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return block


def build_sheet(root: Path, n_episodes: int, n_frames: int, thumb: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB contact sheet of up to ``n_episodes`` episodes under ``root``."""
    episodes = list_episodes(root)
    if not episodes:
        raise InputError(f"no complete episodes under {root}")
    pick = np.unique(np.linspace(0, len(episodes) - 1, min(n_episodes, len(episodes))).round().astype(int))
    rows = []
    for k in pick:
        ep = read_episode(episodes[k])
        idx = np.unique(np.linspace(0, len(ep) - 1, n_frames).round().astype(int))
        tiles = []
        for i in idx:
            img = ep.color(int(i))
            h = int(round(img.shape[0] * thumb / img.shape[1]))
            tiles.append(cv2.resize(img, (thumb, h), interpolation=cv2.INTER_AREA))
            tiles.append(np.full((h, 2, 3), 255, np.uint8))
        strip = np.concatenate(tiles[:-1], axis=1)
        label = f"{episodes[k].name}: {ep.instruction}  [intent: {ep.intent}]"
        rows.append(strip)
        rows.append(_text_block(label, strip.shape[1]))
        rows.append(np.full((6, strip.shape[1], 3), 255, np.uint8))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)


def save_png(sheet: np.ndarray, out: Path, max_bytes: int) -> int:
    """Write ``sheet`` as PNG; if larger than ``max_bytes``, quantise to an adaptive 256-colour palette."""
    out.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(sheet)
    img.save(out, optimize=True)
    if out.stat().st_size > max_bytes:
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
    return out.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="folder holding episodes")
    parser.add_argument("--out", type=Path, required=True, help="output PNG")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--frames", type=int, default=6, help="frames per episode row")
    parser.add_argument("--thumb", type=int, default=160, help="thumbnail width in pixels")
    parser.add_argument("--max-bytes", type=int, default=1_500_000)
    args = parser.parse_args(argv)
    try:
        sheet = build_sheet(args.root, args.episodes, args.frames, args.thumb)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = save_png(sheet, args.out, args.max_bytes)
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]}, {size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
