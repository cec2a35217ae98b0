"""Named model configurations, timm style: ``register_model`` / ``build_model`` / ``list_models``.

* ``embedded``: heatmaps from predicted geometry (:mod:`vln_core.models.reprojection_model`):
  a per-frame CNN predicts depth, a relative-pose head predicts camera motion when no poses are
  given, and the ground truth's own reprojection turns them into heatmaps; CPU real-time, no
  download. Trained weights ship in ``models/embedded/checkpoint.pt``.
* ``small``: the two-stage pipeline of ``base`` / ``full`` with our own small parts (geometry ViT,
  semantic ViT, small transformer reasoner, hashed-word tokenizer), no pretrained weights: CPU
  tests and experiments (untrained).
* ``base``: our geometry ViT, DINOv3 ViT-S/B from ``model.dinov3_path`` + a Qwen2-0.5B-class LLM
  from ``model.llm_path`` (tokenizer from the same path).
* ``full``: the design's pipeline: VGGT-1B (``model.vggt_path``) on all N_m frames, keyframes
  from its point map and confidence, DINOv3 ViT-L on the keyframes, the language model of
  Qwen2.5-VL (3B/7B); VGGT, DINOv3 and the LLM take GPUs 0, 1, 2 (as many as there are).

``small``, ``base`` and ``full`` are :class:`~vln_core.models.spatial_model.VLNSpatialModel`: a
geometry stage (depth and poses of all N_m frames) whose keyframe heatmaps come from the one
reprojection, and a reasoning stage for the goal heatmap and waypoints. Pretrained parts load
only from local paths. Two hooks avoid them:

* ``build_model(cfg, semantic_backbone=..., llm=..., tokenizer=...)`` takes ready modules (the
  tests pass ``DINOv3ViTModel`` / ``Qwen2Model`` built from tiny configs);
* ``build_model(cfg, arch_overrides={...})`` shrinks our own parts (tiny test models);
* ``build_model(cfg, random_init=True)`` builds the real architectures with random weights, for
  parameter counting and timing only (``benchmarks/model_size.py --random-init``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from vln_core.config import ConfigError, VLNConfig
from vln_core.models.reasoning import EmbeddedReasoner, LLMReasoner
from vln_core.models.semantic_encoder import SmallViT
from vln_core.models.spatial_model import ModelArchitecture, VLNSpatialModel, resolve_device
from vln_core.models.placement import llm_load_kwargs
from vln_core.models.tokenizer import HashedWordTokenizer, HFTokenizerAdapter
from vln_core.models.vggt.network import VGGT_1B, VGGTConfig

__all__ = ["register_model", "build_model", "list_models", "model_spec", "ModelSpec"]


@dataclass
class ModelSpec:
    """A registered configuration: our own sizes plus the pretrained architectures it expects.

    ``dinov3_config`` / ``llm_config`` are the transformers config fields of the expected
    checkpoints (used by ``random_init``); ``llm_kind`` is ``"qwen2"`` or ``"qwen2_5_vl"``.
    """

    name: str
    arch: ModelArchitecture
    dinov3_config: dict[str, Any] | None = None
    llm_config: dict[str, Any] | None = None
    llm_kind: str = "qwen2"
    vggt: VGGTConfig | None = None  # set: VGGT (from model.vggt_path) is the geometry encoder
    description: str = ""
    kind: str = "tokens"  # "tokens": VLNSpatialModel; "reprojection": ReprojectionHeatmapModel


_REGISTRY: dict[str, Callable[[], ModelSpec]] = {}


def register_model(name: str) -> Callable[[Callable[[], ModelSpec]], Callable[[], ModelSpec]]:
    """Decorator registering a function that returns a :class:`ModelSpec` under ``name``."""

    def wrap(fn: Callable[[], ModelSpec]) -> Callable[[], ModelSpec]:
        if name in _REGISTRY:
            raise ValueError(f"model configuration {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    """Names of the registered configurations, sorted."""
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered under ``name``."""
    if name not in _REGISTRY:
        raise ConfigError(f"model.name: unknown model configuration {name!r}; registered: {list_models()}")
    return _REGISTRY[name]()


# --------------------------------------------------------------------------------------------
# Registered configurations
# --------------------------------------------------------------------------------------------


@register_model("embedded")
def _embedded() -> ModelSpec:
    return ModelSpec(
        name="embedded",
        arch=ModelArchitecture(vocab_size=4096),
        kind="reprojection",
        description="heatmaps from predicted geometry: per-frame CNN depth + relative-pose head, reprojected "
                    "by the ground truth's own code; CPU real-time, no download",
    )


@register_model("small")
def _small() -> ModelSpec:
    return ModelSpec(
        name="small",
        arch=ModelArchitecture(
            geometry_patch_size=14, geometry_dim=128, geometry_depth=3, geometry_heads=4, geometry_registers=2,
            semantic="small_vit", semantic_patch_size=16, semantic_dim=128, semantic_depth=3, semantic_heads=4,
            fusion_dim=128, reasoner="embedded", reasoning_depth=2, reasoning_heads=4, reasoning_pool=2,
            decoder_heads=4, decoder_layers=2, waypoint_hidden=256, vocab_size=4096,
        ),
        description="the base/full pipeline with our own small parts and no pretrained weights: geometry ViT "
                    "-> reprojected heatmaps; small ViT + fusion + small reasoner -> goal and waypoints (untrained)",
    )


_QWEN2_0_5B = dict(
    vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
    num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=True,
)
_QWEN2_5_VL_3B_TEXT = dict(
    vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
    num_key_value_heads=2, max_position_embeddings=128000, rope_theta=1000000.0,
)
_DINOV3_VITS16 = dict(
    patch_size=16, hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6,
    num_register_tokens=4,
)
_DINOV3_VITL16 = dict(
    patch_size=16, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
    num_register_tokens=4,
)


@register_model("base")
def _base() -> ModelSpec:
    return ModelSpec(
        name="base",
        arch=ModelArchitecture(
            geometry_patch_size=14, geometry_dim=256, geometry_depth=6, geometry_heads=8, geometry_registers=4,
            semantic="dinov3", fusion_dim=256, reasoner="llm", reasoning_pool=2,
            decoder_heads=8, decoder_layers=2, waypoint_hidden=512,
        ),
        dinov3_config=_DINOV3_VITS16,
        llm_config=_QWEN2_0_5B,
        llm_kind="qwen2",
        description="DINOv3 ViT-S/B (model.dinov3_path) + Qwen2-0.5B-class LLM (model.llm_path)",
    )


@register_model("full")
def _full() -> ModelSpec:
    return ModelSpec(
        name="full",
        arch=ModelArchitecture(
            # geometry: VGGT-1B; its patch tokens are 2 x 1024 wide (depth/heads/registers are VGGT's own)
            geometry_patch_size=14, geometry_dim=2048, geometry_depth=24, geometry_heads=16, geometry_registers=4,
            semantic="dinov3", fusion_dim=512, reasoner="llm", reasoning_pool=2,
            decoder_heads=8, decoder_layers=3, waypoint_hidden=512,
            device_indices={"geometry": 0, "semantic": 1, "llm": 2},
        ),
        dinov3_config=_DINOV3_VITL16,
        llm_config=_QWEN2_5_VL_3B_TEXT,
        llm_kind="qwen2_5_vl",
        vggt=VGGT_1B,
        description="VGGT-1B (model.vggt_path) + DINOv3 ViT-L (model.dinov3_path) + Qwen2.5-VL-3B/7B language "
                    "model (model.llm_path)",
    )


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _require_path(value: str, key: str, name: str, what: str) -> Path:
    if not value:
        raise ConfigError(
            f"model '{name}' needs a local {what} checkpoint: set {key}=/path/to/checkpoint "
            "(nothing is downloaded), or use model.name=embedded"
        )
    path = Path(value).expanduser()
    if not path.exists():
        raise ConfigError(f"{key}={value!r}: no such file or directory")
    return path


def _load_semantic(cfg: VLNConfig, spec: ModelSpec, random_init: bool) -> nn.Module:
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    if random_init:
        return DINOv3ViTModel(DINOv3ViTConfig(**_random_init_fields(cfg, "dinov3", spec.dinov3_config)))
    path = _require_path(cfg.model.dinov3_path, "model.dinov3_path", spec.name, "DINOv3")
    return DINOv3ViTModel.from_pretrained(str(path))


def _load_llm(cfg: VLNConfig, spec: ModelSpec, random_init: bool) -> tuple[nn.Module, Any]:
    """``(llm, tokenizer or None)``."""
    if random_init:
        fields = _random_init_fields(cfg, "llm", spec.llm_config)
        if spec.llm_kind == "qwen2_5_vl":
            from transformers import Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

            return Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(**fields)), None
        from transformers import Qwen2Config, Qwen2Model

        return Qwen2Model(Qwen2Config(**fields)), None
    from transformers import AutoConfig, AutoTokenizer

    path = _require_path(cfg.model.llm_path, "model.llm_path", spec.name, "LLM (Qwen2 / Qwen2.5-VL)")
    model_type = AutoConfig.from_pretrained(str(path)).model_type
    if model_type in ("qwen2_5_vl", "qwen2_vl"):
        from transformers import Qwen2_5_VLForConditionalGeneration

        llm = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(path), **_llm_kwargs(cfg, spec))
    elif model_type == "qwen2":
        from transformers import Qwen2Model

        llm = Qwen2Model.from_pretrained(str(path), **_llm_kwargs(cfg, spec))
    else:
        raise ConfigError(f"model.llm_path={str(path)!r} holds a {model_type!r} model; expected qwen2 or qwen2_5_vl")
    return llm, HFTokenizerAdapter(AutoTokenizer.from_pretrained(str(path)))


def _random_init_fields(cfg: VLNConfig, part: str, expected: dict[str, Any] | None) -> dict[str, Any]:
    """The config fields of a randomly initialised pretrained part: the expected checkpoint's,
    with ``model.random_init_overrides[part]`` on top (tiny plumbing configs)."""
    return {**(expected or {}), **cfg.model.random_init_overrides.get(part, {})}


def _llm_kwargs(cfg: VLNConfig, spec: ModelSpec) -> dict[str, Any]:
    """flash-attention 2 when installed and the LLM runs on a GPU in bf16/fp16, else SDPA."""
    device = resolve_device(cfg.model.llm_device, spec.arch.device_indices.get("llm", 0))
    return llm_load_kwargs(cfg.model.dtype, device)


def _load_vggt(cfg: VLNConfig, spec: ModelSpec, network: nn.Module | None, random_init: bool) -> nn.Module:
    """VGGT wrapped as the geometry stage: a given network, a random one, or ``model.vggt_path``."""
    from vln_core.models.vggt import VGGT, VGGTGeometryEncoder, load_vggt_network

    if network is None:
        if random_init:
            network = VGGT(VGGTConfig.from_dict(_random_init_fields(cfg, "vggt", spec.vggt.to_dict())))
        else:
            path = _require_path(cfg.model.vggt_path, "model.vggt_path", spec.name, "VGGT-1B (model.safetensors)")
            network = load_vggt_network(str(path), spec.vggt)
    return VGGTGeometryEncoder(network)


def build_model(cfg: VLNConfig, *, semantic_backbone: nn.Module | None = None, llm: nn.Module | None = None,
                tokenizer: Any | None = None, random_init: bool = False,
                arch_overrides: dict[str, Any] | None = None,
                geometry_backbone: nn.Module | None = None) -> VLNSpatialModel:
    """Build the configuration ``cfg.model.name`` for ``cfg.video`` sizes.

    Args:
        cfg: root config.
        semantic_backbone: a ready ``DINOv3ViTModel`` (base/full) instead of loading
            ``model.dinov3_path`` (test hook; ignored by ``embedded``).
        llm: a ready transformers LLM (``Qwen2Model``, ``Qwen2ForCausalLM``, Qwen2.5-VL) instead
            of loading ``model.llm_path`` (test hook; ignored by ``embedded``).
        tokenizer: the instruction tokenizer; default: the embedded hashed-word tokenizer, the
            checkpoint's tokenizer for loaded LLMs, or a hashed-word tokenizer over the LLM's
            vocabulary for ``llm=`` / ``random_init`` models.
        random_init: build the pretrained parts' architectures with random weights (parameter
            counting and timing only; the result knows nothing).
        arch_overrides: replace fields of the configuration's :class:`ModelArchitecture`
            (e.g. ``{"geometry_dim": 32}`` for tiny test models), on top of ``model.arch_overrides``.
        geometry_backbone: a ready :class:`~vln_core.models.vggt.VGGT` for configurations with
            VGGT geometry (``full``) instead of loading ``model.vggt_path`` (test hook).

    Raises:
        ConfigError: unknown name, or base/full without the needed local path (the message
            names the key to set).
    """
    spec = model_spec(cfg.model.name)
    arch = copy.deepcopy(spec.arch)
    arch_overrides = {**cfg.model.arch_overrides, **(arch_overrides or {})}
    for key, value in arch_overrides.items() if spec.kind != "reprojection" else ():
        if not hasattr(arch, key):
            raise ConfigError(f"arch_overrides: ModelArchitecture has no field {key!r}")
        setattr(arch, key, value)
    if spec.kind == "reprojection":
        from vln_core.models.reprojection_model import ReprojectionArchitecture, ReprojectionHeatmapModel

        rarch = ReprojectionArchitecture(vocab_size=arch.vocab_size)
        for key, value in (arch_overrides or {}).items():
            if not hasattr(rarch, key):
                raise ConfigError(f"arch_overrides: ReprojectionArchitecture has no field {key!r}")
            setattr(rarch, key, value)
        model = ReprojectionHeatmapModel(cfg, rarch, tokenizer or HashedWordTokenizer(rarch.vocab_size))
        model.trainable_parameters(cfg.training.stage)
        return model
    if arch.semantic == "small_vit":
        semantic = SmallViT(tuple(cfg.video.frame_size), arch.semantic_patch_size, arch.semantic_dim,
                            arch.semantic_depth, arch.semantic_heads)
        pretrained = False
    else:
        semantic = semantic_backbone if semantic_backbone is not None else _load_semantic(cfg, spec, random_init)
        pretrained = True
    if arch.reasoner == "embedded":
        tokenizer = tokenizer or HashedWordTokenizer(arch.vocab_size)
        reasoner: nn.Module = EmbeddedReasoner(arch.fusion_dim, tokenizer.vocab_size, arch.reasoning_depth,
                                               arch.reasoning_heads, cfg.model.max_instruction_length)
    else:
        loaded_tokenizer = None
        if llm is None:
            llm, loaded_tokenizer = _load_llm(cfg, spec, random_init)
        reasoner = LLMReasoner(llm, arch.fusion_dim, cfg.model.lora_rank, cfg.model.lora_alpha)
        if tokenizer is None:
            tokenizer = loaded_tokenizer or HashedWordTokenizer(int(reasoner.llm.config.vocab_size))
    geometry = None
    if spec.vggt is not None:  # VGGT is the geometry encoder; fusion takes its token width
        geometry = _load_vggt(cfg, spec, geometry_backbone, random_init)
        arch.geometry_dim = geometry.dim
    model = VLNSpatialModel(cfg, arch, semantic, pretrained, reasoner, tokenizer, geometry=geometry)
    model.trainable_parameters(cfg.training.stage)
    return model
