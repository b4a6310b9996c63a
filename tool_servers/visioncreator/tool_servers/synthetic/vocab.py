"""The compositional vocabulary the synthetic environment understands."""

from __future__ import annotations

from typing import Final

from visioncreator.tool_servers.palette import COLORS as COLORS

# The 80 COCO object classes, singular, as COCO names them.
COCO_CLASSES: Final[tuple[str, ...]] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

# Other words people use for the same classes. Keys are singular.
SYNONYMS: Final[dict[str, str]] = {
    "man": "person", "woman": "person", "child": "person", "boy": "person", "girl": "person",
    "people": "person", "bike": "bicycle", "motorbike": "motorcycle", "plane": "airplane",
    "aeroplane": "airplane", "ship": "boat", "ball": "sports ball", "football": "sports ball",
    "soccer ball": "sports ball", "racket": "tennis racket", "glass": "wine glass", "mug": "cup",
    "doughnut": "donut", "sofa": "couch", "plant": "potted plant", "table": "dining table",
    "television": "tv", "phone": "cell phone", "mobile phone": "cell phone", "fridge": "refrigerator",
    "hair dryer": "hair drier", "teddy": "teddy bear", "puppy": "dog", "kitten": "cat",
    "bag": "handbag", "laptop computer": "laptop",
}  # fmt: skip

# Irregular plurals; regular ones are handled by rule (add s/es).
IRREGULAR_PLURALS: Final[dict[str, str]] = {
    "people": "person", "persons": "person", "men": "man", "women": "woman", "children": "child",
    "sheep": "sheep", "mice": "mouse", "knives": "knife", "skis": "skis", "wine glasses": "wine glass",
    "glasses": "glass", "benches": "bench", "buses": "bus", "sandwiches": "sandwich",
    "couches": "couch", "hot dogs": "hot dog", "boxes": "box", "puppies": "puppy",
}  # fmt: skip

# Other names of palette colours (the palette itself, COLORS, is shared with the detectors).
COLOR_SYNONYMS: Final[dict[str, str]] = {"grey": "gray", "violet": "purple", "golden": "gold"}

# Number words up to ten.
COUNT_WORDS: Final[dict[str, int]] = {
    "a": 1, "an": 1, "one": 1, "single": 1, "two": 2, "pair of": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
}  # fmt: skip
MAX_COUNT: Final[int] = 10

# Styles, with the phrases that name them.
STYLES: Final[dict[str, tuple[str, ...]]] = {
    "photo": ("photo", "photograph", "photorealistic", "realistic"),
    "cartoon": ("cartoon", "comic", "anime"),
    "sketch": ("sketch", "pencil drawing", "line drawing"),
    "watercolor": ("watercolor", "watercolour"),
    "pixel_art": ("pixel art", "8-bit", "pixelated"),
    "oil_painting": ("oil painting", "van gogh", "impressionist"),
}

# Relation phrases, longest first when matching.
RELATIONS: Final[dict[str, str]] = {
    "to the left of": "left_of", "left of": "left_of", "on the left of": "left_of",
    "to the right of": "right_of", "right of": "right_of", "on the right of": "right_of",
    "above": "above", "over": "above", "on top of": "above", "on": "above",
    "below": "below", "under": "below", "underneath": "below", "beneath": "below",
    "next to": "next_to", "beside": "next_to", "near": "next_to", "by": "next_to",
}  # fmt: skip

# Appearance patterns: with the colour they make an object's identity.
PATTERNS: Final[tuple[str, ...]] = ("plain", "striped", "dotted", "checked", "ringed", "split")
