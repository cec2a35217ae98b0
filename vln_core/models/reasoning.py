"""Reasoning over the instruction and the fused visual tokens.

Both reasoners take the same inputs and give the same outputs, in the fusion width ``D``::

    instruction_out, visual_out = reasoner(instruction_ids, instruction_mask, visual_tokens)
    instruction_ids (B, L) long, instruction_mask (B, L) bool, visual_tokens (B, V, D)
    -> instruction_out (B, L, D), visual_out (B, V, D)

* :class:`EmbeddedReasoner`: a small transformer encoder with its own instruction embedding;
  no download, trained from scratch.
* :class:`LLMReasoner`: a transformers decoder LLM (Qwen2, or the language model of
  Qwen2.5-VL) reading ``[instruction token embeddings, projected visual tokens]`` through
  ``inputs_embeds``; the instruction comes first so that, under causal attention, every visual
  token can read the whole instruction. Frozen, fully trainable, or LoRA adapters (peft).
"""
from __future__ import annotations

import torch
from torch import nn

from vln_core.errors import InputError
from vln_core.models.geometry_encoder import TransformerBlock

__all__ = ["EmbeddedReasoner", "LLMReasoner", "language_model_of", "LORA_TARGET_MODULES"]

#: Linear layers of Qwen2-style attention that get LoRA adapters.
LORA_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


def _check_inputs(instruction_ids: torch.Tensor, instruction_mask: torch.Tensor, visual_tokens: torch.Tensor,
                  dim: int) -> None:
    if instruction_ids.dim() != 2 or instruction_mask.shape != instruction_ids.shape:
        raise InputError(
            f"instruction_ids (B, L) and instruction_mask (B, L) must match, got "
            f"{tuple(instruction_ids.shape)} and {tuple(instruction_mask.shape)}"
        )
    if visual_tokens.dim() != 3 or visual_tokens.shape[0] != instruction_ids.shape[0] or visual_tokens.shape[-1] != dim:
        raise InputError(
            f"visual_tokens must have shape (B={instruction_ids.shape[0]}, V, {dim}), got {tuple(visual_tokens.shape)}"
        )


class EmbeddedReasoner(nn.Module):
    """Instruction embedding + small transformer encoder over ``[instruction, visual]`` tokens.

    Args:
        dim: token width (the fusion width).
        vocab_size: instruction vocabulary (the tokenizer's).
        depth, num_heads: encoder size.
        max_instruction_length: learned positions for the instruction tokens.
    """

    def __init__(self, dim: int, vocab_size: int, depth: int = 2, num_heads: int = 4,
                 max_instruction_length: int = 64) -> None:
        super().__init__()
        self.dim = dim
        self.max_instruction_length = max_instruction_length
        self.token_embed = nn.Embedding(vocab_size, dim)
        self.instruction_pos = nn.Parameter(torch.randn(max_instruction_length, dim) * 0.02)
        self.type_embed = nn.Embedding(2, dim)  # 0 instruction, 1 visual
        self.blocks = nn.ModuleList([TransformerBlock(dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, instruction_ids: torch.Tensor, instruction_mask: torch.Tensor, visual_tokens: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """See the module docstring for shapes."""
        _check_inputs(instruction_ids, instruction_mask, visual_tokens, self.dim)
        B, L = instruction_ids.shape
        if L > self.max_instruction_length:
            raise InputError(f"instruction has {L} tokens; this reasoner takes at most {self.max_instruction_length}")
        if int(instruction_ids.max()) >= self.token_embed.num_embeddings or int(instruction_ids.min()) < 0:
            raise InputError(f"instruction ids must be in [0, {self.token_embed.num_embeddings})")
        text = self.token_embed(instruction_ids) + self.instruction_pos[:L] + self.type_embed.weight[0]
        visual = visual_tokens + self.type_embed.weight[1]
        x = torch.cat([text, visual], dim=1)
        mask = torch.cat([instruction_mask.bool(), torch.ones(visual.shape[:2], dtype=torch.bool, device=x.device)], 1)
        for block in self.blocks:
            x = block(x, key_padding_mask=mask)
        x = self.norm(x)
        return x[:, :L], x[:, L:]


def language_model_of(model: nn.Module) -> nn.Module:
    """The decoder stack (takes ``inputs_embeds``, returns ``last_hidden_state``) inside a
    transformers model: ``Qwen2ForCausalLM`` -> ``.model``; ``Qwen2_5_VLForConditionalGeneration``
    -> ``.model.language_model``; ``Qwen2Model`` / ``Qwen2_5_VLTextModel`` as they are."""
    inner = model
    if hasattr(inner, "lm_head") and hasattr(inner, "model"):
        inner = inner.model
    if hasattr(inner, "language_model"):
        inner = inner.language_model
    if not hasattr(inner, "get_input_embeddings") or not hasattr(inner, "config"):
        raise InputError(f"{type(model).__name__} is not a transformers language model")
    return inner


class LLMReasoner(nn.Module):
    """A pretrained decoder LLM as the reasoner, with projectors to and from the fusion width.

    Args:
        llm: a transformers model (see :func:`language_model_of`).
        dim: fusion width ``D``.
        lora_rank: > 0 injects LoRA adapters (peft) into the attention projections.
        lora_alpha: LoRA scaling numerator.
    """

    def __init__(self, llm: nn.Module, dim: int, lora_rank: int = 0, lora_alpha: float = 16.0) -> None:
        super().__init__()
        self.dim = dim
        self.llm = language_model_of(llm)
        hidden = int(self.llm.config.hidden_size)
        self.hidden_size = hidden
        self.lora_rank = int(lora_rank)
        if self.lora_rank > 0:
            from peft import LoraConfig, inject_adapter_in_model

            lora_cfg = LoraConfig(r=self.lora_rank, lora_alpha=lora_alpha, lora_dropout=0.0,
                                  target_modules=LORA_TARGET_MODULES, bias="none")
            self.llm = inject_adapter_in_model(lora_cfg, self.llm)
        self.visual_in = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, dim))

    def base_parameters(self) -> list[nn.Parameter]:
        """The LLM's own weights (not the LoRA adapters)."""
        return [p for n, p in self.llm.named_parameters() if "lora_" not in n]

    def lora_parameters(self) -> list[nn.Parameter]:
        """The LoRA adapter weights (empty without LoRA)."""
        return [p for n, p in self.llm.named_parameters() if "lora_" in n]

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The projectors in and out of the LLM (always trained with the heatmap stage)."""
        return list(self.visual_in.parameters()) + list(self.out.parameters())

    def _llm_dtype(self) -> torch.dtype:
        return self.llm.get_input_embeddings().weight.dtype

    def forward(self, instruction_ids: torch.Tensor, instruction_mask: torch.Tensor, visual_tokens: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """See the module docstring for shapes. Inputs may live on another device; they are moved
        to the LLM's device and the outputs come back as float32 on that device."""
        _check_inputs(instruction_ids, instruction_mask, visual_tokens, self.dim)
        device = self.llm.get_input_embeddings().weight.device
        vocab = self.llm.get_input_embeddings().num_embeddings
        instruction_ids = instruction_ids.to(device)
        if int(instruction_ids.max()) >= vocab or int(instruction_ids.min()) < 0:
            raise InputError(f"instruction ids must be in [0, {vocab}) for this LLM")
        instruction_mask = instruction_mask.to(device).bool()
        B, L = instruction_ids.shape
        dtype = self._llm_dtype()
        text = self.llm.get_input_embeddings()(instruction_ids)
        visual = self.visual_in(visual_tokens.to(device)).to(dtype)
        embeds = torch.cat([text.to(dtype), visual], dim=1)
        mask = torch.cat([instruction_mask, torch.ones(visual.shape[:2], dtype=torch.bool, device=device)], dim=1)
        position_ids = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
        hidden = self.llm(inputs_embeds=embeds, attention_mask=mask.long(), position_ids=position_ids,
                          use_cache=False).last_hidden_state
        out = self.out(hidden.float())
        return out[:, :L], out[:, L:]

