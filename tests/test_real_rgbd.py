"""The geometry core on a real posed RGB-D sequence (skipped when the data is absent).

Run with ``-s`` to see the per-pair figures.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from vln_core.data.posed_images import load_posed_sequence
from vln_core.geometry.camera import PinholeCamera
from vln_core.geometry.reproject import reproject_depth
from vln_core.heatmaps import frame_indexed_heatmaps

GAP = 4  # compare frame position i with position i + 4 (frame numbers 8 apart in real_rgbd_box)


@pytest.fixture(scope="module")
def sequence(real_rgbd_dir):
    seq = load_posed_sequence(real_rgbd_dir)
    if seq.depths is None:
        pytest.skip(f"{real_rgbd_dir} has no depth images")
    return seq


def _disagreement(seq, i: int, j: int, pose_j: np.ndarray | None = None) -> np.ndarray:
    """|reprojected depth of i seen from j - measured depth of j| (metres) where both are valid."""
    H, W = seq.image_size
    pose_j = seq.poses[j] if pose_j is None else pose_j
    rendered = reproject_depth(seq.depths[i], seq.K, seq.poses[i], seq.K, pose_j, (H, W)).numpy()
    measured = seq.depths[j]
    both = (rendered > 0) & (measured > 0)
    return np.abs(rendered[both] - measured[both])


def test_depth_reprojects_onto_measured_depth_four_frames_later(sequence):
    medians, errors = [], []
    for i in range(len(sequence) - GAP):
        err = _disagreement(sequence, i, i + GAP)
        assert err.size > 10000, f"frames {sequence.frame_ids[i]}->{sequence.frame_ids[i + GAP]}: too little overlap"
        medians.append(float(np.median(err)))
        errors.append(err)
        print(f"frame {sequence.frame_ids[i]:3d} -> {sequence.frame_ids[i + GAP]:3d}: "
              f"median |dz| {1000 * medians[-1]:.2f} mm over {err.size} pixels")
    overall = float(np.median(np.concatenate(errors)))
    print(f"overall median {1000 * overall:.2f} mm, worst pair median {1000 * max(medians):.2f} mm, "
          f"{len(medians)} pairs")
    assert max(medians) < 0.02
    assert overall < 0.02


def test_wrong_pose_is_detected(sequence):
    """Control: the 2 cm bound catches a pose 3 cm off along the viewing direction."""
    i = len(sequence) // 2
    right = float(np.median(_disagreement(sequence, i, i + GAP)))
    off = sequence.poses[i + GAP].copy()
    off[:3, 3] += 0.03 * off[:3, 2]
    wrong = float(np.median(_disagreement(sequence, i, i + GAP, pose_j=off)))
    print(f"median |dz| with the right pose {1000 * right:.2f} mm, 3 cm off {1000 * wrong:.2f} mm")
    assert right < 0.02 < wrong


def test_real_heatmaps_self_overlap_and_turn_direction(sequence):
    """Current = first frame on a 160x120 grid; keyframes: itself, and later frames, which turn left
    (their optical axis has negative world x): their out-of-view content lies to the left."""
    H0, W0 = sequence.image_size
    cam = PinholeCamera.from_K(sequence.K, W0, H0).resized(160, 120)
    c = 0
    ks = [0, 13, 25, 49]
    cur_depth = cv2.resize(sequence.depths[c], (160, 120), interpolation=cv2.INTER_NEAREST)
    res = frame_indexed_heatmaps(
        torch.as_tensor(sequence.depths[ks]), torch.as_tensor(sequence.K, dtype=torch.float32),
        torch.as_tensor(sequence.poses[ks], dtype=torch.float32), cam.K_tensor(),
        torch.as_tensor(sequence.poses[c], dtype=torch.float32), (120, 160), torch.as_tensor(cur_depth),
    )
    for k, pos in enumerate(ks):
        print(f"kf {sequence.frame_ids[pos]} -> {sequence.frame_ids[c]}: in view {float(res.in_view_fraction[k]):.3f} "
              f"hidden {float(res.occluded_fraction[k]):.3f} out {float(res.out_of_view_fraction[k]):.3f} "
              f"bearing {math.degrees(float(res.out_of_view_bearing[k])):+.1f} deg")
    # the current frame as its own keyframe: all in view, nothing hidden beyond depth noise
    assert float(res.in_view_fraction[0]) > 0.97 and float(res.out_of_view_fraction[0]) == 0.0
    assert bool(res.has_overlap.all())
    torch.testing.assert_close(res.heatmap.sum(dim=(-1, -2)), torch.ones(4))
    # later keyframes turned left: some of their content is off to the left
    turned_left = [-sequence.poses[p][0, 2] > 0.2 for p in ks[1:]]
    assert all(turned_left)
    assert bool((res.out_of_view_bearing[1:] > 0).all())
    assert float(res.out_of_view_fraction[3]) > float(res.out_of_view_fraction[1])
