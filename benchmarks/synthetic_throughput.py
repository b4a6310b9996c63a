"""Throughput of the synthetic environment on one core.

Generates N images from varied prompts through parse -> layout -> faults -> draw -> verify,
once without and once with PNG encoding, and prints images per second. Single process, so
the figures are per core. Target: >= 200 images/s for render + verify.

    python benchmarks/synthetic_throughput.py --n 2000
"""

from __future__ import annotations

import argparse
import io
import random
import time

from visioncreator.tool_servers.synthetic import COCO_CLASSES, COLORS, STYLES, checklist_for_spec, parse_prompt, verify
from visioncreator.tool_servers.synthetic.faults import ALL_FAULTS, inject
from visioncreator.tool_servers.synthetic.layout import layout
from visioncreator.tool_servers.synthetic.render import draw

_NUMBERS = ("a", "two", "three", "four", "five", "six", "ten")
_RELATIONS = ("to the left of", "to the right of", "above", "below", "next to")


def _noun(rng: random.Random) -> str:
    number = rng.choice(_NUMBERS)
    kind = rng.choice(COCO_CLASSES)
    color = f"{rng.choice(tuple(COLORS))} " if rng.random() < 0.6 else ""
    if number == "a":
        return f"{'an' if (color or kind)[0] in 'aeiou' else 'a'} {color}{kind}"
    return f"{number} {color}{kind}{'es' if kind.endswith(('s', 'ch', 'sh')) else 's'}"


def _prompt(rng: random.Random) -> str:
    parts = [_noun(rng)]
    if rng.random() < 0.6:
        parts.append(f"{rng.choice(_RELATIONS)} {_noun(rng)}")
    if rng.random() < 0.4:
        parts.append(f"and {_noun(rng)}")
    if rng.random() < 0.3:
        parts.append(f'with the text "{rng.choice(("Hello", "Open 24h", "SALE", "Welcome home"))}"')
    if rng.random() < 0.4:
        parts.append(f"in {rng.choice(tuple(STYLES))} style")
    return " ".join(parts)


def _run(prompts: list[str], size: int, fault_rate: float, png_level: int | None) -> tuple[float, int, int]:
    """Seconds taken, faults injected, checklist items failed."""
    faults = failed = 0
    start = time.perf_counter()
    for seed, prompt in enumerate(prompts):
        rng = random.Random(seed)
        spec = parse_prompt(prompt)
        scene = layout(spec, size, size, rng)
        scene, injected = inject(scene, spec, rng, fault_rate, ALL_FAULTS)
        image = draw(scene)
        if png_level is not None:
            image.save(io.BytesIO(), format="PNG", compress_level=png_level)
        results = verify(checklist_for_spec(spec), [scene])
        faults += len(injected)
        failed += sum(not r.passed for r in results)
    return time.perf_counter() - start, faults, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="images per run")
    parser.add_argument("--size", type=int, default=256, help="image width and height")
    parser.add_argument("--fault-rate", type=float, default=0.3, help="fault probability")
    parser.add_argument("--png-level", type=int, default=1, help="zlib level of the PNG run (the store uses 1)")
    args = parser.parse_args()
    rng = random.Random(0)
    prompts = [_prompt(rng) for _ in range(args.n)]
    _run(prompts[:50], args.size, args.fault_rate, None)  # warm caches and imports
    for png_level in (None, args.png_level):
        seconds, faults, failed = _run(prompts, args.size, args.fault_rate, png_level)
        label = "render+verify" if png_level is None else f"+png(level {png_level})"
        print(
            f"{label:18s} {args.n} images {args.size}x{args.size} in {seconds:.2f} s: "
            f"{args.n / seconds:.0f} images/s/core ({faults} faults, {failed} failed checks)"
        )


if __name__ == "__main__":
    main()
