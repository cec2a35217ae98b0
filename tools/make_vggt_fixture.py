"""Regenerate the VGGT test fixtures from the reference implementation (run rarely, by hand).

The reference is Meta's VGGT code as vendored by Spatial-MLLM (``src/qwenvl/external/vggt``) or
facebookresearch/vggt (the ``vggt`` package). It is read from a checkout OUTSIDE this repository
and never copied into it. To fetch it::

    git clone --depth 1 https://github.com/diankun-wu/Spatial-MLLM /tmp/vggt_ref/Spatial-MLLM
    pip install --target /tmp/vggt_ref/pydeps einops      # the reference's track head imports einops
    .venv/bin/python tools/make_vggt_fixture.py \
        --ref /tmp/vggt_ref/Spatial-MLLM/src/qwenvl/external --pydeps /tmp/vggt_ref/pydeps

``--ref`` is the directory that CONTAINS the ``vggt`` package. Writes to ``tests/fixtures/``:

* ``vggt_tiny.safetensors``: the state dict of a small reference VGGT (embed dim 32, 4 block
  pairs, 2 heads, 4 registers, a 2-block DINOv2-reg patch embed, the camera head's real 4-block
  trunk and 4 refinement iterations, depth and point DPT heads at 16 features, no track head)
  with fixed random weights, stored as float16 values (the network runs in float32 on exactly
  these values, so nothing is lost);
* ``vggt_tiny_io.pt``: the tiny config, fixed inputs (3 frames of 42x56, i.e. a non-square 3x4
  patch grid that exercises the position-table interpolation) and the reference's outputs
  (pose encodings of every iteration, depth, depth confidence, world points and confidence, and
  the reference's own decoding of the final pose encodings into extrinsics and intrinsics);
* ``vggt_1b_layout.json``: parameter names and shapes of the full-size reference
  (``VGGT()``: embed 1024, depth 24, 16 heads, patch 14, 518 px, track head included, as in the
  published checkpoint), built with parameters on the meta device (no memory, no weights).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(img_size=56, patch_size=14, embed_dim=32, depth=4, num_heads=2, mlp_ratio=4.0, num_register_tokens=4,
            patch_embed_depth=2, patch_embed_heads=2, rope_frequency=100.0, camera_trunk_depth=4, camera_heads=4,
            camera_iterations=4, dpt_features=16, dpt_out_channels=[8, 16, 32, 32], dpt_layers=[0, 1, 2, 3],
            point_head=True)
FRAMES, HEIGHT, WIDTH = 3, 42, 56


@contextlib.contextmanager
def parameters_on_meta():
    """Create every parameter on the meta device (the reference calls ``.item()`` while building,
    which ``torch.device('meta')`` as a default device does not allow)."""
    original = nn.Module.register_parameter

    def register(self, name, param):
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(self, name, param)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def build_tiny_reference():
    from vggt.heads.camera_head import CameraHead
    from vggt.heads.dpt_head import DPTHead
    from vggt.layers.attention import MemEffAttention
    from vggt.layers.block import NestedTensorBlock
    from vggt.layers.vision_transformer import DinoVisionTransformer
    from vggt.models.aggregator import Aggregator
    from vggt.models.vggt import VGGT

    t = TINY
    model = VGGT.__new__(VGGT)
    nn.Module.__init__(model)
    # "conv" avoids building a throw-away ViT-L; the DINOv2-reg patch embed is set below at our width
    model.aggregator = Aggregator(img_size=t["img_size"], patch_size=t["patch_size"], embed_dim=t["embed_dim"],
                                  depth=t["depth"], num_heads=t["num_heads"], mlp_ratio=t["mlp_ratio"],
                                  num_register_tokens=t["num_register_tokens"], patch_embed="conv",
                                  rope_freq=int(t["rope_frequency"]))
    model.aggregator.patch_embed = DinoVisionTransformer(
        img_size=t["img_size"], patch_size=t["patch_size"], embed_dim=t["embed_dim"], depth=t["patch_embed_depth"],
        num_heads=t["patch_embed_heads"], mlp_ratio=t["mlp_ratio"],
        block_fn=partial(NestedTensorBlock, attn_class=MemEffAttention), num_register_tokens=t["num_register_tokens"],
        interpolate_antialias=True, interpolate_offset=0.0, block_chunks=0, init_values=1.0)
    model.aggregator.patch_embed.mask_token.requires_grad_(False)
    dim = 2 * t["embed_dim"]
    model.camera_head = CameraHead(dim_in=dim, trunk_depth=t["camera_trunk_depth"], num_heads=t["camera_heads"])
    dpt = dict(features=t["dpt_features"], out_channels=t["dpt_out_channels"], intermediate_layer_idx=t["dpt_layers"])
    model.depth_head = DPTHead(dim_in=dim, output_dim=2, activation="exp", conf_activation="expp1", **dpt)
    model.point_head = DPTHead(dim_in=dim, output_dim=4, activation="inv_log", conf_activation="expp1", **dpt)
    model.track_head = None
    return model


@torch.no_grad()
def randomise(model: nn.Module, seed: int = 0) -> None:
    """Fixed random weights with O(1) effects everywhere (the reference's own init makes layer
    scales 0.01 and tokens 1e-6, which would hide most of the network from the test), rounded to
    float16-representable values."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("gamma"):  # layer scale
            v = 0.5 + 0.5 * torch.rand(p.shape, generator=g)
        elif p.dim() == 1 and ("norm" in name) and name.endswith("weight"):
            v = 1.0 + 0.2 * torch.randn(p.shape, generator=g)
        elif p.dim() == 1:  # biases
            v = 0.05 * torch.randn(p.shape, generator=g)
        else:
            fan_in = p[0].numel() if p.dim() > 1 else p.numel()
            if "resize_layers.0" in name or "resize_layers.1" in name:  # ConvTranspose2d: (in, out, k, k)
                fan_in = p.shape[0]
            v = torch.randn(p.shape, generator=g) / fan_in ** 0.5
        if "output_conv2.2" in name:  # keep exp() of depth / confidence in a readable range
            v = v * 0.3
        p.copy_(v.half().float())


def git_describe(ref: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(ref), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ref", required=True, type=Path, help="directory that contains the reference `vggt` package")
    parser.add_argument("--pydeps", type=Path, default=None, help="extra site dir for the reference's deps (einops)")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures")
    parser.add_argument("--source", default="github.com/diankun-wu/Spatial-MLLM src/qwenvl/external/vggt",
                        help="provenance string recorded in the fixture")
    parser.add_argument("--commit", default=None, help="reference commit recorded in the fixture (default: git HEAD of --ref)")
    args = parser.parse_args()
    if not (args.ref / "vggt" / "models" / "vggt.py").is_file():
        parser.error(f"--ref {args.ref} does not contain vggt/models/vggt.py (pass the directory above the package)")
    if (ROOT in args.ref.resolve().parents) or args.ref.resolve() == ROOT:
        parser.error("--ref must be outside this repository (reference code is never copied in)")
    sys.path[:0] = [str(args.ref)] + ([str(args.pydeps)] if args.pydeps else [])
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = build_tiny_reference()
    randomise(model)
    model.eval()
    images = torch.rand(1, FRAMES, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pred = model(images)
    from vggt.utils.pose_enc import pose_encoding_to_extri_intri

    extrinsics, intrinsics = pose_encoding_to_extri_intri(pred["pose_enc"], (HEIGHT, WIDTH))

    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    assert all(torch.equal(v.float(), model.state_dict()[k]) for k, v in state.items()), "weights not fp16-exact"
    commit = args.commit or git_describe(args.ref)
    save_file(state, str(args.out / "vggt_tiny.safetensors"), metadata={"source": args.source, "commit": commit})
    io = {
        "config": TINY,
        "source": args.source,
        "commit": commit,
        "images": images[0],  # (S, 3, H, W)
        "pose_enc": pred["pose_enc"][0],  # (S, 9)
        "pose_enc_list": torch.stack(pred["pose_enc_list"])[:, 0],  # (iterations, S, 9)
        "depth": pred["depth"][0, ..., 0],  # (S, H, W)
        "depth_conf": pred["depth_conf"][0],
        "world_points": pred["world_points"][0],  # (S, H, W, 3)
        "world_points_conf": pred["world_points_conf"][0],
        "extrinsics": extrinsics[0],  # (S, 3, 4) the reference's decoding: world-to-camera [R | t]
        "intrinsics": intrinsics[0],  # (S, 3, 3)
    }
    torch.save(io, args.out / "vggt_tiny_io.pt")

    from vggt.models.vggt import VGGT

    with parameters_on_meta():
        full = VGGT()  # img 518, patch 14, embed 1024, depth 24, 16 heads; with the track head, as published
    layout = {"source": args.source, "commit": commit,
              "note": "VGGT() at full size (img 518, patch 14, embed 1024, depth 24, 16 heads), parameters on meta",
              "parameters": {k: list(v.shape) for k, v in full.state_dict().items()}}
    (args.out / "vggt_1b_layout.json").write_text(json.dumps(layout, indent=0) + "\n")
    for name in ("vggt_tiny.safetensors", "vggt_tiny_io.pt", "vggt_1b_layout.json"):
        print(f"{args.out / name}: {(args.out / name).stat().st_size / 1e6:.3f} MB")
    print(f"reference outputs: depth [{io['depth'].min():.3g}, {io['depth'].max():.3g}], depth_conf "
          f"[{io['depth_conf'].min():.3g}, {io['depth_conf'].max():.3g}], |pose_enc| max {io['pose_enc'].abs().max():.3g}, "
          f"|world_points| max {io['world_points'].abs().max():.3g}; {len(layout['parameters'])} full-size keys, "
          f"{sum(torch.Size(s).numel() for s in layout['parameters'].values()) / 1e9:.3f} B parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
