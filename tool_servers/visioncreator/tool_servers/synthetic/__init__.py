"""The synthetic image environment, public: scenes with ground truth, checklists, the verifier, the vocabulary.

A procedural scene renderer in the spirit of VisGenEnv: a prompt is parsed into a scene, laid
out, maybe broken on purpose (faults), and drawn; the scene is the image's ground truth. Other
packages (evals, rl, the graph's expert wiring) use the world through this face:

- scenes and ground truth: :class:`SceneSpec`, :class:`Scene`, :class:`GroundTruth`, :class:`Fault`...;
- checklists and their exact verifier: :class:`CheckItem`, :func:`checklist_for_spec`, :func:`verify`,
  and the reflection oracle :func:`critique`;
- words to scenes and back: :func:`parse_prompt`, :func:`parse_edit`, :func:`describe_spec`, and the
  vocabulary (:data:`COLORS`, :data:`STYLES`, :data:`RELATIONS`...);
- the back end itself (:class:`SyntheticBackend`), the error rates of its ``inspect_image``
  (:class:`ObserverSettings`) and the tool names (:class:`ToolName`).
"""

from __future__ import annotations

from visioncreator.tool_servers.names import IMAGE_TOOLS, POLICY_TOOLS, ToolName
from visioncreator.tool_servers.scene import (
    Box,
    EditOp,
    Fault,
    FaultType,
    GroundTruth,
    ObjectSpec,
    Relation,
    RelationSpec,
    Scene,
    SceneObject,
    SceneSpec,
)
from visioncreator.tool_servers.synthetic.backend import SyntheticBackend, SyntheticSettings
from visioncreator.tool_servers.synthetic.checklist import (
    checklist_for_edit,
    checklist_for_spec,
    critique,
    scene_from_inspection,
    verify,
)
from visioncreator.tool_servers.synthetic.items import CheckItem, CheckKind, CheckResult
from visioncreator.tool_servers.synthetic.observer import ObserverSettings
from visioncreator.tool_servers.synthetic.prompt import describe_spec, parse_edit, parse_prompt, plural
from visioncreator.tool_servers.synthetic.vocab import (
    COCO_CLASSES,
    COLOR_SYNONYMS,
    COLORS,
    COUNT_WORDS,
    MAX_COUNT,
    PATTERNS,
    RELATIONS,
    STYLES,
    SYNONYMS,
)

__all__ = [
    "COCO_CLASSES",
    "COLORS",
    "COLOR_SYNONYMS",
    "COUNT_WORDS",
    "IMAGE_TOOLS",
    "MAX_COUNT",
    "PATTERNS",
    "POLICY_TOOLS",
    "RELATIONS",
    "STYLES",
    "SYNONYMS",
    "Box",
    "CheckItem",
    "CheckKind",
    "CheckResult",
    "EditOp",
    "Fault",
    "FaultType",
    "GroundTruth",
    "ObjectSpec",
    "ObserverSettings",
    "Relation",
    "RelationSpec",
    "Scene",
    "SceneObject",
    "SceneSpec",
    "SyntheticBackend",
    "SyntheticSettings",
    "ToolName",
    "checklist_for_edit",
    "checklist_for_spec",
    "critique",
    "describe_spec",
    "parse_edit",
    "parse_prompt",
    "plural",
    "scene_from_inspection",
    "verify",
]
