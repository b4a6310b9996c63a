"""In-process policies: the transformers back end and the local models it runs (tiny random, SmolLM2)."""

from visioncreator.policy.local.policy import TransformersPolicy
from visioncreator.policy.local.settings import LocalPolicySettings
from visioncreator.policy.local.smollm import SMOLLM_GGUF, SMOLLM_PACKAGE, SmolLMUnavailableError, load_smollm
from visioncreator.policy.local.staging import staged_dir
from visioncreator.policy.local.tiny_lm import build_tiny_lm, corpus, corpus_tools
from visioncreator.policy.local.vlm_policy import TransformersVLMPolicy

__all__ = [
    "SMOLLM_GGUF",
    "SMOLLM_PACKAGE",
    "LocalPolicySettings",
    "SmolLMUnavailableError",
    "TransformersPolicy",
    "TransformersVLMPolicy",
    "build_tiny_lm",
    "corpus",
    "corpus_tools",
    "load_smollm",
    "staged_dir",
]
