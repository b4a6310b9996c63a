"""The ``tiny`` back end's models: randomly initialised Stable Diffusion pipelines built from small configs.

They make noise, not pictures, but they run the real diffusers code (text encoder, UNet,
scheduler, VAE, img2img, InstructPix2Pix) in well under a second per 256x256 image on a CPU.
They are built once with a fixed seed, saved with ``save_pretrained`` under a cache directory
together with a registry file that points at them, and from then on loaded exactly like a real
model: through :func:`load_registry` and ``from_pretrained``.

Three tools, two saved pipelines:

- ``text/``: a ``StableDiffusionPipeline`` (text-to-image); the same weights also serve
  ``reference_to_image`` as a ``StableDiffusionImg2ImgPipeline`` that starts from the references
  tiled into one image (see ``image_input = "composite"`` in the registry);
- ``edit/``: a ``StableDiffusionInstructPix2PixPipeline`` whose UNet takes 8 input channels
  (the noisy latent and the source image's latent).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["TINY_VERSION", "build_tiny", "default_cache_dir", "tiny_registry_path", "write_registry"]

TINY_VERSION = 1
"""Bumped whenever the configs below change, so an old cache is not reused."""

_TOKENS = 77
_REGISTRY = """\
# Written by {writer}: random {name} pipelines.
[tools]
text_to_image = "{name}-text"
edit_image = "{name}-edit"
reference_to_image = "{name}-references"

[models.{name}-text]
pipeline = "StableDiffusionPipeline"
source = {text}
{limits}
default_steps = 4
default_guidance = 0.0

[models.{name}-references]
pipeline = "StableDiffusionImg2ImgPipeline"
source = {text}
image_input = "composite"
takes_size = false
extra = {{ strength = 0.6 }}
{limits}
min_steps = 2
default_steps = 4
default_guidance = 0.0

[models.{name}-edit]
pipeline = "StableDiffusionInstructPix2PixPipeline"
source = {edit}
image_input = "single"
takes_size = false
extra = {{ image_guidance_scale = 1.0 }}
{limits}
default_steps = 4
default_guidance = 1.0
"""
# The UNet halves the latent once and the VAE shrinks 8x: sides must be multiples of 16.
_LIMITS = """\
min_width = 64
max_width = 768
min_height = 64
max_height = 768
multiple_of = 16
max_steps = 1000
min_guidance = 0.0
max_guidance = 10.0"""


def write_registry(
    path: Path, root: Path, *, name: str = "tiny", limits: str = _LIMITS, writer: str = __name__
) -> None:
    """Write a registry whose three tools use the ``text`` and ``edit`` pipelines saved under ``root``.

    Args:
        path: The registry file to write.
        root: Folder holding ``text`` (text-to-image, image-to-image) and ``edit`` (InstructPix2Pix).
        name: Prefix of the model names (``<name>-text``, ...).
        limits: The models' size, step and guidance limits, as TOML lines.
        writer: Who wrote it (a comment on the first line).

    """
    text, edit = json.dumps(str(root / "text")), json.dumps(str(root / "edit"))
    body = _REGISTRY.format(writer=writer, name=name, text=text, edit=edit, limits=limits)
    path.write_text(body, encoding="utf-8")


def default_cache_dir() -> Path:
    """Where tiny pipelines live by default: ``visioncreator/tiny`` under ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "visioncreator" / "tiny"


def tiny_registry_path(cache_dir: Path) -> Path:
    """The registry file of the tiny pipelines under ``cache_dir`` (it exists once they are built)."""
    return cache_dir / f"tiny-v{TINY_VERSION}" / "registry.toml"


def build_tiny(cache_dir: Path) -> Path:
    """Build and save the tiny pipelines under ``cache_dir`` unless they are there already.

    Safe against concurrent builders: each builds in a private directory and renames it into
    place; the loser of the race throws its copy away.

    Returns:
        The registry file that points at the saved pipelines.

    """
    registry = tiny_registry_path(cache_dir)
    if registry.is_file():
        return registry
    target = registry.parent
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _save_pipelines(scratch)
        write_registry(scratch / "registry.toml", target)
        try:
            scratch.rename(target)
        except OSError:
            if not registry.is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return registry


def _save_pipelines(root: Path) -> None:
    import torch

    diffusers = _diffusers()
    torch.manual_seed(0)  # the same random weights on every machine
    vae, text_encoder, tokenizer, scheduler = _vae(), _text_encoder(), _tokenizer(), _scheduler()
    shared: dict[str, Any] = {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }
    diffusers.utils.logging.disable_progress_bar()
    with contextlib.suppress(ImportError):
        import transformers

        transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    diffusers.StableDiffusionPipeline(unet=_unet(4), **shared).save_pretrained(root / "text")
    diffusers.StableDiffusionInstructPix2PixPipeline(unet=_unet(8), **shared).save_pretrained(root / "edit")


def _diffusers() -> Any:
    # diffusers exports its classes through a lazy module that mypy sees as untyped dummies.
    import importlib

    return importlib.import_module("diffusers")


def _unet(in_channels: int) -> Any:
    return _diffusers().UNet2DConditionModel(
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def _vae() -> Any:
    # Four blocks: an 8x latent like real Stable Diffusion (two blocks make a 2x latent, 20-30x slower).
    return _diffusers().AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
    )


def _text_encoder() -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(_vocab()),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=_TOKENS,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        layer_norm_eps=1e-5,
    )
    return CLIPTextModel(config)


def _vocab() -> dict[str, int]:
    # Characters only, no merges: every prompt tokenises, one token per character.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in string.ascii_lowercase + string.digits + string.punctuation:
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    return vocab


def _tokenizer() -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=_vocab(), merges=[], model_max_length=_TOKENS)


def _scheduler() -> Any:
    # DDIM, not Euler: Euler's set_timesteps trips a numpy 2 DeprecationWarning (warnings are errors in tests).
    return _diffusers().DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="trailing",
    )
