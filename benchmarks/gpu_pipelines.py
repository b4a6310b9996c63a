"""Random-weight pipelines for the GPU benchmark, built on the spot (nothing can be downloaded there).

Two sizes, each saved with ``save_pretrained`` and served through a registry file, exactly as real
weights would be (``visioncreator-tools --backend diffusers --registry FILE``):

- ``tiny``: the tiny back end's own pipelines and registry (:func:`build_tiny`), for a CPU run;
- ``real``: the sd-turbo architecture (Stable Diffusion 2.1 shapes): UNet block channels
  320/640/1280/1280, two layers per block, cross-attention 1024, head dims 5/10/20/20, linear
  projection; the SD VAE (128/256/512/512); a 23-layer 1024-wide CLIP text encoder (vocabulary
  49,408). The tokenizer and the scheduler are the tiny back end's (a character vocabulary padded
  to 77 tokens like CLIP's; DDIM with trailing timesteps): they cost the same per image.

Three tools, as in the tiny registry: ``text_to_image`` (``StableDiffusionPipeline``),
``reference_to_image`` (the same weights as ``StableDiffusionImg2ImgPipeline`` over the tiled
references, strength 0.6) and ``edit_image`` (``StableDiffusionInstructPix2PixPipeline``, a UNet of
the same shape with 8 input channels).
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

from visioncreator.tool_servers.diffusion import tiny

_LIMITS = """\
min_width = 256
max_width = 1024
min_height = 256
max_height = 1024
multiple_of = 8
max_steps = 1000
min_guidance = 0.0
max_guidance = 10.0"""


def build(size: str, root: Path, device: str) -> tuple[Path, dict[str, Any]]:
    """Build the pipelines of ``size`` under ``root``; return the registry file and what was built.

    Args:
        size: ``tiny`` or ``real``.
        root: Folder to save into.
        device: Where to initialise the real-size weights (random init of 2 B parameters takes
            minutes on a CPU, seconds on a GPU).

    """
    started = time.perf_counter()
    if size == "tiny":
        registry = tiny.build_tiny(root)
        info: dict[str, Any] = {"architecture": "tiny (tool_servers.diffusion.tiny)"}
    else:
        registry, info = _build_real(root, device)
    info["build_s"] = round(time.perf_counter() - started, 2)
    return registry, info


def _build_real(root: Path, device: str) -> tuple[Path, dict[str, Any]]:
    import torch

    diffusers = importlib.import_module("diffusers")
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    torch.manual_seed(0)
    # Initialise on the device (fast), then keep fp16 weights: what the server loads with --dtype float16.
    with torch.device(device):
        vae, text_encoder = _vae(diffusers), _text_encoder()
        unet, unet_edit = _unet(diffusers, 4), _unet(diffusers, 8)
    parts = {"unet": unet, "vae": vae, "text_encoder": text_encoder}
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}
    shared: dict[str, Any] = {
        "vae": vae.half(),
        "text_encoder": text_encoder.half(),
        "tokenizer": tiny._tokenizer(),
        "scheduler": tiny._scheduler(),
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }
    diffusers.StableDiffusionPipeline(unet=unet.half(), **shared).save_pretrained(root / "text")
    diffusers.StableDiffusionInstructPix2PixPipeline(unet=unet_edit.half(), **shared).save_pretrained(root / "edit")
    del parts, shared, unet, unet_edit, vae, text_encoder
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    registry = root / "registry.toml"
    tiny.write_registry(registry, root, name="sdt", limits=_LIMITS, writer="benchmarks/gpu_pipelines.py")
    info = {
        "architecture": "sd-turbo (SD 2.1 UNet, SD VAE, 23-layer CLIP-H text encoder), random weights, fp16",
        "parameters_m": {name: round(n / 1e6, 1) for name, n in counts.items()},
        "parameters_b_total": round(sum(counts.values()) / 1e9, 3),
    }
    return registry, info


def _unet(diffusers: Any, in_channels: int) -> Any:
    return diffusers.UNet2DConditionModel(
        sample_size=64,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20),
        use_linear_projection=True,
        norm_num_groups=32,
    )


def _vae(diffusers: Any) -> Any:
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        norm_num_groups=32,
        sample_size=768,
    )


def _text_encoder() -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=23,
        num_attention_heads=16,
        max_position_embeddings=77,
        hidden_act="gelu",
        projection_dim=512,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModel(config)
