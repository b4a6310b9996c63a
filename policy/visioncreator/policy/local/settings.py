"""Settings of the local transformers policy (:class:`~visioncreator.policy.local.TransformersPolicy`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LocalPolicySettings"]


class LocalPolicySettings(BaseModel):
    """How to load and sample a local model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, description="Policy name recorded in turns; default 'transformers:{dir}'.")
    device: str = Field(default="cpu", description="Torch device: 'cpu', 'cuda', 'cuda:1', 'mps'.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weights dtype; 'auto' keeps the saved one."
    )
    compute_dtype: Literal["same", "bfloat16", "float16"] = Field(
        default="same",
        description="Generate from a copy of the model's weights in this dtype, refreshed whenever they change: a "
        "float32 model training in mixed precision (from_model over a trainer's model) then samples at the lower "
        "precision's speed, at the cost of that copy's memory. 'same' samples from the weights as they are.",
    )
    temperature: float = Field(default=1.0, ge=0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int = Field(default=0, ge=0, description="Top-k sampling; 0 is off (transformers' default would be 50).")
    max_new_tokens: int = Field(default=256, ge=1, description="Most completion tokens per turn.")
    max_time_s: float | None = Field(
        default=None, gt=0, description="Wall-time bound of one generation (of a whole batch, when turns are batched)."
    )
    batch_size: int = Field(
        default=8,
        ge=1,
        description="Most sequences in one generate call: concurrent turns (and the n samples of sample()) are "
        "merged into one left-padded generate. 1 generates each turn alone, as they come.",
    )
    batch_wait_s: float = Field(
        default=0.1,
        ge=0,
        description="Longest a batch waits for companions (from its oldest turn's arrival or the last batch's end, "
        "whichever is later). It goes sooner once as many turns wait as the largest of the last 8 batches had, so a "
        "lone conversation does not wait; concurrent conversations come back from their tools at different times "
        "and wait for each other.",
    )
    prefix_cache: bool = Field(
        default=True,
        description="Keep each conversation's attention cache (its last prompt and completion) for its next "
        "turn, which then reads only its new ids, and the prefix a batch's rows share (the system prompt); "
        "dropped when the model's weights change in place. Off: each batch still reads its shared prefix once, "
        "but every turn reads its whole conversation.",
    )
    prefix_cache_mb: float = Field(
        default=1024,
        ge=0,
        description="Most memory (MiB) the kept attention caches take; the least recently used conversation goes "
        "first. SmolLM2-135M's cache takes 45 KiB a token.",
    )
    seed: int | None = Field(
        default=None,
        description="Base seed. With it or the request's run seed, each turn samples from a seed derived from "
        "both, the node and the conversation length (as the HTTP back end): reproducible per turn.",
    )
    max_prompt_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Longest prompt accepted; default the model's max_position_embeddings minus max_new_tokens.",
    )
    on_context_overflow: Literal["turn", "raise"] = Field(
        default="turn",
        description="An over-long prompt: 'turn' returns an empty turn whose parse error says so (as the HTTP "
        "back end: the graph ends the run by its format-error budget, trajectory kept); 'raise' raises "
        "PolicyContextError.",
    )
    logprobs: Literal["processed", "raw"] = Field(
        default="processed",
        description="'processed': log-softmax of the logits after temperature/top-p/top-k (the sampling "
        "distribution); 'raw': log-softmax of the model's logits.",
    )
    render_tools: bool = Field(
        default=False,
        description="Also pass request.tools to the chat template as 'tools' (a '# Tools' block in the system "
        "prompt). Off by default, as the HTTP back end's 'tags' mode: our system message already lists the tools "
        "with their schemas, and the block would double that (~2.2k more tokens for SmolLM2 with the real tools).",
    )
    node_instructions: bool = Field(
        default=True, description="Keep each node's one-line instruction in the history (see chat_messages)."
    )
    stitch: bool = Field(
        default=True, description="Token-exact multi-turn prompts: reuse the ids of turns generated here."
    )
    stitch_cache_size: int = Field(
        default=512,
        ge=0,
        description="Generated turns remembered for stitching (each holds its prompt and completion ids as a "
        "compact array: 8 bytes a token, ~64 KB for an 8k-token turn).",
    )
    flush_denormal: bool = Field(
        default=True, description="torch.set_flush_denormal(True) at load (process-wide; ~4x faster for SmolLM2)."
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="torch.set_num_threads at load (process-wide); None leaves it."
    )
