"""GRPO for vision-language policies: the images seen mid-trajectory reach the training forward pass.

Why a subclass is needed (TRL 1.16, ``trl/trainer/grpo_trainer.py``; line numbers of that release):

- ``_generate`` (l. 2193) calls ``rollout_func(prompts, trainer)`` (l. 2210) and sets ``images = None``
  on that path (l. 2218). Every key a rollout returns besides ``prompt_ids``, ``completion_ids``,
  ``logprobs`` and ``env_mask`` becomes an *extra field* (l. 2216), which goes to the reward functions
  only (merged into the inputs at l. 2741-2747), never to the model.
- ``_generate_and_score_completions`` (l. 2324) then restores the *dataset's* images (``images`` /
  ``image`` columns, l. 2400-2408; restored at l. 2437-2438) and builds the model's image inputs with
  ``self.processing_class(images=images, text=prompts_text)`` (l. 2529), where ``prompts_text`` is the
  chat template applied to the dataset prompt messages (l. 2523), not to the rollout's token ids. These
  ``forward_kwargs`` (``pixel_values``, ``pixel_attention_mask``, ``image_grid_thw``, ...) and
  ``num_images`` feed the old and reference log-probabilities (``_get_per_token_logps_and_entropies``,
  l. 2646 and 2712/2728) and are stored in the batch (l. 2914-2931), from which ``_compute_loss``
  (l. 3020) passes them to ``_get_per_token_logps_and_entropies`` (l. 1419) for the current
  log-probabilities. So on the ``rollout_func`` path an image that a tool returned mid-trajectory
  cannot reach any of the three forward passes: its placeholder tokens sit in ``completion_ids``, but
  no pixel values exist for them, and the model embeds the placeholders as ordinary tokens
  (``tests/rl/test_vlm_images.py``: with stock TRL, two different mid-trajectory images give identical
  old, reference and current log-probabilities and an identical loss).
- Only the ``tools=`` loop (``_tool_call_loop``, l. 1945; images collected at l. 2020-2024, merged at
  l. 2263-2268, processed at l. 2513-2517) and ``environment_factory`` feed tool images to the model,
  because there TRL itself renders the observation and knows where its image tokens are.

Two further TRL details matter for the Idefics3/SmolVLM layout, where ``pixel_values`` is padded per
sample to ``(batch, max_images, 3, H, W)``: ``_get_per_token_logps_and_entropies`` slices it by image
count whenever ``pixel_values.size(0) == sum(num_images)`` (l. 1477), and ``split_pixel_values_by_grid``
(``trl/trainer/utils.py`` l. 1220, used by ``_prepare_inputs`` l. 1522) splits it by image count under
the same coincidence; both misalign samples when the counts are uneven (e.g. ``[2, 0]``).

The fix, :class:`TrajectoryImagesGRPOTrainer`, is three thin overrides around TRL's own code:

1. ``_generate``: a rollout may return :data:`TRAJECTORY_IMAGES`, per sample the list of images the
   policy saw, in the order of their placeholders in ``prompt_ids + completion_ids`` (input images and
   tool outputs alike). They are encoded by the processor's image processor and checked against the
   placeholder count; the key also stays an extra field, so rewards can read it.
2. ``_get_per_token_logps_and_entropies``: while a batch is scored, the trajectory's pixel values
   replace the dataset's for the old and reference log-probabilities; per-sample pixel values (no
   ``num_images``) are sliced per sample, chunk by chunk, and a chunk without images gets none.
3. ``_generate_and_score_completions``: the trajectory's pixel values go into the batch instead of the
   dataset's, without ``num_images`` (so ``_prepare_inputs`` shuffles them per sample, untouched by the
   coincidence above), and ``_compute_loss`` passes them to the current log-probabilities.

Supported: processors whose image processor pads ``pixel_values`` per sample (Idefics3, SmolVLM);
others are refused with :class:`TrajectoryImagesError`. Without the key (every text policy) all three
overrides fall through to TRL's own code. A batch with the key logs ``rollouts/images``, the number of
images its rollouts showed the policy. :class:`~visioncreator.rl.train.trainer.GraphGRPOTrainer`, the
trainer ``train_grpo`` uses, inherits this class; :class:`~visioncreator.rl.train.rollout.GraphRollout` returns
the key when the agent shows the policy images and a processor is given. Needs the ``rl`` extra (torch, trl).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from trl.trainer.grpo_trainer import GRPOTrainer

from visioncreator.rl.errors import RLError

__all__ = ["TRAJECTORY_IMAGES", "TrajectoryImagesError", "TrajectoryImagesGRPOTrainer"]

TRAJECTORY_IMAGES = "trajectory_images"
"""The ``rollout_func`` output key: per sample, the PIL images the policy saw, in placeholder order."""

_IMAGE_KEYS = (
    "pixel_values",
    "pixel_attention_mask",
    "image_grid_thw",
    "image_sizes",
    "spatial_shapes",
    "image_position_ids",
    "num_images",
    "num_tiles",
)


class TrajectoryImagesError(RLError, ValueError):
    """A rollout's trajectory images that cannot be matched to its image placeholders (the message says how)."""


def _real_image_counts(pixel_values: torch.Tensor) -> list[int]:
    # The model's own rule (Idefics3.get_image_features): an all-zero image is padding.
    counts: list[int] = (pixel_values.flatten(2) != 0).any(-1).sum(1).tolist()
    return counts


class TrajectoryImagesGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose ``rollout_func`` may return the images each trajectory showed the policy.

    Return them under :data:`TRAJECTORY_IMAGES` next to ``prompt_ids``/``completion_ids``: one list per
    sample (``None`` or ``[]`` for none), one image per image placeholder, in order. The token ids
    must hold each image already expanded by the same processor (e.g. the ids of
    ``processor(text=..., images=...)`` for the observation that showed it). The old, reference and
    current log-probabilities then see those images; without the key the trainer is TRL's own.
    """

    _trajectory_inputs: dict[str, torch.Tensor] | None = None
    """The encoded trajectory images of the batch being scored (set by ``_generate``)."""
    _shown_images: int | None = None
    """How many trajectory images the batch being scored holds (logged as ``rollouts/images``)."""

    def _generate(self, prompts: list[Any]) -> Any:
        result = super()._generate(prompts)
        prompt_ids, completion_ids, extra_fields = result[0], result[1], result[5]
        images = extra_fields.get(TRAJECTORY_IMAGES)
        if images is not None:
            self._trajectory_inputs = self._encode_trajectory_images(images, prompt_ids, completion_ids)
            self._shown_images = sum(len(entry or ()) for entry in images)
        return result

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._trajectory_inputs = None
        self._shown_images = None
        try:
            output = super()._generate_and_score_completions(inputs)
            trajectory = self._trajectory_inputs
        finally:
            self._trajectory_inputs = None
        if trajectory is not None:
            for key in _IMAGE_KEYS:
                output.pop(key, None)
            output.update(trajectory)
        if self._shown_images is not None:
            mode = "train" if self.model is not None and self.model.training else "eval"
            self._metrics[mode]["rollouts/images"].append(float(self._shown_images))
        return output

    def _get_per_token_logps_and_entropies(  # TRL's signature, spelled out
        self,
        model: Any,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        logits_to_keep: int,
        batch_size: int | None = None,
        compute_entropy: bool = False,
        compute_aux_loss: bool = False,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        num_images: list[int] | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        num_tiles: list[int] | None = None,
        image_sizes: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        image_position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        extra: dict[str, Any] = {
            "pixel_values": pixel_values,
            "image_grid_thw": image_grid_thw,
            "num_images": num_images,
            "pixel_attention_mask": pixel_attention_mask,
            "spatial_shapes": spatial_shapes,
            "num_tiles": num_tiles,
            "image_sizes": image_sizes,
            "token_type_ids": token_type_ids,
            "mm_token_type_ids": mm_token_type_ids,
            "image_position_ids": image_position_ids,
        }
        if self._trajectory_inputs is not None:  # old/reference log-probs of the batch being scored
            extra = {key: None if key in _IMAGE_KEYS else value for key, value in extra.items()}
            extra.update(self._trajectory_inputs)
        flags = {"compute_entropy": compute_entropy, "compute_aux_loss": compute_aux_loss}
        if extra["pixel_values"] is None or extra["num_images"] is not None:
            return super()._get_per_token_logps_and_entropies(  # type: ignore[no-any-return]
                model, input_ids, attention_mask, logits_to_keep, batch_size, **flags, **extra
            )
        # Trajectory images: pixel values padded per sample. Slice them per chunk here, so that TRL's
        # image-count slicing only ever sees a whole chunk.
        tensors = {key: value for key, value in extra.items() if isinstance(value, torch.Tensor)}
        size = batch_size or input_ids.size(0)
        parts = []
        for start in range(0, input_ids.size(0), size):
            end = min(start + size, input_ids.size(0))
            chunk: dict[str, Any] = {key: value[start:end] for key, value in tensors.items()}
            counts = _real_image_counts(chunk["pixel_values"])
            if sum(counts):
                chunk["num_images"] = counts
            else:  # no images in this chunk: the vision tower gets nothing
                chunk = {key: value for key, value in chunk.items() if key not in _IMAGE_KEYS}
            parts.append(
                super()._get_per_token_logps_and_entropies(
                    model,
                    input_ids[start:end],
                    attention_mask[start:end],
                    logits_to_keep,
                    end - start,
                    **flags,
                    **chunk,
                )
            )
        logps = torch.cat([part[0] for part in parts], dim=0)
        entropies = torch.cat([part[1] for part in parts], dim=0) if compute_entropy else None
        aux_loss = torch.stack([part[2] for part in parts]).mean() if compute_aux_loss else None
        return logps, entropies, aux_loss

    def _encode_trajectory_images(
        self, images: Any, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]
    ) -> dict[str, torch.Tensor] | None:
        """Encode per-sample trajectory images and check them against the image placeholders in the ids."""
        from PIL import Image

        if not isinstance(images, list) or len(images) != len(completion_ids):
            n = len(images) if isinstance(images, list) else type(images).__name__
            raise TrajectoryImagesError(
                f"rollout_func's {TRAJECTORY_IMAGES!r} must be a list with one entry per sample "
                f"({len(completion_ids)}), got {n}"
            )
        per_sample: list[list[Any]] = []
        for i, entry in enumerate(images):
            entry = [] if entry is None else entry
            if not isinstance(entry, (list, tuple)) or not all(isinstance(im, Image.Image) for im in entry):
                raise TrajectoryImagesError(
                    f"{TRAJECTORY_IMAGES!r}[{i}] must be None or a list of PIL images, got {entry!r:.80}"
                )
            per_sample.append(list(entry))
        image_token_id = getattr(self.processing_class, "image_token_id", None)
        if image_token_id is None:
            raise TrajectoryImagesError(
                f"{type(self.processing_class).__name__} has no image_token_id: trajectory images need a VLM processor"
            )
        n_tokens = [
            list(p).count(image_token_id) + list(c).count(image_token_id)
            for p, c in zip(prompt_ids, completion_ids, strict=True)
        ]
        if not any(per_sample):
            _check_counts(n_tokens, [0] * len(per_sample), None)
            return None
        image_processor = self.processing_class.image_processor  # type: ignore[union-attr]
        encoded = image_processor(images=per_sample, return_tensors="pt")
        pixel_values = encoded["pixel_values"]
        if pixel_values.ndim != 5:
            raise TrajectoryImagesError(
                f"{type(image_processor).__name__} gives pixel_values of shape {tuple(pixel_values.shape)}; "
                "trajectory images need an image processor that pads them per sample (Idefics3, SmolVLM)"
            )
        _check_counts(n_tokens, _real_image_counts(pixel_values), getattr(self.processing_class, "image_seq_len", None))
        device = self.accelerator.device
        keys = ("pixel_values", "pixel_attention_mask")
        return {key: encoded[key].to(device) for key in keys if key in encoded}


def _check_counts(n_tokens: list[int], n_tiles: list[int], tokens_per_tile: int | None) -> None:
    for i, (tokens, tiles) in enumerate(zip(n_tokens, n_tiles, strict=True)):
        expected = tiles * tokens_per_tile if tokens_per_tile is not None else None
        if (expected is not None and tokens != expected) or (expected is None and bool(tokens) != bool(tiles)):
            raise TrajectoryImagesError(
                f"sample {i}: {tokens} image placeholder tokens in prompt_ids + completion_ids, but its "
                f"{TRAJECTORY_IMAGES!r} give {tiles} image tiles"
                + (f" x {tokens_per_tile} tokens each" if tokens_per_tile is not None else "")
            )
