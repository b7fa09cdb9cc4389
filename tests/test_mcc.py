"""MCC (Jin et al. 2020): one file, tltext/objectives/mcc.py, plus this test."""
import pytest
import torch

from synthetic_da import train
from tltext.objectives.mcc import minimum_class_confusion

pytestmark = pytest.mark.usefixtures("one_thread")


def test_zero_for_confident_one_hot_predictions():
    logits = torch.tensor([[50.0, 0, 0], [0, 50.0, 0], [0, 0, 50.0], [50.0, 0, 0]])
    assert minimum_class_confusion(logits).item() == pytest.approx(0.0, abs=1e-6)


def test_positive_and_larger_for_confused_predictions():
    confused = torch.zeros(6, 3)  # uniform predictions: every class confused with every other
    somewhat = torch.tensor([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 2.0]] * 2)
    c, s = minimum_class_confusion(confused).item(), minimum_class_confusion(somewhat).item()
    assert c > s > 0
    assert c == pytest.approx(2 / 3, rel=1e-5)  # C~ = 1/3 everywhere: (9 - 3) / 3 / 3


def test_gradient_reduces_confusion():
    logits = torch.randn(16, 4, requires_grad=True)
    before = minimum_class_confusion(logits)
    before.backward()
    with torch.no_grad():
        after = minimum_class_confusion(logits - 5.0 * logits.grad)
    assert after < before


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[B, C\] with C >= 2"):
        minimum_class_confusion(torch.randn(4, 1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mcc_beats_source_only_on_the_synthetic_shift(seed):
    src, _ = train(seed, "erm")
    mcc, logs = train(seed, "mcc")
    assert src < 0.87 and mcc > src + 0.08, (src, mcc)
    assert all("mcc" in log and "mcc/confusion" in log for log in logs)
