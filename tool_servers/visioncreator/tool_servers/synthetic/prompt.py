"""Words to scenes and back: the synthetic environment's prompt and edit-instruction parser.

The parser is a longest-match lexer over the vocabulary of :mod:`vocab` followed by a small
state machine: counts, colours and determiners wait for the next noun; a relation phrase links
the last object mentioned to the next one; a separator (``and``, punctuation) clears whatever
waits. Unknown words are skipped. Nothing here raises on any input string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Literal, cast

from visioncreator.tool_servers.scene import EditOp, ObjectSpec, Relation, RelationSpec, SceneSpec
from visioncreator.tool_servers.synthetic import vocab

__all__ = ["describe_spec", "parse_edit", "parse_prompt", "plural"]

_Cat = Literal["noun", "color", "count", "rel", "style", "def", "sep", "pos", "verb", "quote", "word"]


@dataclass(frozen=True, slots=True)
class _Tok:
    cat: _Cat
    value: str = ""
    number: int = 0
    plural: bool = False
    # For a word that is both an object and a colour ("orange"): its colour reading.
    color: str | None = None


_WORD: Final = _Tok("word")
_QUOTE_MARK: Final = "\ue000"  # private-use character: stands for a quoted span while lexing
_QUOTED_RE: Final = re.compile(
    r'"([^"]*)"|\u201c([^\u201d]*)\u201d|\u2018([^\u2019]+)\u2019|(?<![A-Za-z0-9])\'([^\']+)\'(?![A-Za-z0-9])'
)
_TOKEN_RE: Final = re.compile(r"\ue000\d+|[a-z0-9]+|[.,;:!?]")

_VERBS: Final[dict[str, str]] = {
    "add": "add", "put": "add", "place": "add", "insert": "add", "include": "add", "draw": "add",
    "remove": "remove", "delete": "remove", "erase": "remove", "take away": "remove", "take out": "remove",
    "get rid of": "remove", "eliminate": "remove",
    "make": "recolor", "change": "recolor", "paint": "recolor", "turn": "recolor", "color": "recolor",
    "colour": "recolor", "recolor": "recolor", "recolour": "recolor", "dye": "recolor",
    "move": "move", "shift": "move", "relocate": "move", "drag": "move", "slide": "move",
    "write": "text", "label": "text",
    "restyle": "restyle", "convert": "restyle", "render": "restyle", "transform": "restyle", "stylize": "restyle",
    "replace": "replace", "swap": "replace",
}  # fmt: skip
_SEPARATORS: Final = (",", ".", ";", ":", "!", "?", "and", "then", "while", "but", "also")
# Absolute positions ("on the left") end a pending relation instead of completing it.
_POSITIONS: Final = ("left", "right", "top", "bottom", "middle", "center", "centre", "corner", "side")
# Not "that": it is more often a relative pronoun ("a cat that is orange") than a determiner.
_DEFINITES: Final = ("the", "this", "these", "those")
_REL_PHRASES: Final[dict[Relation, str]] = {
    "left_of": "to the left of",
    "right_of": "to the right of",
    "above": "above",
    "below": "below",
    "next_to": "next to",
}
_NUMBER_WORDS: Final = ("", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _regular_plural(word: str) -> str:
    head, _, last = word.rpartition(" ")
    if last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif len(last) > 1 and last.endswith("y") and last[-2] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}" if head else last


# The first irregular plural listed for a class itself ("people", not "men") is the canonical one.
_PLURALS: Final[dict[str, str]] = {}
for _many, _one in vocab.IRREGULAR_PLURALS.items():
    if _one in vocab.COCO_CLASSES:
        _PLURALS.setdefault(_one, _many)


def plural(kind: str) -> str:
    """The plural a description uses for an object kind: ``knife`` → ``knives``, ``skis`` → ``skis``."""
    if kind in _PLURALS:
        return _PLURALS[kind]
    if kind in vocab.COCO_CLASSES and kind.endswith("s"):
        return kind  # "skis", "scissors": already plural in form
    return _regular_plural(kind)


def _key(phrase: str) -> str:
    return " ".join(_TOKEN_RE.findall(phrase.lower()))


def _build_lexicon() -> dict[str, _Tok]:
    lex: dict[str, _Tok] = {}
    for name in (*vocab.COLORS, *vocab.COLOR_SYNONYMS):
        lex[_key(name)] = _Tok("color", vocab.COLOR_SYNONYMS.get(name, name))
    nouns: dict[str, _Tok] = {}
    for word in (*vocab.COCO_CLASSES, *vocab.SYNONYMS):
        kind = vocab.SYNONYMS.get(word, word) if word not in vocab.COCO_CLASSES else word
        nouns.setdefault(_key(_regular_plural(word)), _Tok("noun", kind, plural=True))
        nouns[_key(word)] = _Tok("noun", kind)
    for many, one in vocab.IRREGULAR_PLURALS.items():
        kind = one if one in vocab.COCO_CLASSES else vocab.SYNONYMS.get(one, "")
        if kind:
            # Same form in both numbers ("sheep", "skis") reads as singular: the count decides.
            nouns[_key(many)] = _Tok("noun", kind, plural=many != one)
    for key, tok in nouns.items():
        colour = lex.get(key)
        lex[key] = _Tok("noun", tok.value, plural=tok.plural, color=colour.value if colour else None)
    for phrase, number in vocab.COUNT_WORDS.items():
        lex[_key(phrase)] = _Tok("count", number=number)
    for number in range(1, vocab.MAX_COUNT + 1):
        lex[str(number)] = _Tok("count", number=number)
    for phrase, relation in vocab.RELATIONS.items():
        lex[_key(phrase)] = _Tok("rel", relation)
    for style, phrases in vocab.STYLES.items():
        for phrase in phrases:
            lex[_key(phrase)] = _Tok("style", style)
    for phrase, op in _VERBS.items():
        lex[_key(phrase)] = _Tok("verb", op)
    lex.update({w: _Tok("def") for w in _DEFINITES})
    lex.update({w: _Tok("sep") for w in _SEPARATORS})
    lex.update({w: _Tok("pos") for w in _POSITIONS})
    return lex


_LEXICON: Final = _build_lexicon()
_MAX_PHRASE: Final = max(len(k.split()) for k in _LEXICON)


def _lex(text: str) -> tuple[list[_Tok], list[str]]:
    """Tokens of ``text`` (longest vocabulary match first) and its quoted spans, in original case."""
    quotes: list[str] = []

    def _stash(match: re.Match[str]) -> str:
        quotes.append(next(g for g in match.groups() if g is not None))
        return f" {_QUOTE_MARK}{len(quotes) - 1} "

    body = _QUOTED_RE.sub(_stash, text.replace(_QUOTE_MARK, " "))
    words = _TOKEN_RE.findall(body.lower())
    toks: list[_Tok] = []
    i = 0
    while i < len(words):
        if words[i][0] == _QUOTE_MARK:
            toks.append(_Tok("quote", number=int(words[i][1:])))
            i += 1
            continue
        for n in range(min(_MAX_PHRASE, len(words) - i), 0, -1):
            tok = _LEXICON.get(words[i] if n == 1 else " ".join(words[i : i + n]))
            if tok is not None:
                toks.append(tok)
                i += n
                break
        else:
            toks.append(_WORD)
            i += 1
    return toks, quotes


@dataclass(slots=True)
class _Mention:
    kind: str
    color: str | None
    count: int | None
    plural: bool
    definite: bool

    @property
    def number(self) -> int:
        """How many objects the mention asks for."""
        return min(self.count if self.count is not None else 2 if self.plural else 1, vocab.MAX_COUNT)


@dataclass(slots=True)
class _Walk:
    mentions: list[_Mention] = field(default_factory=list)
    relations: list[tuple[int, Relation, int]] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    quotes: list[int] = field(default_factory=list)
    loose_colors: list[str] = field(default_factory=list)  # colours that qualified no noun
    verb: str | None = None


def _next_is_noun(toks: list[_Tok], i: int) -> bool:
    """Whether a noun follows token ``i``, past unknown words and other colours."""
    for tok in toks[i + 1 :]:
        if tok.cat == "noun":
            return True
        if tok.cat not in ("word", "color"):
            return False
    return False


def _walk(toks: list[_Tok]) -> _Walk:
    """Run the state machine over one token sequence."""
    walk = _Walk()
    count: int | None = None
    color: str | None = None
    definite = False
    pending: tuple[int, Relation] | None = None
    for i, tok in enumerate(toks):
        cat = tok.cat
        if cat == "noun" and tok.color is not None and not tok.plural:
            # "an orange cat" / "the cat is orange": a colour; "an orange", "the orange": the fruit.
            bare = count is None and not definite and color is None and bool(walk.mentions)
            if _next_is_noun(toks, i) or bare:
                tok = _Tok("color", tok.color)
                cat = "color"
        if cat == "noun":
            walk.mentions.append(_Mention(tok.value, color, count, tok.plural, definite))
            if pending is not None:
                walk.relations.append((pending[0], pending[1], len(walk.mentions) - 1))
            count, color, definite, pending = None, None, False, None
        elif cat == "color":
            if color is not None:
                walk.loose_colors.append(color)
            color = tok.value
            if not _next_is_noun(toks, i):
                walk.loose_colors.append(color)
                color = None
        elif cat == "count":
            count = tok.number
        elif cat == "def":
            definite = True
        elif cat in ("rel", "style", "sep"):
            count, color, definite = None, None, False
            pending = (len(walk.mentions) - 1, cast(Relation, tok.value)) if cat == "rel" and walk.mentions else None
            if cat == "style":
                walk.styles.append(tok.value)
        elif cat == "pos":
            pending = None
        elif cat == "quote":
            walk.quotes.append(tok.number)
        elif cat == "verb" and walk.verb is None:
            walk.verb = tok.value
    return walk


def parse_prompt(text: str) -> SceneSpec:
    """Parse a prompt into the scene it asks for.

    A definite ``the dog`` after a dog was mentioned refers to it (and may give it a colour it
    lacked); indefinite mentions of the same kind and colour add up. A bare plural counts two.

    Args:
        text: Any string; unknown words are ignored.

    Returns:
        The requested objects, relations, first quoted text and last named style.

    """
    toks, quotes = _lex(text)
    walk = _walk(toks)
    counts: dict[tuple[str, str | None], int] = {}
    for m in walk.mentions:
        key = (m.kind, m.color)
        same_kind = [k for k in counts if k[0] == m.kind]
        if m.definite and same_kind:
            if m.color is not None and same_kind == [(m.kind, None)]:
                counts = {(m.kind, m.color) if k == same_kind[0] else k: n for k, n in counts.items()}
            continue
        counts[key] = min(counts.get(key, 0) + m.number, vocab.MAX_COUNT)
    relations: list[RelationSpec] = []
    for s, relation, o in walk.relations:
        spec = RelationSpec(subject=walk.mentions[s].kind, relation=relation, object=walk.mentions[o].kind)
        if spec not in relations:
            relations.append(spec)
    return SceneSpec(
        objects=tuple(ObjectSpec(kind=k, count=n, color=c) for (k, c), n in counts.items()),
        relations=tuple(relations),
        text=quotes[walk.quotes[0]] if walk.quotes else None,
        style=walk.styles[-1] if walk.styles else None,
    )


def _clauses(toks: list[_Tok]) -> list[list[_Tok]]:
    out: list[list[_Tok]] = [[]]
    for tok in toks:
        if tok.cat == "sep":
            out.append([])
        else:
            out[-1].append(tok)
    return [c for c in out if c]


def _relation_of(walk: _Walk, subject: int) -> tuple[Relation | None, str | None]:
    for s, relation, o in walk.relations:
        if s == subject:
            return relation, walk.mentions[o].kind
    return None, None


def parse_edit(instruction: str) -> tuple[EditOp, ...]:
    """Parse an edit instruction into operations, in the order they are written.

    Clauses are split at ``and``, ``then`` and punctuation; a clause without a verb reuses the
    previous clause's verb ("remove the dog and the cat"). A recolour clause without a colour
    takes the next one's ("make the car and the bus blue"). ``put``/``place`` add objects; only
    ``move``-type verbs move them.

    Args:
        instruction: Any string.

    Returns:
        The operations; an empty tuple when nothing is understood.

    """
    toks, quotes = _lex(instruction)
    ops: list[EditOp] = []
    previous: str | None = None
    uncoloured: list[str] = []
    for clause in _clauses(toks):
        walk = _walk(clause)
        verb = walk.verb or previous
        previous = verb
        if walk.quotes:
            ops.append(EditOp(op="text", text=quotes[walk.quotes[0]]))
            continue
        if walk.styles and walk.verb not in ("add", "remove", "move", "replace"):
            ops.append(EditOp(op="restyle", style=walk.styles[-1]))
        if not walk.mentions:
            continue
        first = walk.mentions[0]
        relation, other = _relation_of(walk, 0)
        if verb == "add":
            ops.append(
                EditOp(op="add", kind=first.kind, count=first.number, color=first.color, relation=relation, other=other)
            )
        elif verb == "remove":
            ops.append(EditOp(op="remove", kind=first.kind))
        elif verb == "replace" and len(walk.mentions) > 1:
            new = walk.mentions[1]
            ops.append(EditOp(op="remove", kind=first.kind))
            ops.append(EditOp(op="add", kind=new.kind, count=new.number, color=new.color))
        elif verb == "move" and relation is not None:
            ops.append(EditOp(op="move", kind=first.kind, relation=relation, other=other))
        elif verb == "recolor":
            if not walk.loose_colors:
                uncoloured.append(first.kind)
                continue
            for kind in (*uncoloured, first.kind):
                ops.append(EditOp(op="recolor", kind=kind, color=walk.loose_colors[-1]))
            uncoloured.clear()
    return tuple(ops)


def _noun_phrase(obj: ObjectSpec) -> str:
    words = [obj.color] if obj.color else []
    words.append(obj.kind if obj.count == 1 else plural(obj.kind))
    phrase = " ".join(words)
    if obj.count > 1:
        return f"{_NUMBER_WORDS[obj.count]} {phrase}"
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def describe_spec(spec: SceneSpec) -> str:
    """Write a scene spec back as a canonical prompt that :func:`parse_prompt` reads back.

    A relation between neighbouring objects is written inline ("two red apples to the left of a
    blue bowl"); the others follow as "the dog is next to the car". The round trip is exact for
    specs with distinct (kind, colour) objects, relations between listed kinds, known colour and
    style names, and text without both kinds of quote.
    """
    rels = list(spec.relations)
    done = 0
    listing = ""
    for j, obj in enumerate(spec.objects):
        listing += _noun_phrase(obj)
        if j + 1 < len(spec.objects):
            rel = rels[done] if done < len(rels) else None
            if rel is not None and rel.subject == obj.kind and rel.object == spec.objects[j + 1].kind:
                listing += f" {_REL_PHRASES[rel.relation]} "
                done += 1
            else:
                listing += ", "
    parts = [listing] if listing else []
    parts += [f"the {r.subject} is {_REL_PHRASES[r.relation]} the {r.object}" for r in rels[done:]]
    if spec.text is not None:
        quote = "'" if '"' in spec.text else '"'
        parts.append(f"with the text {quote}{spec.text}{quote}")
    if spec.style:
        parts.append(f"in {vocab.STYLES.get(spec.style, (spec.style,))[0]} style")
    return ", ".join(parts)
