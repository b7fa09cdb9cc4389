"""Prototypical networks: prototypes, episode loss, linear head, episode sampler."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from tltext.objectives.prototypes import (
    EpisodeSampler,
    Prototypes,
    PrototypicalLoss,
    class_prototypes,
    cosine_prototype_head,
    episode_shape,
    episode_targets,
    episodic_accuracy_ci,
    episodic_evaluation,
    prototype_linear_head,
    split_episode,
    squared_euclidean,
)


def test_class_prototypes_are_class_means():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(12, 5, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 2, 2, 0, 1, 1, 1])
    p = class_prototypes(z, y, 3)
    assert p.shape == (3, 5)
    for c in range(3):
        assert torch.allclose(p[c], z[y == c].mean(0), atol=1e-6)


def test_class_prototypes_missing_class_names_ids():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"class id\(s\) \[1, 3\]"):
        class_prototypes(z, torch.tensor([0, 0, 2, 2]), 4)


def test_squared_euclidean_matches_pairwise():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(7, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    ref = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    assert torch.allclose(squared_euclidean(a, b), ref, atol=1e-12)
    assert squared_euclidean(a, a).diagonal().abs().max() < 1e-12
    assert (squared_euclidean(a, a) >= 0).all()


def test_loss_matches_formula_and_relabels_classes():
    g = torch.Generator().manual_seed(2)
    sz, qz = torch.randn(6, 4, generator=g), torch.randn(9, 4, generator=g)
    sy = torch.tensor([7, 3, 9, 3, 9, 7])  # arbitrary ids -> 3->0, 7->1, 9->2
    qy = torch.tensor([3, 7, 9, 9, 3, 7, 7, 9, 3])
    loss, acc = PrototypicalLoss("sqeuclidean")(sz, sy, qz, qy)
    rel = {3: 0, 7: 1, 9: 2}
    s_rel = torch.tensor([rel[int(v)] for v in sy])
    q_rel = torch.tensor([rel[int(v)] for v in qy])
    protos = torch.stack([sz[s_rel == c].mean(0) for c in range(3)])
    logits = -((qz[:, None] - protos[None]) ** 2).sum(-1)
    assert torch.allclose(loss, F.cross_entropy(logits, q_rel), atol=1e-5)
    assert math.isclose(float(acc), float((logits.argmax(1) == q_rel).float().mean()), abs_tol=1e-7)
    assert not acc.requires_grad


def test_loss_gradients_reach_support_and_query():
    g = torch.Generator().manual_seed(3)
    sz = torch.randn(6, 4, generator=g, requires_grad=True)
    qz = torch.randn(6, 4, generator=g, requires_grad=True)
    sy, qy = episode_targets(3, 2, 2)
    loss, _ = PrototypicalLoss()(sz, sy, qz, qy)
    loss.backward()
    assert sz.grad.abs().sum() > 0 and qz.grad.abs().sum() > 0


def test_loss_rejects_query_class_without_support():
    with pytest.raises(ValueError, match=r"query label\(s\) \[5\]"):
        PrototypicalLoss()(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), torch.randn(2, 2), torch.tensor([1, 5]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_head_ranks_like_nearest_prototype(seed):
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(10, 16, generator=g, dtype=torch.float64) * 2
    q = torch.randn(200, 16, generator=g, dtype=torch.float64) * 2
    W, b = prototype_linear_head(protos)
    assert W.shape == (10, 16) and b.shape == (10,)
    lin = q @ W.t() + b
    neg_d = -squared_euclidean(q, protos)
    assert torch.equal(lin.argmax(1), neg_d.argmax(1))
    assert torch.equal(lin.argsort(1), neg_d.argsort(1))
    assert torch.allclose(lin - q.pow(2).sum(1, keepdim=True), neg_d, atol=1e-9)


def test_episodic_accuracy_ci():
    accs = [0.5, 0.7, 0.6, 0.8, 0.4]
    mean, ci = episodic_accuracy_ci(accs)
    assert math.isclose(mean, 0.6)
    assert math.isclose(ci, 1.96 * np.std(accs, ddof=1) / math.sqrt(5))
    assert episodic_accuracy_ci([0.9, 0.9, 0.9]) == (0.9, 0.0)
    m1, c1 = episodic_accuracy_ci([0.25])
    assert m1 == 0.25 and math.isnan(c1)
    with pytest.raises(ValueError, match="no episode"):
        episodic_accuracy_ci([])


def _labels():
    # 6 classes with 8 items, one with 3 (too few for k+q=5), shuffled order
    labels = [c for c in range(6) for _ in range(8)] + [6] * 3
    rng = np.random.default_rng(0)
    return [labels[i] for i in rng.permutation(len(labels))]


def test_sampler_episode_structure():
    labels = _labels()
    n, k, q = 4, 2, 3
    s = EpisodeSampler(labels, n_way=n, k_shot=k, n_query=q, episodes=25, seed=0)
    assert len(s) == 25 and s.excluded == [6] and s.classes == list(range(6))
    sy, qy = episode_targets(n, k, q)
    eps = list(s)
    assert len(eps) == 25
    for ep in eps:
        assert len(ep) == n * (k + q)
        sup, qry = split_episode(torch.tensor(ep), n, k)
        assert len(set(sup.tolist())) == n * k and len(set(qry.tolist())) == n * q
        assert not set(sup.tolist()) & set(qry.tolist())
        sup_cls = [labels[i] for i in sup.tolist()]
        qry_cls = [labels[i] for i in qry.tolist()]
        order = sup_cls[::k]  # the episode's class order
        assert len(set(order)) == n and 6 not in order
        # support grouped by class, query in the same class order; targets match
        assert sup_cls == [c for c in order for _ in range(k)]
        assert qry_cls == [c for c in order for _ in range(q)]
        assert [order.index(c) for c in sup_cls] == sy.tolist()
        assert [order.index(c) for c in qry_cls] == qy.tolist()
    # the class choice varies across episodes
    assert len({tuple(sorted(labels[i] for i in ep[: n * k : k])) for ep in eps}) > 1


def test_sampler_determinism_per_seed_and_epoch():
    labels = _labels()
    mk = lambda seed: EpisodeSampler(labels, 3, 2, 2, episodes=10, seed=seed)
    a, b = mk(0), mk(0)
    assert list(a) == list(b) == list(a)  # same seed, repeated iteration -> same episodes
    assert list(mk(1)) != list(a)
    e0 = list(a)
    a.set_epoch(1)
    e1 = list(a)
    assert e1 != e0
    b.set_epoch(1)
    assert list(b) == e1
    a.set_epoch(0)
    assert list(a) == e0


def test_sampler_too_few_classes():
    labels = [0] * 5 + [1] * 5 + [2] * 2
    with pytest.raises(ValueError, match=r"only 2 of 3 classes have at least k_shot\+n_query=2\+2=4 items; n_way=3"):
        EpisodeSampler(labels, n_way=3, k_shot=2, n_query=2, episodes=4)
    with pytest.raises(ValueError, match="k_shot must be >= 1"):
        EpisodeSampler(labels, n_way=2, k_shot=0, n_query=2, episodes=4)


def test_sampler_as_dataloader_batch_sampler():
    labels = _labels()
    x = torch.arange(len(labels), dtype=torch.float32).unsqueeze(1)
    ds = TensorDataset(x, torch.tensor(labels))
    s = EpisodeSampler(labels, 3, 1, 2, episodes=4, seed=5)
    batches = list(DataLoader(ds, batch_sampler=s))
    assert len(batches) == 4
    for (bx, by), ep in zip(batches, s):
        assert bx.squeeze(1).long().tolist() == ep
        assert bx.shape[0] == 3 * (1 + 2)


def _clustered(n_classes=12, per_class=20, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_classes, dim, generator=g) * 1.0
    x = centers.repeat_interleave(per_class, 0) + torch.randn(n_classes * per_class, dim, generator=g) * 1.0
    y = torch.arange(n_classes).repeat_interleave(per_class)
    return x, y


def _episodic_loss(model, x, y, sampler, n, k, q):
    crit = PrototypicalLoss()
    sy, qy = episode_targets(n, k, q)
    losses = []
    with torch.no_grad():
        for ep in sampler:
            sup, qry = split_episode(torch.tensor(ep), n, k)
            losses.append(float(crit(model(x[sup]), sy, model(x[qry]), qy)[0]))
    return sum(losses) / len(losses)


def test_episodic_training_lowers_loss():
    torch.manual_seed(0)
    x, y = _clustered()
    n, k, q = 5, 2, 4
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    eval_s = EpisodeSampler(y, n, k, q, episodes=30, seed=123)
    before = _episodic_loss(model, x, y, eval_s, n, k, q)
    train_s = EpisodeSampler(y, n, k, q, episodes=40, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    crit = PrototypicalLoss()
    sy, qy = episode_targets(n, k, q)
    for epoch in range(2):
        train_s.set_epoch(epoch)
        for ep in train_s:
            sup, qry = split_episode(torch.tensor(ep), n, k)
            loss, _ = crit(model(x[sup]), sy, model(x[qry]), qy)
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = _episodic_loss(model, x, y, eval_s, n, k, q)
    assert after < 0.7 * before, (before, after)


# --- cosine prototypes: the default head, episode shapes, frozen = nearest centroid ----------------

def _nearest_centroid(train_x, train_y, x, num_classes):
    """Reference: argmax cosine to the re-normalised mean of each class's unit vectors (as the peers' centroid)."""
    u = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    c = np.stack([u[train_y == k].mean(0) for k in range(num_classes)])
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    xu = x / np.linalg.norm(x, axis=1, keepdims=True)
    return (xu @ c.T).argmax(1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cosine_head_equals_nearest_centroid(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(120, 24)) * rng.uniform(0.2, 5.0, size=(120, 1))  # very different norms
    y = np.arange(120) % 7
    q = rng.normal(size=(500, 24)) * rng.uniform(0.2, 5.0, size=(500, 1))
    W, b = cosine_prototype_head(torch.tensor(x), torch.tensor(y), 7, scale=3.0)
    assert W.shape == (7, 24) and b.shape == (7,) and torch.all(b == 0)
    assert torch.allclose(W.norm(dim=1), torch.full((7,), 3.0), atol=1e-5)
    pred = (torch.tensor(q, dtype=torch.float32) @ W.t() + b).argmax(1).numpy()
    ref = _nearest_centroid(x, y, q, 7)
    assert (pred == ref).mean() == 1.0
    # and the squared euclidean head on the raw vectors disagrees somewhere (the check has teeth)
    We, be = prototype_linear_head(class_prototypes(torch.tensor(x), torch.tensor(y), 7))
    assert ((torch.tensor(q) @ We.t() + be).argmax(1).numpy() != ref).any()


def test_cosine_loss_matches_formula_and_scale():
    g = torch.Generator().manual_seed(4)
    sz, qz = torch.randn(6, 5, generator=g), torch.randn(9, 5, generator=g)
    sy, qy = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 2] * 3)
    loss, acc = PrototypicalLoss("cosine")(sz, sy, qz, qy, scale=7.0)
    u = F.normalize(sz, dim=1)
    c = F.normalize(torch.stack([u[sy == k].mean(0) for k in range(3)]), dim=1)
    logits = 7.0 * F.normalize(qz, dim=1) @ c.t()
    assert torch.allclose(loss, F.cross_entropy(logits, qy), atol=1e-5)
    assert math.isclose(float(acc), float((logits.argmax(1) == qy).float().mean()), abs_tol=1e-7)
    with pytest.raises(ValueError, match="distance must be one of cosine, sqeuclidean; got 'l1'"):
        PrototypicalLoss("l1")


@pytest.mark.parametrize("shots, classes, expected", [(10, 77, (64, 5, 5)), (5, 77, (64, 3, 2)), (10, 20, (20, 5, 5)),
                                                       (2, 5, (5, 1, 1)), (40, 3, (3, 5, 5))])
def test_episode_shape_from_shots(shots, classes, expected):
    labels = [c for c in range(classes) for _ in range(shots)]
    assert episode_shape(labels) == expected


def test_episode_shape_overrides_and_errors():
    labels = [c for c in range(30) for _ in range(10)] + [30]  # one class with a single example
    assert episode_shape(labels) == (30, 5, 5)
    assert episode_shape(labels, n_way=4, k_shot=2) == (4, 2, 8)  # query = m - k_shot
    assert episode_shape(labels, n_query=1) == (30, 5, 1)
    with pytest.raises(ValueError, match=r"episodes need >= 2 classes with >= 2 training examples each; got 1"):
        episode_shape([0, 0, 1])


def test_objective_derives_episodes_from_training_labels():
    from tltext.args import ModelArguments
    from tltext.objectives import ObjectiveSetup

    labels = [c for c in range(8) for _ in range(5)]  # 5 shots
    obj = Prototypes(ObjectiveSetup(feature_dim=4, num_classes=8, tuning="full", args=ModelArguments()))
    assert obj.settings() == {}  # nothing resolved before the sampler is built
    s = obj.batch_sampler(labels, seed=0)
    assert (obj.n_way, obj.k_shot, obj.n_query) == (8, 3, 2) and (s.n_way, s.k_shot, s.n_query) == (8, 3, 2)
    # results.json records these, not the null flags; on a trainable encoder an epoch is one pass: 40 / (8 x 5)
    assert obj.settings() == {"n_way": 8, "k_shot": 3, "n_query": 2, "episodes_per_epoch": 1}
    assert s.description == "8-way 3-shot episodes with 2 queries per class, 1 per epoch" and len(s) == 1
    ep = next(iter(s))
    assert len(ep) == 8 * 5 and len({labels[i] for i in ep}) == 8
    assert obj.log_scale.requires_grad and math.isclose(float(obj.scale.detach()), Prototypes.INIT_SCALE, rel_tol=1e-6)


def test_episodes_per_epoch_default_and_episode_errors_name_the_flags():
    from tltext.objectives.prototypes import FROZEN_EPISODES, episodes_per_epoch

    # BANKING77 at 10 shots: 770 texts, 64-way 5 + 5 episodes -> 2 episodes per epoch; a frozen adapter keeps 100
    assert episodes_per_epoch(770, 64, 5, 5, trains_encoder=True) == 2
    assert episodes_per_epoch(770, 64, 5, 5, trains_encoder=False) == FROZEN_EPISODES == 100
    labels = [c for c in range(8) for _ in range(5)]
    with pytest.raises(ValueError, match=r"^prototypes: episodes of --k_shot 5 \+ --n_query 1 need 6 training examples "
                                         r"per class in at least 2 classes; 0 of 8 classes have them \(smallest class: 5\)$"):
        episode_shape(labels, k_shot=5)
    with pytest.raises(ValueError, match=r"in --n_way 9 classes; 8 of 8 classes have them"):
        episode_shape(labels, n_way=9)
    from tltext.args import ModelArguments
    from tltext.objectives import ObjectiveSetup

    with pytest.raises(ValueError, match=r"^--episodes_per_epoch must be >= 1; got 0$"):
        Prototypes(ObjectiveSetup(feature_dim=4, num_classes=8, tuning="full", args=ModelArguments(episodes_per_epoch=0)))


def test_episodic_evaluation_protocol():
    x, y = _clustered(n_classes=8, per_class=12, dim=16, seed=3)
    r = episodic_evaluation(x, y.tolist(), episodes=20, seed=7)
    assert (r["n_way"], r["k_shot"], r["n_query"], r["episodes"]) == (5, 5, 5, 20)
    assert r["protocol"].startswith("5-way 5-shot, 5 queries per class, 20 episodes") and "cosine" in r["protocol"]
    assert 0.6 < r["accuracy"] <= 1.0 and r["ci95"] >= 0
    # random features: chance level (1/3 for 3-way)
    noise = torch.randn(96, 16, generator=torch.Generator().manual_seed(0))
    r0 = episodic_evaluation(noise, y.tolist(), episodes=200, seed=7, n_way=3, k_shot=2, n_query=4)
    assert abs(r0["accuracy"] - 1 / 3) < 0.08 and r0["n_way"] == 3


def test_frozen_prototypes_without_flags_is_the_cosine_nearest_centroid(tiny_bert_dir, tmp_path, one_thread):
    """--tuning frozen, no adapter, nothing trained: the saved head predicts as the cosine
    nearest centroid of the training embeddings, and reloads as a plain linear head."""
    import json

    import tltext  # noqa: F401  (Auto classes)
    from transformers import AutoModelForSequenceClassification

    from helpers import reviews, write_jsonl
    from tltext.experiment import parse_and_run

    meh = ["so-so product, fine", "it is okay i guess", "average, nothing special", "fine for the price"]
    rows = reviews(n_each=4, pos="positive", neg="negative", repeat=1) + [{"text": t, "label": "meh"} for t in meh]
    write_jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "run"
    res = parse_and_run("text", ["--model_name_or_path", tiny_bert_dir, "--train_file", str(tmp_path / "train.jsonl"),
                                 "--test_file", str(tmp_path / "train.jsonl"), "--objective", "prototypes",
                                 "--tuning", "frozen", "--shots_per_class", "4", "--output_dir", str(out),
                                 "--cache_dir", str(tmp_path / "cache"), "--disable_tqdm", "--report", "False"])
    assert res["timing"]["train_steps"] == 0 and res["history"] == []
    model = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    assert model.config.adapter_dim == 0 and model.feature_dim == 32
    texts = [r["text"] for r in rows]
    with torch.no_grad():
        emb = model.encode(**model.backbone.collate(texts)).numpy()
        logits = model(**model.backbone.collate(texts)).logits
    names = [model.config.id2label[i] for i in range(3)]
    y = np.array([names.index(r["label"]) for r in rows])
    train = json.loads((out / "results.json").read_text())["num_examples"]["train"]
    assert train == 12  # 4 shots x 3 classes, no validation split with --shots_per_class
    # the head's rows are unit centroids (x scale): argmax equals nearest centroid of the 12 shots
    W = model.classifier.weight.detach()
    assert torch.allclose(W.norm(dim=1), W.norm(dim=1)[0].expand(3), atol=1e-4)
    assert torch.all(model.classifier.bias == 0)
    u = F.normalize(torch.tensor(emb), dim=1)
    centroids = F.normalize(torch.stack([u[torch.tensor(y) == k].mean(0) for k in range(3)]), dim=1)
    assert torch.allclose(F.normalize(W, dim=1), centroids, atol=1e-5)
    ref = _nearest_centroid(emb, y, emb, 3)
    assert (logits.argmax(1).numpy() == ref).all()
    assert res["test"]["accuracy"] == pytest.approx(float((logits.argmax(1).numpy() == y).mean()))
