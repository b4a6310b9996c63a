"""The ``synthetic`` image back end: parse, lay out, maybe break on purpose, draw.

Every image it makes carries its exact ground truth (the scene, what was asked, the faults
injected), so verification needs no vision model. Inspection reports the scene through an
observer that can be wrong (:mod:`observer`), as real perception is.

Common random numbers: whether a call gets an injected fault is drawn from the tool seed
salt, the call's seed and the tool alone, not from the prompt, so the members of a GRPO group
that share tool seeds meet the same faults even where their prompts differ; which fault, and
its details, still come from the prompt's own draw.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Final

import anyio

from visioncreator.tool_servers.backend import Generated, SourceImage
from visioncreator.tool_servers.detectors import inspect_real
from visioncreator.tool_servers.errors import ToolInputError
from visioncreator.tool_servers.names import ToolName
from visioncreator.tool_servers.scene import (
    EditOp,
    Fault,
    FaultType,
    GroundTruth,
    ObjectSpec,
    RelationSpec,
    Scene,
    SceneObject,
    SceneSpec,
)
from visioncreator.tool_servers.schemas import (
    Answer,
    EditImageInput,
    InspectImageInput,
    InspectResult,
    ReferenceToImageInput,
    TextToImageInput,
)
from visioncreator.tool_servers.synthetic.edit import apply_edit
from visioncreator.tool_servers.synthetic.faults import ALL_FAULTS, inject
from visioncreator.tool_servers.synthetic.layout import layout
from visioncreator.tool_servers.synthetic.observer import ObserverSettings, observe
from visioncreator.tool_servers.synthetic.prompt import parse_edit, parse_prompt
from visioncreator.tool_servers.synthetic.render import draw
from visioncreator.tool_servers.synthetic.vocab import MAX_COUNT

__all__ = ["UPLOADED_BACKGROUND", "SyntheticBackend", "SyntheticSettings", "stable_rng"]

_NOT_UNDERSTOOD = (
    "the synthetic back end cannot apply {instruction!r}: it understands adding, removing, recolouring "
    "and moving objects of the 80 COCO kinds ('make the car blue', 'add two cats left of the dog', 'remove the "
    "bench'), a style ('turn it into a watercolor') and quoted text ('change the text to \"OPEN\"'); rephrase "
    "the change as one of those"
)
UPLOADED_BACKGROUND: Final[str] = "unknown"
"""Background name of a scene drawn over an uploaded image, whose content the back end does not know."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SyntheticSettings:
    """Settings of the synthetic back end."""

    fault_rate: float = 0.0
    """Probability, 0 to 1, that an image-producing call injects one fault."""

    fault_types: tuple[FaultType, ...] = ALL_FAULTS
    """Fault types that may be injected; a call only gets one that applies to its request."""

    tool_seed: int = 0
    """Server-side seed mixed into every layout, fault and observation draw, so tool randomness can vary
    while the caller's seeds stay fixed. 0 leaves the draws exactly as the call's own seed makes them."""

    observer: ObserverSettings = field(default_factory=ObserverSettings)
    """Error rates of ``inspect_image`` (missed objects, count errors, colour confusions, OCR errors);
    ``ObserverSettings.exact()`` reports the ground truth. Stored ground truth is exact either way."""

    def __post_init__(self) -> None:
        if not isinstance(self.observer, ObserverSettings):
            raise TypeError(f"observer must be ObserverSettings, got {type(self.observer).__name__}")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be within [0, 1], got {self.fault_rate}")
        unknown = set(self.fault_types) - set(ALL_FAULTS)
        if unknown:
            raise ValueError(f"unknown fault types: {sorted(unknown)}")


def stable_rng(*parts: object) -> random.Random:
    """A random generator seeded from ``parts`` by SHA-256 (the built-in ``hash`` is salted per process)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class SyntheticBackend:
    """Procedural images with exact ground truth and optional injected faults.

    Deterministic: the same arguments (seed included) give the same pixels and truth.
    The work is pure CPU and takes milliseconds, so the methods do it inline.
    """

    name: str = "synthetic"

    def __init__(self, settings: SyntheticSettings | None = None) -> None:
        self.settings = settings or SyntheticSettings()
        # Prepended to every draw's seed parts; empty for tool_seed 0 so outputs stay as they were.
        self._salt: tuple[object, ...] = ("tool_seed", self.settings.tool_seed) if self.settings.tool_seed else ()

    async def text_to_image(self, args: TextToImageInput) -> Generated:
        """Draw the scene the prompt describes."""
        seed = args.seed or 0
        spec = parse_prompt(args.prompt)
        rng = stable_rng(*self._salt, seed, ToolName.TEXT_TO_IMAGE, args.prompt)
        scene = layout(spec, args.width, args.height, rng)
        scene, faults = self._inject(scene, spec, rng, seed, ToolName.TEXT_TO_IMAGE)
        truth = GroundTruth(
            scene=scene, requested=spec, faults=faults, tool=ToolName.TEXT_TO_IMAGE, prompt=args.prompt, seed=seed
        )
        return Generated(image=draw(scene), seed=seed, truth=truth)

    async def edit_image(self, args: EditImageInput, source: SourceImage) -> Generated:
        """Apply the instruction to the source's scene; an uploaded image is drawn over instead."""
        seed = args.seed or 0
        ops = parse_edit(args.instruction)
        if not ops:
            raise ToolInputError(_NOT_UNDERSTOOD.format(instruction=args.instruction[:200]))
        rng = stable_rng(*self._salt, seed, ToolName.EDIT_IMAGE, args.instruction, source.handle)
        width, height = source.image.size
        if source.truth is None:
            base_scene = Scene(width=width, height=height, background=UPLOADED_BACKGROUND)
        else:
            base_scene = source.truth.scene
        scene = apply_edit(base_scene, ops, rng)
        spec = _edit_spec(ops, base_scene, scene)
        named = {op.kind for op in ops if op.kind is not None}
        preserved = tuple(o for o in base_scene.objects if o.kind not in named)
        refs = (base_scene.model_copy(update={"objects": preserved}),) if preserved else ()
        added = {op.kind for op in ops if op.op == "add" and op.kind is not None}
        scene, faults = self._inject(scene, spec, rng, seed, ToolName.EDIT_IMAGE, refs, counted=added)
        # Over an uploaded image only the pixels know what was there: keep drawing over them.
        base = source.image if base_scene.background == UPLOADED_BACKGROUND else None
        truth = GroundTruth(
            scene=scene,
            requested=spec,
            faults=faults,
            tool=ToolName.EDIT_IMAGE,
            prompt=args.instruction,
            seed=seed,
            sources=(source.handle,),
        )
        # An edit of things the image lacks ("remove the cat" with no cat) changes nothing: said, not hidden.
        changed = scene != base_scene
        return Generated(image=draw(scene, base=base), seed=seed, truth=truth, changed=changed)

    async def reference_to_image(self, args: ReferenceToImageInput, references: list[SourceImage]) -> Generated:
        """Draw the prompt's scene, giving each kind seen in a reference that reference's look."""
        seed = args.seed or 0
        spec = parse_prompt(args.prompt)
        rng = stable_rng(*self._salt, seed, ToolName.REFERENCE_TO_IMAGE, args.prompt, *(r.handle for r in references))
        ref_scenes = [r.truth.scene for r in references if r.truth is not None]
        identities: dict[str, SceneObject] = {}
        for ref in ref_scenes:
            for obj in ref.objects:
                identities.setdefault(obj.kind, obj)
        scene = layout(spec, args.width, args.height, rng, identities)
        scene, faults = self._inject(scene, spec, rng, seed, ToolName.REFERENCE_TO_IMAGE, ref_scenes)
        truth = GroundTruth(
            scene=scene,
            requested=spec,
            faults=faults,
            tool=ToolName.REFERENCE_TO_IMAGE,
            prompt=args.prompt,
            seed=seed,
            sources=tuple(r.handle for r in references),
        )
        return Generated(image=draw(scene), seed=seed, truth=truth)

    async def inspect_image(self, args: InspectImageInput, image: SourceImage) -> InspectResult:
        """Report a synthetic image as the observer sees it; an image without ground truth goes to the detectors.

        The observation is drawn from the tool seed salt and the image handle alone: the same
        image inspected twice (or by every member of a group) gives the same report.
        """
        if image.truth is None:
            # An uploaded photo: generic detectors take about a second of CPU, so off the event loop.
            return await anyio.to_thread.run_sync(inspect_real, args, image)
        rng = stable_rng(*self._salt, ToolName.INSPECT_IMAGE, image.handle)
        scene = observe(image.truth.scene, rng, self.settings.observer)
        answers = [Answer(question=q, answer=_answer(q, scene)) for q in args.questions]
        counts: dict[str, int] = {}
        for obj in scene.objects:
            counts[obj.kind] = counts.get(obj.kind, 0) + 1
        return InspectResult(
            handle=image.handle,
            width=scene.width,
            height=scene.height,
            style=scene.style,
            background=scene.background,
            text=scene.text,
            objects=list(scene.objects),
            counts=counts,
            answers=answers,
            known=True,
        )

    def _inject(
        self,
        scene: Scene,
        spec: SceneSpec,
        rng: random.Random,
        seed: int,
        tool: ToolName,
        references: Sequence[Scene] = (),
        *,
        counted: Collection[str] | None = None,
    ) -> tuple[Scene, tuple[Fault, ...]]:
        """Maybe break ``scene``: whether by the seed and tool alone (common random numbers), how by ``rng``."""
        settings = self.settings
        occurrence = stable_rng(*self._salt, seed, tool, "fault").random()
        return inject(
            scene, spec, rng, settings.fault_rate, settings.fault_types, references, counted=counted, draw=occurrence
        )


def _edit_spec(ops: Sequence[EditOp], source: Scene, scene: Scene) -> SceneSpec:
    """What an edit asked for, as a spec over the edited scene: faults and checks concern these.

    Like ``checklist_for_edit``, an added kind gets a colour only when no object of that kind
    in the source had another colour ("every apple is red" would not be the postcondition).
    """
    counts: dict[str, int] = {}
    for obj in scene.objects:
        counts[obj.kind] = counts.get(obj.kind, 0) + 1
    objects: dict[str, ObjectSpec] = {}
    relations: list[RelationSpec] = []
    text: str | None = None
    style: str | None = None
    for op in ops:
        if op.op in ("add", "recolor") and op.kind is not None and counts.get(op.kind):
            color = op.color or (objects[op.kind].color if op.kind in objects else None)
            if op.op == "add" and any(o.kind == op.kind and o.color != op.color for o in source.objects):
                color = None
            count = min(counts[op.kind], MAX_COUNT)
            objects[op.kind] = ObjectSpec(kind=op.kind, count=count, color=color)
        if op.op in ("add", "move") and op.kind and op.relation and op.other:
            relations.append(RelationSpec(subject=op.kind, relation=op.relation, object=op.other))
        if op.op == "remove" and op.kind is not None:
            objects.pop(op.kind, None)
        if op.op == "text":
            text = op.text
        if op.op == "restyle":
            style = op.style
    return SceneSpec(objects=tuple(objects.values()), relations=tuple(relations), text=text, style=style)


_KIND_QUESTION = re.compile(r"\b(how many|colou?r|is there|are there)\b")


def _answer(question: str, scene: Scene | None) -> str:
    """Answer one simple question from the scene; anything else is 'unknown'."""
    if scene is None:
        return "unknown"
    q = question.lower()
    if re.search(r"\b(text|written|writing|caption|say|says)\b", q) and not _KIND_QUESTION.search(q):
        return scene.text if scene.text else "none"
    kinds = [o.kind for o in parse_prompt(question).objects]
    if not kinds:
        return "unknown"
    of_kind = [o for o in scene.objects if o.kind == kinds[0]]
    if "how many" in q:
        return str(len(of_kind))
    if re.search(r"\bcolou?rs?\b", q):
        return ", ".join(dict.fromkeys(o.color for o in of_kind)) if of_kind else "none"
    if re.search(r"\b(is|are) there\b", q) or q.startswith(("is ", "are ", "does ", "do ")):
        return "yes" if of_kind else "no"
    return "unknown"
