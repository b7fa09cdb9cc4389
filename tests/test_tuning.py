import pytest

from tltext.backbones import TextBackbone
from tltext.modeling import TltextModel
from tltext.training.tuning import plan_tuning


@pytest.fixture()
def model(minilm_path):
    bb = TextBackbone.from_pretrained(minilm_path)
    return TltextModel.from_backbone(bb, {"a": 0, "b": 1})


def _trainable_groups(bb):
    return [g.name for g in bb.layer_groups() if all(p.requires_grad for p in g.params)]


def test_frozen_trains_head_only(model):
    plan = plan_tuning(model.backbone, [model.adapter, model.classifier], "frozen", 1e-3, 1e-3, 0.01)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    params = {id(p) for g in plan.param_groups for p in g["params"]}
    assert params == {id(p) for p in model.classifier.parameters()}


def test_partial_top_k_sets_requires_grad_exactly(model):
    plan = plan_tuning(model.backbone, [model.classifier], "partial", 1e-4, 1e-3, 0.01, unfreeze_top_k=2)
    assert _trainable_groups(model.backbone) == ["layer.4", "layer.5"]
    frozen = [g for g in model.backbone.layer_groups()[:-2]]
    assert not any(p.requires_grad for g in frozen for p in g.params)
    n_opt = sum(p.numel() for g in plan.param_groups for p in g["params"])
    n_req = sum(p.numel() for p in model.backbone.parameters() if p.requires_grad) + sum(p.numel() for p in model.classifier.parameters())
    assert n_opt == n_req


def test_llrd_learning_rates(model):
    plan = plan_tuning(model.backbone, [model.classifier], "partial", 1e-4, 1e-3, 0.01, unfreeze_top_k=3,
                       layerwise_lr_decay=0.9)
    lrs = {g["name"]: g["lr"] for g in plan.param_groups}
    assert lrs["layer.5"] == pytest.approx(1e-4)
    assert lrs["layer.4"] == pytest.approx(1e-4 * 0.9)
    assert lrs["layer.3"] == pytest.approx(1e-4 * 0.81)
    assert lrs["head"] == pytest.approx(1e-3)
    assert "layer.2" not in lrs
    # biases / LayerNorm weights carry no weight decay
    for g in plan.param_groups:
        if g["weight_decay"] == 0.0:
            assert all(p.ndim <= 1 for p in g["params"])


def test_full_with_llrd_reaches_embeddings(model):
    plan = plan_tuning(model.backbone, [model.classifier], "full", 1e-4, 1e-4, 0.0, layerwise_lr_decay=0.5)
    lrs = {g["name"]: g["lr"] for g in plan.param_groups}
    assert lrs["embeddings"] == pytest.approx(1e-4 * 0.5 ** 6)
    assert all(p.requires_grad for p in model.backbone.parameters())


def test_gradual_unfreeze_one_group_per_epoch(model):
    plan = plan_tuning(model.backbone, [model.classifier], "partial", 1e-4, 1e-3, 0.0, unfreeze_top_k=3,
                       gradual_unfreeze=True)
    assert _trainable_groups(model.backbone) == ["layer.5"]
    assert plan.apply_epoch(1)
    assert _trainable_groups(model.backbone) == ["layer.4", "layer.5"]
    plan.apply_epoch(2)
    assert not plan.apply_epoch(5)  # capped at k = 3: nothing changes
    assert _trainable_groups(model.backbone) == ["layer.3", "layer.4", "layer.5"]


def test_bad_unfreeze_top_k_names_groups(model):
    with pytest.raises(ValueError, match=r"--unfreeze_top_k 9 is out of range: this backbone has 7 layer groups"):
        plan_tuning(model.backbone, [model.classifier], "partial", 1e-4, 1e-3, 0.0, unfreeze_top_k=9)


def test_objective_parts_get_their_own_learning_rate_group(model):
    from tltext.objectives.dann import DomainAdversarialLoss

    disc = DomainAdversarialLoss(model.feature_dim)
    plan = plan_tuning(model.backbone, [model.classifier], "partial", 5e-5, 5e-5, 0.01, unfreeze_top_k=1,
                       objective_modules=[disc], objective_lr=5e-4)
    groups = {}
    for g in plan.param_groups:
        groups.setdefault(g["name"], set()).update(id(p) for p in g["params"])
        assert g["lr"] == pytest.approx({"objective": 5e-4}.get(g["name"], 5e-5))
    assert groups["objective"] == {id(p) for p in disc.parameters()}
    assert groups["head"] == {id(p) for p in model.classifier.parameters()}
    # no objective_lr: the objective's parts learn at the head's rate
    plan = plan_tuning(model.backbone, [model.classifier], "partial", 5e-5, 1e-3, 0.0, objective_modules=[disc])
    assert {g["lr"] for g in plan.param_groups if g["name"] == "objective"} == {1e-3}
