"""End-to-end image runs on the offline digits pair (``write_digits``, 30 images per
class and domain, 32 px, the ``palette`` shift) with a ResNet-18 from random
initialisation: every objective with a frozen backbone (cached embeddings),
full and partial tuning, the saved model's reload with the Auto classes, and the
shift experiment: aligning source and target beats source-only (fixed seed)."""
import json

import numpy as np
import pytest
import torch
from accelerate.utils import set_seed
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModelForImageClassification

import tltext  # noqa: F401 - registers the tltext model type with the Auto classes
from tltext.backbones.image import ImageBackbone
from tltext.data.digits import write_digits

from helpers import run_and_capture

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.usefixtures("one_thread")]  # see conftest.py

DIGITS = [str(d) for d in range(10)]
RESULT_KEYS = {"modality", "objective", "tuning", "base_model", "selection", "best_epoch", "label_names",
               "num_examples", "validation", "test", "timing", "history", "args", "warnings"}
SEED = 2




@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    info = write_digits(str(out), seed=0, size=32, per_class=30, shift="palette")
    assert (info["source"], info["target"]) == (300, 300)
    return out


def _args(digits, out, objective, tuning, epochs="1", *extra):
    """The recipe's flags (image-folder aliases), as `recipes/image_classification.py` takes them."""
    return ["--model_name_or_path", "resnet18", "--allow_random_weights", "--image_size", "32", "--train_dir", str(digits / "source"),
            "--target_dir", str(digits / "target"), "--test_dir", str(digits / "target"), "--tuning", tuning,
            "--objective", objective, "--output_dir", str(out), "--num_train_epochs", epochs,
            "--per_device_train_batch_size", "32", "--learning_rate", "1e-3", "--image_hflip", "False",
            "--image_min_crop_scale", "0.6", "--seed", str(SEED), "--disable_tqdm", "--report", "False",
            "--cache_dir", str(digits.parent / "cache"), *extra]


def _initial_backbone():
    """The backbone a run with --seed SEED starts from (random init is decided by the seed)."""
    set_seed(SEED)
    return ImageBackbone.from_pretrained("resnet18", image_size=32).model.state_dict()


def _saved_backbone(model_dir):
    prefix = "backbone.model."
    return {k[len(prefix):]: v for k, v in load_file(str(model_dir / "model.safetensors")).items() if k.startswith(prefix)}


def _same(a, b, prefix):
    keys = [k for k in a if k.startswith(prefix) and a[k].is_floating_point()]
    assert keys, prefix
    return all(torch.equal(a[k], b[k]) for k in keys)


def _check_run(out, res, seen, objective, tuning):
    saved = json.loads((out / "results.json").read_text())
    assert RESULT_KEYS <= set(saved)
    assert (saved["modality"], saved["objective"], saved["tuning"]) == ("image", objective, tuning)
    assert saved["label_names"] == DIGITS and saved["base_model"] == "resnet18"
    n = saved["num_examples"]
    assert (n["train"], n["validation"], n["test"]) == (270, 30, 300)
    assert n["target"] == 300
    assert saved["args"]["image_hflip"] is False and saved["args"]["image_min_crop_scale"] == 0.6
    if (objective, tuning) == ("prototypes", "frozen"):  # the head is the class means of frozen features
        assert saved["selection"] == "none (nothing trained)" and saved["timing"]["train_seconds"] == 0
    elif (objective, tuning) == ("erm", "frozen"):  # the closed-form probe: the held-out split pooled, C by CV
        assert saved["selection"].startswith("5-fold stratified cross-validation on training + held-out validation")
        assert n["fitted_on"] == 300 and "cross-validated" in saved["validation"]["note"]
    else:
        assert saved["selection"].startswith("source validation split") and saved["timing"]["train_seconds"] > 0
    assert saved["test"]["accuracy"] == res["test"]["accuracy"]

    # OUT/model reloads with the Auto class and gives the run's own test logits
    model = AutoModelForImageClassification.from_pretrained(out / "model").eval()
    assert type(model).__name__ == "TltextModel" and model.main_input_name == "pixel_values"
    assert model.config.tltext["objective"] == objective and model.config.tltext["tuning"] == tuning
    assert model.backbone.hflip is False and model.backbone.min_crop_scale == 0.6  # training augmentation kept
    images = seen["inputs"]
    with torch.no_grad():
        logits = model(**model.backbone.collate(images)).logits
    assert logits.shape == (300, 10)
    assert torch.allclose(logits, seen["logits"], atol=1e-4), (logits - seen["logits"]).abs().max()
    acc = float(np.mean(logits.argmax(-1).numpy() == np.asarray(seen["labels"])))
    assert acc == pytest.approx(saved["test"]["accuracy"])
    return saved, model


@pytest.mark.parametrize("objective", ["erm", "dann", "mmd", "prototypes"])
def test_frozen_objective_end_to_end_and_reload(objective, digits, tmp_path, monkeypatch):
    out = tmp_path / "run"
    extra = ["--n_way", "5", "--k_shot", "2", "--n_query", "2", "--episodes_per_epoch", "3"] if objective == "prototypes" else []
    res, seen = run_and_capture(monkeypatch, "image", _args(digits, out, objective, "frozen", "1", *extra))
    saved, model = _check_run(out, res, seen, objective, "frozen")
    t = saved["timing"]
    assert t["cache_hits"] + t["cache_misses"] == 4  # one look-up per split (train, validation, test, target)
    assert len(saved["history"]) == (0 if objective == "prototypes" else 1)  # frozen prototypes train nothing
    h = saved["history"][0] if saved["history"] else {}
    if objective == "dann":
        assert 0.0 <= h["dann/disc_acc"] <= 1.0 and h["dann"] > 0
    if objective == "mmd":
        assert np.isfinite(h["mmd"])
    assert _same(_initial_backbone(), _saved_backbone(out / "model"), "")  # frozen: the ResNet never moved
    if objective in ("dann", "mmd"):  # frozen DA: a 256-wide adapter is trained
        assert model.adapter is not None and model.feature_dim == 256
    if objective == "prototypes":  # frozen prototypes: no adapter, the cosine nearest-centroid head
        assert model.config.adapter_dim == 0 and t["train_steps"] == 0

    # the processor saved next to the model preprocesses like the backbone's eval transform
    proc = AutoImageProcessor.from_pretrained(out / "model")
    pixels = proc(seen["inputs"][:4], return_tensors="pt")["pixel_values"]
    assert torch.allclose(pixels, model.backbone.collate(seen["inputs"][:4])["pixel_values"], atol=1e-4)


def test_partial_tuning_trains_only_the_top_group(digits, tmp_path, monkeypatch):
    out = tmp_path / "partial"
    res, seen = run_and_capture(monkeypatch, "image", _args(digits, out, "prototypes", "partial", "1", "--unfreeze_top_k", "1",
                                                    "--n_way", "5", "--k_shot", "2", "--n_query", "2",
                                                    "--episodes_per_epoch", "4"))
    saved, _ = _check_run(out, res, seen, "prototypes", "partial")
    assert 0.0 <= saved["history"][0]["prototypes/episode_acc"] <= 1.0
    w0, w1 = _initial_backbone(), _saved_backbone(out / "model")
    for frozen in ("conv1.", "bn1.", "layer1.", "layer2.", "layer3."):
        assert _same(w0, w1, frozen), frozen
    assert not _same(w0, w1, "layer4.")


def test_digits_shift_alignment_beats_source_only(digits, tmp_path, monkeypatch):
    """Full tuning from scratch, 4 epochs, epoch chosen on the source validation split:
    source-only transfers poorly to the recoloured target; DANN or MK-MMD does better."""
    acc = {}
    for objective in ("erm", "dann", "mmd"):
        out = tmp_path / objective
        res, seen = run_and_capture(monkeypatch, "image", _args(digits, out, objective, "full", "4", "--save_model",
                                                        "True" if objective == "mmd" else "False"))
        acc[objective] = res["test"]["accuracy"]
        assert len(res["history"]) == 4 and res["validation"]["accuracy"] >= 0.7  # the source task is learnt
    print("target accuracy:", acc)
    assert max(acc["dann"], acc["mmd"]) >= acc["erm"] + 0.1, acc
    # the full-tuned model (batch-norm statistics included) reloads exactly
    _check_run(tmp_path / "mmd", res, seen, "mmd", "full")
    assert not _same(_initial_backbone(), _saved_backbone(tmp_path / "mmd" / "model"), "conv1.")
