"""Domain adaptation on a synthetic two-domain problem.

Two Gaussian classes in 10-D, labels encoded along e1 (strongly) and e2 (weakly).
The target domain shifts e1 by -3 (and the nuisance dims by +1), so a classifier
leaning on e1 fails there; DANN and MK-MMD make the features domain-invariant,
which pushes the classifier onto e2 and recovers target accuracy.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tltext.objectives.dann import DomainAdversarialLoss, dann_coefficient
from tltext.objectives.mmd import MultipleKernelMMD

from synthetic_da import BATCH, DIM, make_domain

STEPS = 300


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def train(seed, mode):
    """Returns (target test accuracy, discriminator accuracy over the last 30 steps)."""
    gen = torch.Generator().manual_seed(seed)
    xs, ys = make_domain(1000, gen, False)
    xt, _ = make_domain(1000, gen, True)  # unlabelled target
    xte, yte = make_domain(2000, gen, True)
    torch.manual_seed(seed)
    feat = nn.Sequential(nn.Linear(DIM, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
    head = nn.Linear(16, 2)
    adv = DomainAdversarialLoss(16, hidden_dim=32)
    mmd = MultipleKernelMMD()
    opt = torch.optim.Adam([*feat.parameters(), *head.parameters(), *adv.parameters()], lr=3e-3)
    disc_acc = []
    for step in range(STEPS):
        i = torch.randint(0, len(xs), (BATCH,), generator=gen)
        j = torch.randint(0, len(xt), (BATCH,), generator=gen)
        f_s, f_t = feat(xs[i]), feat(xt[j])
        loss = F.cross_entropy(head(f_s), ys[i])
        if mode == "source_only":  # coeff 0: the discriminator learns, the features get no gradient from it
            loss = loss + adv(f_s, f_t, 0.0)
        elif mode == "dann":
            loss = loss + adv(f_s, f_t, dann_coefficient(step / STEPS))
        elif mode == "mmd":
            loss = loss + mmd(f_s, f_t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        disc_acc.append(adv.last_accuracy.item())
    with torch.no_grad():
        target_acc = (head(feat(xte)).argmax(1) == yte).float().mean().item()
    return target_acc, sum(disc_acc[-30:]) / 30


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dann_and_mmd_beat_source_only_on_target(seed):
    src_acc, src_disc = train(seed, "source_only")
    dann_acc, dann_disc = train(seed, "dann")
    mmd_acc, _ = train(seed, "mmd")
    assert src_acc < 0.87, f"the shift should hurt a source-only model, got {src_acc:.3f}"
    assert dann_acc > src_acc + 0.08, (src_acc, dann_acc)
    assert mmd_acc > src_acc + 0.08, (src_acc, mmd_acc)
    assert src_disc > 0.78, f"unadapted features should be easy to tell apart, got {src_disc:.3f}"
    assert dann_disc < 0.7, f"DANN should confuse the discriminator, got {dann_disc:.3f}"
