"""A synthetic two-domain problem for objective tests, trained through the objective
plug-in API (``ObjectiveSet`` over a ``Step``) exactly as the engine calls it.

Two Gaussian classes in 10-D, labels encoded along e1 (strongly) and e2 (weakly).
The target domain shifts e1 by -3 (and the nuisance dims by +1), so a classifier
leaning on e1 fails there; an adaptation objective should recover target accuracy."""
import torch
from torch import nn

from tltext.objectives import ObjectiveSet, ObjectiveSetup, Step

DIM, BATCH = 10, 64


def make_domain(n, gen, target):
    y = torch.randint(0, 2, (n,), generator=gen)
    sign = y.float() * 2 - 1
    x = torch.randn(n, DIM, generator=gen)
    x[:, 0] += 2.0 * sign
    x[:, 1] += 1.5 * sign
    if target:
        x[:, 0] -= 3.0
        x[:, 2:] += 1.0
    return x, y


class ToyModel(nn.Module):
    """The three pieces a ``Step`` uses: ``encode`` (unused: inputs are embeddings),
    ``features`` and ``classify``."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(DIM, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
        self.head = nn.Linear(16, 2)

    def features(self, x):
        return self.net(x)

    def classify(self, f):
        return self.head(f)


def train(seed: int, spec: str, steps: int = 300, lr: float = 3e-3, args=None):
    """Target test accuracy after ``steps`` of ``spec`` (e.g. "erm", "cdan", "mcc")."""
    gen = torch.Generator().manual_seed(seed)
    xs, ys = make_domain(1000, gen, False)
    xt, _ = make_domain(1000, gen, True)
    xte, yte = make_domain(2000, gen, True)
    torch.manual_seed(seed)
    model = ToyModel()
    obj = ObjectiveSet(spec, ObjectiveSetup(feature_dim=16, num_classes=2, args=args))
    opt = torch.optim.Adam([*model.parameters(), *obj.parameters()], lr=lr)
    logs = []
    for step in range(steps):
        i = torch.randint(0, len(xs), (BATCH,), generator=gen)
        j = torch.randint(0, len(xt), (BATCH,), generator=gen)
        inputs = {"embeddings": torch.cat([xs[i], xt[j]])}
        loss, log = obj(Step(model, inputs, ys[i], BATCH, BATCH, step / steps))
        opt.zero_grad()
        loss.backward()
        opt.step()
        logs.append(log)
    with torch.no_grad():
        acc = (model.classify(model.features(xte)).argmax(1) == yte).float().mean().item()
    return acc, logs
