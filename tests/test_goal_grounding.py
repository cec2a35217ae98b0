"""The ``mask`` goal head (vln_core/models/goal_grounding.py, vln_core/train/goal_grounding.py,
training/train_goal.py).

Real parts: procedural homes and the ray caster's object ids, the instruction grammar, the
embedded model's encoder and the learned backend. The sampled instructions name the goal as the
collector does and pass other objects; the phrase encoder reads word order (the same words with
goal and landmark swapped give another goal vector); the CLI trains a head that beats the shipped
one on held-out views, writes the checkpoint and the scores, and the learned backend then
publishes per-pixel probabilities; bad arguments exit 2 with one line.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vln_core.config import SimConfig
from vln_core.models.goal_grounding import GoalMaskHead, GoalPhraseEncoder, goal_heatmap_from_logits
from vln_core.sim.collect import build_episode
from vln_core.sim.instructions import describe_object, sample_goal_instruction
from vln_core.train.goal_grounding import _cell_share, _confusable, _goal_objects, held_out

REPO = Path(__file__).resolve().parents[1]


def test_sampled_instructions_name_the_goal_last_or_first_and_pass_the_preferred_objects():
    plan = build_episode(1000, SimConfig())
    scene = plan.scene
    goal = next(o for o in scene.objects if o.category == "counter" or o.category == "fridge") if any(
        o.category in ("counter", "fridge") for o in scene.objects) else scene.objects[0]
    prefer = tuple(o.index for o in scene.objects if o.index != goal.index)[:2]
    rng = np.random.default_rng(0)
    texts = [sample_goal_instruction(scene, goal, rng, prefer=prefer) for _ in range(40)]
    for text in texts:
        assert goal.category.replace("tv", "TV") in text
    passed = [describe_object(scene, scene.objects[k]) for k in prefer]
    assert sum(any(name in t for name in passed) for t in texts) >= 10  # the preferred landmarks come up


def test_hard_negatives_are_goals_out_of_view_that_look_like_something_in_view():
    """``--hard-negatives``: the goal named is not in view but shares a category or a colour with
    an object that is (its target is all zero: the head must not light the look-alike)."""
    scene = build_episode(1000, SimConfig()).scene
    goals = _goal_objects(scene)
    in_view = goals[:2]
    shown = [scene.objects[k] for k in in_view]
    hard = _confusable(scene, goals, in_view)
    assert hard and not set(hard) & set(in_view)
    for k in hard:
        assert any(o.category == scene.objects[k].category or o.color == scene.objects[k].color for o in shown)
    others = [k for k in goals if k not in in_view and k not in hard]
    for k in others:  # everything left out shares neither
        assert all(o.category != scene.objects[k].category and o.color != scene.objects[k].color for o in shown)


def test_the_phrase_encoder_reads_word_order():
    torch.manual_seed(0)
    from vln_core.models.tokenizer import HashedWordTokenizer

    tok = HashedWordTokenizer()
    enc = GoalPhraseEncoder(tok.vocab_size).eval()
    a = "pass the red chair and stop at the blue sofa"
    b = "pass the blue sofa and stop at the red chair"
    ids, mask = tok.encode([a, b], 64)
    with torch.no_grad():
        va, vb = enc(ids, mask)
    assert not torch.allclose(va, vb, atol=1e-4)
    # padding does not change a goal vector
    ids1, mask1 = tok.encode([a], 64)
    with torch.no_grad():
        alone = enc(ids1, mask1)[0]
    assert torch.allclose(alone, va, atol=1e-5)


def _tiny_mask_head() -> GoalMaskHead:
    from vln_core.models.reprojection_model import down_stage

    stages = torch.nn.ModuleList([down_stage(8, 12), down_stage(12, 16)])
    return GoalMaskHead(c8=8, goal_dim=8, stages=stages, c16=12, c32=16, hidden=16).eval()


def test_the_mask_head_reads_a_cells_surroundings_more_than_the_far_side_of_the_view():
    """What object a cell belongs to comes from its surroundings (the head's own 1/16 and 1/32
    stages, per cell): a change of the 1/8 features in one corner moves the logits of the cells in
    that corner far more than those of the far corner (which see it only through the view's mean)."""
    torch.manual_seed(0)
    head = _tiny_mask_head()
    f8, goal = torch.randn(1, 8, 28, 28), torch.randn(1, 8)
    changed = f8.clone()
    changed[:, :, :6, :6] += 3.0 * torch.randn(8, 6, 6)
    with torch.no_grad():
        delta = (head(changed, goal) - head(f8, goal)).abs()[0]
    near, far = float(delta[8:12, 8:12].mean()), float(delta[-4:, -4:].mean())
    assert near > 5 * far, (near, far)


def test_a_new_mask_head_starts_with_the_encoders_deep_stages():
    """The head's own 1/16 and 1/32 stages start as copies of the encoder's (then train with the
    head, while the encoder the depth network reads stays as it was): on a rendered view they give
    the encoder's own deep features."""
    from vln_core.models.shipped import embedded_with_new_head
    from vln_core.preprocess import preprocess_frames
    from vln_core.sim.closed_loop import NavSimulator
    from vln_core.train.nav_imitation import training_homes

    model, _, _ = embedded_with_new_head(None, "goal_head", "mask", ("goal_head.", "goal_phrase."))
    seed, episode = next(training_homes(1000, 1, SimConfig()))
    obs = NavSimulator(episode, SimConfig(), seed=seed).observe(0.0)
    frames = preprocess_frames([obs.rgb], None, obs.K, model.frame_size).frames
    with torch.no_grad():
        feats = model.encoder(frames)
        own16 = model.goal_head.stages[0](feats.f8)
        own32 = model.goal_head.stages[1](own16)
    assert torch.equal(own16, feats.f16) and torch.equal(own32, feats.f32)
    assert model.goal_head.stages[0] is not model.encoder.down16  # a copy: training it leaves the encoder alone


def test_training_views_skip_the_validation_homes_and_a_homes_views_do_not_depend_on_the_others():
    """``train_goal.py`` asks for training homes from seed 1000 on and validation homes from 2000
    on; with many training homes the first run past 2000, so they skip the validation seeds. A
    home's views come from its own seed: skipping a home leaves the others' views as they were."""
    from vln_core.models.shipped import load_model_checkpoint
    from vln_core.train.goal_grounding import collect_views

    model, _ = load_model_checkpoint(None)
    both = collect_views(1000, 2, SimConfig(), model, views_per_home=2, view_seed=1)
    second = collect_views(1000, 1, SimConfig(), model, views_per_home=2, view_seed=1, skip=(both.seeds[0],))
    assert second.seeds == both.seeds[1:]
    assert torch.equal(second.f8, both.f8[2:]) and second.coverage[0].keys() == both.coverage[2].keys()


def test_goal_heatmap_activation_and_cell_shares():
    logits = torch.tensor([[0.0, 2.0], [-2.0, 0.0]])
    soft = goal_heatmap_from_logits(logits, "softmax")
    assert float(soft.sum()) == pytest.approx(1.0)
    prob = goal_heatmap_from_logits(logits, "sigmoid")
    assert float(prob[0, 1]) == pytest.approx(1 / (1 + np.exp(-2.0)), abs=1e-6) and float(prob.sum()) != pytest.approx(1.0)
    with pytest.raises(ValueError):
        goal_heatmap_from_logits(logits, "relu")
    ids = -np.ones((16, 16), np.int32)
    ids[:8, :4] = 3
    share = _cell_share(ids, (2, 2))
    assert set(share) == {3} and share[3][0, 0] == pytest.approx(0.5) and share[3][1].sum() == 0
    combos = [(c, k, r) for c in ("red", "blue", "green") for k in ("chair", "sofa") for r in ("kitchen", "office")]
    assert [held_out(c) for c in combos] == [held_out(c) for c in combos]  # fixed, not random
    assert 0 < sum(held_out((c, k, r)) for c in ("red", "blue", "green", "white", "black", "grey", "brown", "yellow")
                   for k in ("chair", "sofa", "table", "lamp") for r in ("kitchen", "office", "bedroom")) < 40


def test_train_goal_cli_beats_the_shipped_head_and_the_backend_gives_probabilities(tmp_path):
    out = tmp_path / "goal"
    proc = subprocess.run([sys.executable, "training/train_goal.py", "--out", str(out), "--homes", "6",
                           "--val-homes", "3", "--views-per-home", "8", "--steps", "200", "--text-steps", "200",
                           "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "goal.json").read_text())
    val = summary["val"]
    assert val["goals_in_view"] > 10 and val["goals_out_of_view"] > 0
    assert summary["homes_in_both"] == 0
    assert val["peak_hit"] > val["chance"] + 0.1, val  # it finds the goal, not just any object
    assert "per_category" in val and "held_out_combinations" in val

    from vln_core.backends.learned import LearnedBackend
    from vln_core.backends.model_backend import TorchEngine
    from vln_core.config import load_config
    from vln_core.models.shipped import load_model_checkpoint

    model, meta = load_model_checkpoint(str(out / "checkpoint.pt"))
    shipped, shipped_meta = load_model_checkpoint(None)
    assert model.arch.goal_head == "mask" and model.goal_activation == "sigmoid"
    # evaluate.py's constant-depth baseline needs the training median depth: carried over
    assert meta["train_median_depth_m"] == shipped_meta["train_median_depth_m"] > 0
    for name, value in shipped.state_dict().items():  # everything but the goal head is the shipped model's
        if not name.startswith(("goal_head.", "goal_phrase.")):
            assert torch.equal(model.state_dict()[name], value), name
    # the head's own deep stages trained away from the encoder's they started as
    assert not torch.equal(model.goal_head.stages[1][0][0].weight, model.encoder.down32[0][0].weight)
    cfg = load_config(None, [f"node.model_path={out / 'checkpoint.pt'}", "node.learned_mode=rgb_only"])
    backend = LearnedBackend(cfg, TorchEngine(cfg, str(out / "checkpoint.pt")))
    assert backend.goal_activation == "sigmoid" and backend.describe()["goal_heatmap"] == "probability per pixel"
    from vln_core.backends.base import CameraFrame

    rgb = (np.random.default_rng(0).random((224, 224, 3)) * 255).astype(np.uint8)
    K = np.array([[150.0, 0, 111.5], [0, 150.0, 111.5], [0, 0, 1]])
    goal, waypoints = backend.goal_and_waypoints(CameraFrame(0, "cam", rgb, K=K, seq=0), "go to the red chair")
    assert goal.shape == (224, 224) and 0.0 <= goal.min() and goal.max() <= 1.0
    assert abs(float(goal.sum()) - 1.0) > 1e-3  # not a distribution over the view


@pytest.mark.parametrize("args", [["--homes", "0"], ["--steps", "-1"], ["--init", "/nonexistent/ckpt.pt"],
                                  ["--pos-weight", "0"], ["--in-view-share", "1.5"], ["--false-alarm-weight", "-1"]])
def test_train_goal_bad_input_is_exit_2_and_one_line(tmp_path, args):
    proc = subprocess.run([sys.executable, "training/train_goal.py", "--out", str(tmp_path / "x"), *args,
                           "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "x" / "checkpoint.pt").exists()
