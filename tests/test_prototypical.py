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
    PrototypicalLoss,
    class_prototypes,
    episode_targets,
    episodic_accuracy_ci,
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
    loss, acc = PrototypicalLoss()(sz, sy, qz, qy)
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
