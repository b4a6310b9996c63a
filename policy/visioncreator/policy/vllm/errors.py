"""Errors of the vLLM launcher, under :class:`~visioncreator.policy.errors.PolicyError`."""

from __future__ import annotations

from visioncreator.policy.errors import PolicyError

__all__ = ["VLLMNotFoundError", "VLLMServerError", "VLLMStartError"]


class VLLMServerError(PolicyError):
    """The vLLM server could not be found, started or stopped. A retry of the same call will not help."""


class VLLMNotFoundError(VLLMServerError):
    """No interpreter with vLLM installed was found."""


class VLLMStartError(VLLMServerError):
    """The server died during start-up or did not answer in time. The message holds its log tail."""
