"""GRPO generation by replaying our graph: TRL's ``rollout_func`` and its reward functions.

TRL 1.16's ``GRPOTrainer._generate`` calls ``rollout_func(prompts, trainer)`` with the prompts of
one generation batch, each task already repeated ``num_generations`` times in a row (the
trainer's ``RepeatSampler``; ``rewards.view(-1, num_generations)`` relies on that order), and
wants one ``prompt_ids``/``completion_ids``/``logprobs`` entry back per prompt, plus optional
``env_mask`` (1 = policy token, 0 = excluded from the loss) and extra keys, which reach the
reward functions per sample. The rollout function does not see the dataset rows, only the
prompts, so each prompt carries its whole task: a single user message whose content is the
:class:`~visioncreator.rl.collection.records.CollectTask` JSON (:func:`task_prompt`). Nothing has to be
looked up, and shuffling, resuming or several processes cannot mismatch task and prompt.

:class:`GraphRollout` runs each group through the compiled graph with the collector, on an
in-process synthetic tool server, with :meth:`TransformersPolicy.from_model
<visioncreator.policy.local.TransformersPolicy.from_model>` over the trainer's current model and
tokenizer (no copy; eval mode, no grad, for the rollout). Every trajectory becomes one sample
through :func:`~visioncreator.rl.samples.token_sample`: exactly the recorded ids, tool
observations and template tokens masked out. The trajectory record and its reward values travel
as extra keys; :func:`reward_functions` gives one TRL reward function per reward name.

Images. When the agent shows the policy images (``observe`` ``"image"`` or ``"both"``) and a VLM
``processor`` is given, each sample also carries ``trajectory_images``
(:data:`visioncreator.rl.train.vlm.TRAJECTORY_IMAGES`): the images it saw, read from the store by
handle, in placeholder order (:func:`images_seen`), which
:class:`~visioncreator.rl.train.trainer.GraphGRPOTrainer` feeds to its forward passes. The rollouts'
policy is then a :class:`~visioncreator.policy.TransformersVLMPolicy` over the trainer's model and
that processor, reading the images from the same store: its recorded ids hold every image it saw
expanded by the processor, in the same order, so the trainer's placeholders and images pair up (a
mismatch is refused by name). Text rollouts (every other case) return no images and train as before.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from visioncreator.graph import ToolClient, Trajectory
from visioncreator.policy import (
    LocalPolicySettings,
    OpenAIPolicy,
    Policy,
    TokenPolicy,
    TransformersPolicy,
    TransformersVLMPolicy,
)
from visioncreator.rl.collection.config import CollectConfig
from visioncreator.rl.collection.records import CollectTask, TrajectoryRecord
from visioncreator.rl.rewards.base import RewardContext
from visioncreator.rl.rewards.scoring import REWARDS
from visioncreator.rl.samples import SampleError, TokenSample, token_sample
from visioncreator.rl.train.config import GRPOStage, PolicyModel
from visioncreator.rl.train.device import resolve_placement
from visioncreator.rl.train.tasks import load_tasks, task_of_prompt, task_prompt

__all__ = [
    "GraphRollout",
    "Observe",
    "RolloutSample",
    "images_seen",
    "load_tasks",
    "reward_functions",
    "sample_of",
    "task_of_prompt",
    "task_prompt",
]

_T = TypeVar("_T")
Observe = Literal["inspect", "image", "both"]
"""How the agent shows the policy a new image (``AgentConfig.observe``)."""
_SEED_STRIDE = 10_007  # run seeds of successive generation steps; larger than any group


@dataclass(frozen=True)
class RolloutSample:
    """One rollout: the trajectory, the token sample TRL trains on, and its reward values."""

    record: TrajectoryRecord
    sample: TokenSample
    """What TRL gets: the recorded ids; over ``max_completion_length``, cut with every token masked out."""
    rewards: Mapping[str, float]
    """Reward name -> value (the names of :data:`visioncreator.rl.REWARDS`)."""
    group: int
    """Index of its group (one task's ``num_generations`` samples) in the batch."""


def sample_of(trajectory: Trajectory) -> TokenSample:
    """The whole token sample of a rollout (never cut); a turn without ids (an over-long prompt) ends it early.

    A branched rollout (``trajectory.branch``) trains only on its own turns: the prompt is what its
    first turn saw (the base's conversation up to the branch point, identical for the whole group).

    Raises:
        SampleError: Not even the first turn has token ids.

    """
    if trajectory.branch is not None and trajectory.branch.turn > 0:
        own = trajectory.turns[trajectory.branch.turn :]
        trajectory = trajectory.model_copy(update={"turns": own, "branch": None})
    try:
        return token_sample(trajectory)
    except SampleError:
        kept = []
        for turn in trajectory.turns:
            if turn.prompt_token_ids is None or turn.completion_token_ids is None:
                break
            kept.append(turn)
        if not kept or len(kept) == len(trajectory.turns):
            raise
        return token_sample(trajectory.model_copy(update={"turns": kept}))


def images_seen(trajectory: Trajectory, sample: TokenSample, store: Path) -> list[Any]:
    """The images a rollout's policy saw within ``sample``, in the order of their placeholders.

    That is every image of the messages the last policy turn of the sample saw (the task's input
    images and the tool observations before it), in message order, each decoded from the image
    store by handle. A sample cut inside an observation (``max_completion_length``) leaves out
    that observation's images, whose placeholders the cut may have split.

    Args:
        trajectory: The rollout's record (its ``messages`` and the turns' ``n_messages``).
        sample: Its token sample (which turns it holds).
        store: The image store the tools wrote to.

    Returns:
        PIL images, RGB; empty when no image was shown.

    Raises:
        UnknownHandleError: A handle is not in ``store``.

    """
    from visioncreator.tool_servers import ImageStore

    last = max((t for t in sample.turns if t >= 0), default=0)
    seen = trajectory.turns[last].n_messages if trajectory.turns else 0
    handles = [h for message in trajectory.messages[:seen] for h in message.images]
    if not handles:
        return []
    images = ImageStore(store)
    return [images.load(handle)[1] for handle in handles]


def _run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to the end from sync code, also when the caller's thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="visioncreator-rollout")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def _runs(tasks: Sequence[CollectTask]) -> list[tuple[CollectTask, int]]:
    """Consecutive repeats of one task (the trainer's groups), as (task, count)."""
    runs: list[tuple[CollectTask, int]] = []
    for task in tasks:
        if runs and runs[-1][0] == task:
            runs[-1] = (task, runs[-1][1] + 1)
        else:
            runs.append((task, 1))
    return runs


@dataclass
class GraphRollout:
    """TRL's ``rollout_func`` for :class:`~visioncreator.rl.train.config.GRPOStage`: replays the graph per prompt.

    Call it as ``rollout(prompts, trainer)``. After each call, :attr:`last` holds the batch it
    returned, in prompt order.
    """

    stage: GRPOStage
    policy: PolicyModel
    store: Path
    """Image store of the in-process synthetic tool server."""
    seed: int = 0
    """Base run seed; generation step ``s`` runs group sample ``i`` with seed ``seed + s * 10007 + i``."""
    concurrency: int = 8
    """Trajectories in flight at once."""
    observe: Observe = "inspect"
    """How the agent shows the policy new images (``AgentConfig.observe``)."""
    tools: Callable[[CollectConfig], ToolClient] | None = None
    """Makes the rollouts' tool client from their collect config; default
    :func:`visioncreator.rl.collection.collector.synthetic_tools` (the in-process synthetic server)."""
    call_seeds: Literal["shared", "independent", "policy"] = "shared"
    """Image-call seeds of a group (``CollectConfig.call_seeds``): shared by default, so that the members
    of a group meet the same tool randomness (common random numbers)."""
    branch_at: Literal["reflect"] | None = None
    """Branched groups (``CollectConfig.branch_at``): each group is continuations of one base rollout,
    forked at its first reflect node; the samples hold only the continuations' own turns."""
    policy_factory: Callable[[Any, Any], Policy] | None = None
    """Makes the rollouts' policy from the trainer's current model and its tokenizer; default a
    :class:`~visioncreator.policy.TransformersPolicy` over them (a
    :class:`~visioncreator.policy.TransformersVLMPolicy` over the model and ``processor`` when
    :attr:`shows_images`). Whatever it makes must record token
    ids (``prompt_token_ids``, ``completion_token_ids``) that chain from turn to turn."""
    collect_with: Callable[[Sequence[CollectTask], CollectConfig], Awaitable[list[TrajectoryRecord]]] | None = None
    """Runs the collection instead of this process (e.g. :class:`~visioncreator.rl.train.served.RayCollect`:
    Ray actors that each build their own policy; ``policy_factory`` is then unused). None: in-process."""
    processor: Any = None
    """A VLM processor: with ``observe`` ``"image"``/``"both"``, the policy is shown the images and each
    sample's ``trajectory_images`` are returned (see the module docstring). None: text rollouts."""
    last: list[RolloutSample] = field(default_factory=list, init=False)
    groups: int = field(default=0, init=False)
    """Groups rolled out so far."""
    degenerate_groups: int = field(default=0, init=False)
    refused_too_long: int = field(default=0, init=False)
    """Rollouts so far longer than ``max_completion_length``: trained on with no loss (every token
    masked out), never cut (a cut trajectory would be credited for a reward its kept part did not earn)."""
    """Groups so far whose weighted rewards were all equal (no learning signal)."""

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        """Roll out every prompt; see the module docstring for what TRL gets back."""
        tasks = [task_of_prompt(p) for p in prompts]
        step = int(getattr(getattr(trainer, "state", None), "global_step", 0))
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        model.eval()
        try:
            batch = _run(self._roll(_runs(tasks), model, trainer.processing_class, self.seed + step * _SEED_STRIDE))
        finally:
            model.train(was_training)
        self.last = batch
        self._count_degenerate(batch)
        samples = [b.sample for b in batch]
        with_logprobs = all(s.logprobs is not None for s in samples)
        out: dict[str, Any] = {
            "prompt_ids": [list(s.prompt_ids) for s in samples],
            "completion_ids": [list(s.completion_ids) for s in samples],
            "logprobs": [list(s.logprobs or ()) for s in samples] if with_logprobs else None,
            "env_mask": [list(s.env_mask) for s in samples],
            "trajectory": [b.record for b in batch],
            "reward_values": [dict(b.rewards) for b in batch],
        }
        if self.shows_images:
            from visioncreator.rl.train.vlm import TRAJECTORY_IMAGES

            out[TRAJECTORY_IMAGES] = [images_seen(b.record, b.sample, self.store) for b in batch]
        return out

    @property
    def shows_images(self) -> bool:
        """Whether rollouts return ``trajectory_images``: the policy observes images and a processor is given."""
        return self.processor is not None and self.observe in ("image", "both")

    def _policy(self, model: Any, tokenizer: Any) -> Policy:
        p = self.policy
        settings = LocalPolicySettings(
            max_new_tokens=p.max_new_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            torch_threads=p.torch_threads,
            flush_denormal=False,
            name=f"train:{self.stage.name}",
            compute_dtype=resolve_placement(p).rollout_dtype(lora=p.lora is not None),
        )
        if self.shows_images:
            return TransformersVLMPolicy(model, self.processor, images=StoreImages(self.store), settings=settings)
        return TransformersPolicy.from_model(model, _text_tokenizer(tokenizer), settings=settings)

    async def _roll(
        self, runs: list[tuple[CollectTask, int]], model: Any, tokenizer: Any, run_seed: int
    ) -> list[RolloutSample]:
        from visioncreator.rl.collection.collector import synthetic_tools
        from visioncreator.rl.collection.run import collect

        group_size = max(n for _, n in runs)
        config = CollectConfig(
            group_size=group_size,
            concurrency=self.concurrency,
            seed=run_seed,
            fault_rate=self.stage.tasks.fault_rate,
            store=self.store,
            observe=self.observe,
            max_turns=self.stage.max_turns,
            rewards=dict(self.stage.rewards),
            call_seeds=self.call_seeds,
            branch_at=self.branch_at,
        )
        if self.collect_with is not None:
            records = await self.collect_with([t for t, _ in runs], config)
        else:
            policy = (self.policy_factory or self._policy)(model, tokenizer)
            async with (self.tools or synthetic_tools)(config) as tools:
                records = await collect([t for t, _ in runs], policy=policy, tools=tools, config=config)
            if isinstance(policy, OpenAIPolicy | TokenPolicy):
                await policy.aclose()  # its connections belong to this rollout's event loop
        if len(records) != group_size * len(runs):
            raise RuntimeError(f"the collector returned {len(records)} records for {len(runs)} groups of {group_size}")
        batch = []
        for group, (_, n) in enumerate(runs):
            # collect() returns task-major, sample order: this group's records are one slice.
            for record in records[group * group_size : group * group_size + n]:
                rewards = {name: float(record.rewards[name]) for name in REWARDS}
                sample = self._limited(sample_of(record))
                batch.append(RolloutSample(record=record, sample=sample, rewards=rewards, group=group))
        return batch

    def _limited(self, sample: TokenSample) -> TokenSample:
        """The sample, or its refusal when it is over ``max_completion_length`` (counted)."""
        from visioncreator.rl.train.lengths import fits, refuse

        limit = self.stage.max_completion_length
        if limit is None:
            raise RuntimeError(
                f"GRPO stage {self.stage.name!r} has no max_completion_length: resolve it first "
                "(visioncreator.rl.train.lengths.with_completion_limit, as train_grpo does)"
            )
        if fits(sample, limit):
            return sample
        self.refused_too_long += 1
        return refuse(sample, limit)

    def _count_degenerate(self, batch: Sequence[RolloutSample]) -> None:
        weights = self.stage.rewards
        totals: dict[int, set[float]] = {}
        for b in batch:
            total = sum(weights.get(name, 0.0) * value for name, value in b.rewards.items())
            totals.setdefault(b.group, set()).add(round(total, 9))
        self.groups += len(totals)
        self.degenerate_groups += sum(len(values) == 1 for values in totals.values())


@dataclass(frozen=True)
class StoreImages:
    """The rollouts' image store as the VLM policy's image source (``async read(handle) -> bytes``)."""

    store: Path

    async def read(self, handle: str) -> bytes:
        from visioncreator.tool_servers import ImageStore

        return ImageStore(self.store).read_bytes(handle)


def _text_tokenizer(processing_class: Any) -> Any:
    """The tokenizer inside a VLM processor (the local policy writes text); a tokenizer itself."""
    if hasattr(processing_class, "image_processor") and hasattr(processing_class, "tokenizer"):
        return processing_class.tokenizer
    return processing_class


def _reward_fn(name: str) -> Callable[..., list[float]]:
    reward = REWARDS[name]

    def fn(
        prompts: list[Any],
        completions: list[Any],
        trajectory: Sequence[Trajectory] | None = None,
        reward_values: Sequence[Mapping[str, float]] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        if reward_values is not None:
            return [float(v[name]) for v in reward_values]
        if trajectory is None:
            raise ValueError(f"the {name!r} reward needs the 'trajectory' column a GraphRollout returns")
        out = []
        for t in trajectory:
            context = t.reward_context() if isinstance(t, TrajectoryRecord) else RewardContext()
            out.append(reward(t, context).value)
        return out

    fn.__name__ = name
    fn.__qualname__ = name
    fn.__doc__ = f"The {name!r} reward of each rollout's trajectory (TRL reward function)."
    return fn


def reward_functions(weights: Mapping[str, float]) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """One TRL reward function per reward of :data:`visioncreator.rl.REWARDS`, and their weights.

    Every reward is computed and logged; names missing from ``weights`` weigh 0 (logged only).
    Use the weights as ``GRPOConfig.reward_weights``.
    """
    names = list(REWARDS)
    return [_reward_fn(n) for n in names], [float(weights.get(n, 0.0)) for n in names]
