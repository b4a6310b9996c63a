"""Credit where it belongs: segment ownership of tokens with a real tokenizer, and the credit maths.

The trajectories are written by hand (with the ids a local policy would record: each turn's
prompt extends the previous prompt and completion), so that every number can be worked out here.
The same rules on real TRL batches: ``tests/rl/test_grpo_trainer.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from visioncreator.graph.trajectory import Timings, ToolCallRecord, Trajectory, TurnRecord
from visioncreator.policy import Task, build_tiny_lm
from visioncreator.policy.chat_template import END_OF_TURN
from visioncreator.policy.format import (
    parse_turn,
    write_answer,
    write_plan,
    write_reflect,
    write_think,
    write_tool_call,
)
from visioncreator.policy.types import Answer, Node, PlanStep, Reflection, ToolCall
from visioncreator.rl.advantages import AdvantageError, group_advantages, per_token_advantages
from visioncreator.rl.credit import (
    credited_advantages,
    image_call_qualities,
    reflect_turn_scores,
    segment_owners,
    with_segments,
)
from visioncreator.rl.samples import token_sample
from visioncreator.tool_servers import POLICY_TOOLS

pytest.importorskip("transformers")

PLAN = write_plan([PlanStep(step=1, goal="a red fox", tool="text_to_image")])


def call(seed: int) -> str:
    return write_tool_call(ToolCall(name="text_to_image", arguments={"prompt": "a red fox", "seed": seed}, step=1))


def reflect(verdict: str, image: str) -> str:
    return write_reflect(Reflection(verdict=verdict, image=image))  # type: ignore[arg-type]


def answer(image: str) -> str:
    return write_answer(Answer(images=(image,)))


GOOD: dict[str, Any] = {"scene": {"width": 64, "height": 64}, "tool": "text_to_image"}
FAULTY: dict[str, Any] = {**GOOD, "faults": [{"type": "wrong_count", "subject": "fox", "detail": "fox: 1 -> 2"}]}


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build_tiny_lm(tmp_path_factory.mktemp("tiny"), tool_names=POLICY_TOOLS))


def encode(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def trajectory(
    tok: Any,
    turns: Sequence[tuple[Node, str]],
    calls: Sequence[ToolCallRecord] = (),
    truths: dict[str, Any] | None = None,
) -> Trajectory:
    """A trajectory whose turns carry ids as a local policy records them (prompts chained, observations between)."""
    prompt = encode(tok, "<|im_start|>user\na red fox<|im_end|>\n<|im_start|>assistant\n")
    records = []
    for index, (node, text) in enumerate(turns):
        completion = [*encode(tok, text), tok.convert_tokens_to_ids(END_OF_TURN)]
        parsed = parse_turn(text)
        records.append(
            TurnRecord(
                index=index,
                node=node,
                text=text,
                segments=parsed.segments,
                errors=parsed.errors,
                prompt_token_ids=tuple(prompt),
                completion_token_ids=tuple(completion),
            )
        )
        prompt = [
            *prompt,
            *completion,
            *encode(tok, "\n<|im_start|>user\nobservation<|im_end|>\n<|im_start|>assistant\n"),
        ]
    return Trajectory(
        thread_id="t",
        seed=0,
        task=Task(request="a red fox"),
        messages=[],
        turns=records,
        tool_calls=list(calls),
        answer=[],
        termination="answered",
        timings=Timings(wall_s=0.0, policy_s=0.0, tools_s=0.0),
        truths=truths or {},
    )


def image_call(
    turn: int, handle: str | None, *, k: int = 0, ok: bool = True, name: str = "text_to_image"
) -> ToolCallRecord:
    return ToolCallRecord(
        id=f"call_{turn}_{k}", batch=turn, turn=turn, by="policy", name=name, step=1, ok=ok, handle=handle
    )


def texts(tok: Any, sample: Any) -> dict[str, str]:
    """Label -> the decoded text of the tokens it owns (special tokens skipped)."""
    ids: dict[str, list[int]] = {}
    for token, owner in zip(sample.completion_ids, sample.segments, strict=True):
        ids.setdefault(owner, []).append(token)
    return {owner: tok.decode(i, skip_special_tokens=True) for owner, i in ids.items() if owner}


# ---- ownership -------------------------------------------------------------------------------


def test_each_policy_token_belongs_to_the_segment_it_spells(tok: Any) -> None:
    think = write_think("une idée 🦊, deux idées")  # multi-byte characters split over byte-level tokens
    redo = f"{reflect('redo', 'img_a')}\n{call(2)}"
    traj = trajectory(tok, [("plan", f"{think}\n{PLAN}"), ("act", call(1) + call(3)), ("reflect", redo)])
    sample = with_segments(token_sample(traj), traj, tok)

    assert texts(tok, sample) == {
        "t0:think:0": think,
        "t0:text": "\n",  # and the end-of-turn token, which decodes to nothing
        "t0:plan:0": PLAN,
        "t1:tool_call:0": call(1),
        "t1:tool_call:1": call(3),
        "t1:text": "",
        "t2:reflect:0": reflect("redo", "img_a"),
        "t2:text": "\n",
        "t2:tool_call:0": call(2),
    }
    for owner, mask, turn in zip(sample.segments or (), sample.env_mask, sample.turns, strict=True):
        assert (owner == "") == (mask == 0)
        assert not owner or owner.startswith(f"t{turn}:")
    # A sample cut mid-turn keeps the owners of the tokens it keeps.
    cut = token_sample(traj).head(len(sample.completion_ids) - 7)
    assert segment_owners(cut, traj, tok) == (sample.segments or ())[: len(cut.completion_ids)]


def test_stray_text_around_a_segment_is_the_turn_s_text(tok: Any) -> None:
    text = f"ok {call(1)} done"
    traj = trajectory(tok, [("act", text)])
    owners = texts(tok, with_segments(token_sample(traj), traj, tok))
    assert owners == {"t0:tool_call:0": call(1), "t0:text": "ok  done"}


STRADDLED = f"{reflect('redo', 'img_a')}\n{call(2)}ok{answer('img_a')}"


def plain_tokenizer(decoder: str) -> Any:
    """A real BPE tokenizer without the format tags as tokens: its tokens straddle segment boundaries."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    if decoder == "byte-level":
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        bpe.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:  # SentencePiece-style: the decoder drops the space it prepends to the first word
        bpe.pre_tokenizer = pre_tokenizers.Metaspace()
        bpe.decoder = decoders.Metaspace()
        alphabet = []
    corpus = [PLAN, call(1), STRADDLED, "ok done\n"] * 3
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|im_start|>", END_OF_TURN], initial_alphabet=alphabet, show_progress=False
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=END_OF_TURN)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("decoder", ["byte-level", "metaspace"])
def test_a_token_straddling_a_boundary_goes_to_the_segment_it_overlaps_most(decoder: str) -> None:
    plain = plain_tokenizer(decoder)
    text = STRADDLED
    traj = trajectory(plain, [("reflect", text)])
    sample = token_sample(traj)
    ids = list(traj.turns[0].completion_token_ids or ())
    assert plain.decode(ids, skip_special_tokens=True) == text
    # The oracle: each token's span from decoding every prefix, its owner by the largest overlap.
    ends = [len(plain.decode(ids[: i + 1], skip_special_tokens=True)) for i in range(len(ids))]
    spans = [(s.start, s.end, f"t0:{s.kind}:0") for s in traj.turns[0].segments]
    want, straddling = [], 0
    for start, end in zip([0, *ends], ends, strict=False):
        overlaps = [(min(end, e) - max(start, s), label) for s, e, label in spans]
        best = max(overlaps)
        want.append(best[1] if best[0] > 0 else "t0:text")
        straddling += sum(0 < o < end - start for o, _ in overlaps)
    assert straddling, "no token straddles a boundary: the test has no signal"
    owners = segment_owners(sample, traj, plain)
    assert [o for o, m in zip(owners, sample.env_mask, strict=True) if m] == want


def test_a_sample_without_its_turn_is_refused(tok: Any) -> None:
    from visioncreator.rl.samples import SampleError

    traj = trajectory(tok, [("act", call(1))])
    sample = token_sample(traj)
    with pytest.raises(SampleError, match="turn 0"):
        segment_owners(sample, traj.model_copy(update={"turns": []}), tok)


# ---- what calls and turns earned --------------------------------------------------------------


def test_image_quality_comes_from_the_ground_truth_of_the_call_s_image(tok: Any) -> None:
    turns: list[tuple[Node, str]] = [
        ("act", call(1) + call(2) + call(3) + call(4)),
        ("reflect", f"{reflect('redo', 'img_1')}{call(5)}"),
    ]
    calls = [
        image_call(0, "img_1", k=0),  # faulty image
        image_call(0, "img_2", k=1),  # good image
        image_call(0, None, k=2, ok=False),  # failed call
        image_call(0, "img_4", k=3),  # no ground truth: not scored
        image_call(1, "img_5"),
    ]
    traj = trajectory(tok, turns, calls, {"img_1": FAULTY, "img_2": GOOD, "img_5": GOOD})
    assert image_call_qualities(traj) == {
        "t0:tool_call:0": 0.0,
        "t0:tool_call:1": 1.0,
        "t0:tool_call:2": 0.0,
        "t1:tool_call:0": 1.0,
    }
    # A call of another tool is no image call.
    other = traj.model_copy(update={"tool_calls": [image_call(1, "img_5", name="inspect_image")]})
    assert image_call_qualities(other) == {}


# ---- the credit maths ---------------------------------------------------------------------------

WEIGHTS = {"format": 1.0, "outcome": 1.0}
COMPONENTS = [{"format": 1.0, "outcome": 0.5, "plan": 1.0}, {"format": 1.0, "outcome": 1.0, "plan": 0.0}]
NODE_REWARDS = {"plan": ["plan"]}


def group(tok: Any) -> list[Trajectory]:
    """Two trajectories: A redoes a faulty image in a reflect turn, then wrongly redoes the good one; B accepts."""
    a = trajectory(
        tok,
        [
            ("plan", PLAN),
            ("act", call(1)),
            ("reflect", f"{reflect('redo', 'img_a1')}\n{call(2)}"),  # right, and the redo makes a good image
            ("reflect", reflect("redo", "img_a2")),  # wrong: img_a2 has no faults
            ("act", answer("img_a2")),
        ],
        [image_call(1, "img_a1"), image_call(2, "img_a2")],
        {"img_a1": FAULTY, "img_a2": GOOD},
    )
    b = trajectory(
        tok,
        [("plan", PLAN), ("act", call(1)), ("reflect", reflect("accept", "img_b1")), ("act", answer("img_b1"))],
        [image_call(1, "img_b1")],
        {"img_b1": GOOD},
    )
    return [a, b]


def test_redo_calls_carry_their_image_s_credit_and_each_reflect_turn_its_own(tok: Any) -> None:
    trajectories = group(tok)
    samples = [with_segments(token_sample(t), t, tok) for t in trajectories]
    rows = credited_advantages(samples, trajectories, COMPONENTS, WEIGHTS, NODE_REWARDS, local_weight=0.25)

    total = group_advantages([0.75, 1.0]).values  # the weighted totals
    # Image calls of the group, pooled: A's first (faulty) 0, A's redo 1, B's 1.
    calls = group_advantages([0.0, 1.0, 1.0]).values
    # Reflect turns of the group, pooled: A's turn 2 right (1), A's turn 3 wrong (0), B's turn 2 right (1).
    turns = group_advantages([1.0, 0.0, 1.0]).values
    plan = group_advantages([1.0, 0.0]).values
    want = {
        (0, "t0:plan:0"): plan[0],
        (0, "t1:tool_call:0"): 0.25 * calls[0] + 0.75 * total[0],
        (0, "t2:tool_call:0"): 0.25 * calls[1] + 0.75 * total[0],
        (0, "t2:reflect:0"): 0.25 * turns[0] + 0.75 * total[0],
        (0, "t2:text"): 0.25 * turns[0] + 0.75 * total[0],
        (0, "t3:reflect:0"): 0.25 * turns[1] + 0.75 * total[0],
        (0, "t4:answer:0"): total[0],
        (1, "t1:tool_call:0"): 0.25 * calls[2] + 0.75 * total[1],
        (1, "t2:reflect:0"): 0.25 * turns[2] + 0.75 * total[1],
        (1, "t3:answer:0"): total[1],
    }
    by: dict[tuple[int, str], float] = {}
    for i, (sample, row) in enumerate(zip(samples, rows, strict=True)):
        assert len(row) == len(sample.completion_ids)
        for value, owner in zip(row, sample.segments or (), strict=True):
            if not owner:
                assert value == 0.0  # environment tokens
            elif (i, owner) in want:
                assert value == pytest.approx(want[i, owner], abs=1e-6), (i, owner)
            by[i, owner] = value
    assert set(want) <= set(by)
    # The redo call is credited by its image (good: up), its reflect turn's reflection by the
    # verdicts, and the two reflect turns of A differ.
    assert by[0, "t2:tool_call:0"] > by[0, "t1:tool_call:0"]
    assert by[0, "t2:reflect:0"] > by[0, "t3:reflect:0"]


def test_without_ground_truth_tokens_keep_the_per_node_credit(tok: Any) -> None:
    trajectories = [t.model_copy(update={"truths": {}}) for t in group(tok)]
    samples = [with_segments(token_sample(t), t, tok) for t in trajectories]
    rows = credited_advantages(samples, trajectories, COMPONENTS, WEIGHTS, NODE_REWARDS, judged=[[], []])
    assert rows == per_token_advantages(samples, COMPONENTS, WEIGHTS, NODE_REWARDS)


def test_reflect_scores_count_only_scorable_judgements_of_reflect_turns(tok: Any) -> None:
    from visioncreator.rl.rewards.judgements import Judgement

    [a, _] = group(tok)

    def judged(turn: int, correct: bool | None) -> Judgement:
        return Judgement(turn=turn, image="img", call_id=None, verdict="redo", faulty=None, correct=correct)

    marks = [judged(2, True), judged(2, False), judged(2, None), judged(3, None), judged(1, True)]
    # Turn 2: one of two scorable right; turn 3 nothing scorable; turn 1 is no reflect turn.
    assert reflect_turn_scores(a, marks) == {2: 0.5}


def test_local_weight_one_is_the_local_score_alone_and_bad_inputs_are_refused(tok: Any) -> None:
    trajectories = group(tok)
    samples = [with_segments(token_sample(t), t, tok) for t in trajectories]
    rows = credited_advantages(samples, trajectories, COMPONENTS, WEIGHTS, local_weight=1.0, judged=[[], []])
    index = (samples[0].segments or ()).index("t2:tool_call:0")
    assert rows[0][index] == pytest.approx(group_advantages([0.0, 1.0, 1.0]).values[1])
    assert math.isclose(rows[0][index], 1 / 3 / math.sqrt(1 / 3), rel_tol=1e-5)
    with pytest.raises(AdvantageError, match="local_weight"):
        credited_advantages(samples, trajectories, COMPONENTS, WEIGHTS, local_weight=1.5)
    with pytest.raises(AdvantageError, match="no segments"):
        credited_advantages([token_sample(t) for t in trajectories], trajectories, COMPONENTS, WEIGHTS)
    with pytest.raises(AdvantageError, match="2 samples but 1"):
        credited_advantages(samples, trajectories[:1], COMPONENTS, WEIGHTS)
