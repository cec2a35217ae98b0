"""VGGT (Visual Geometry Grounded Transformer) as the geometry encoder, loading the official
VGGT-1B checkpoint from a local path.

    from vln_core.models.vggt import load_vggt
    vggt = load_vggt("/models/VGGT-1B", device="cuda:0", dtype=torch.bfloat16)
    geo = vggt.predict_geometry(frames)   # frames (N, 3, H, W) in [0, 1], oldest first, current last
    geo.depth, geo.depth_conf, geo.T_cur_cam, geo.K, geo.points_cur, geo.points_conf

* :mod:`.network`: the network (our code, the checkpoint's parameter names);
* :mod:`.convert`: VGGT's conventions -> ours, in one place;
* :mod:`.loading`: reading ``model.safetensors`` / ``.pt`` and strict key matching;
* :mod:`.api`: :func:`load_vggt`, :class:`VGGTGeometry` (``predict_geometry``) and the
  encoder the ``full`` model uses.
"""
from vln_core.models.vggt.api import (
    GeometryPrediction,
    VGGTCheckpointError,
    VGGTGeometry,
    VGGTGeometryEncoder,
    load_vggt,
    load_vggt_network,
    vggt_input_size,
)
from vln_core.models.vggt.network import VGGT, VGGT_1B, VGGTConfig, VGGTOutput

__all__ = ["VGGT", "VGGT_1B", "VGGTConfig", "VGGTOutput", "GeometryPrediction", "VGGTCheckpointError",
           "VGGTGeometry", "VGGTGeometryEncoder", "load_vggt", "load_vggt_network", "vggt_input_size"]
