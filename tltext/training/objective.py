"""One ``nn.Module`` per training step: model + the objective's loss module.

Source and target go through the model in ONE forward (one DDP call):

    f = adapter(backbone([x_s; x_t]))        f_s = f[:n_s], f_t = f[n_s:]
    erm:        L = CE(head(f_s), y_s)
    dann:       L = CE + w * BCE(D(GRL_lambda(f)), domain)        (Ganin et al. 2016)
    mmd:        L = CE + w(p) * MK-MMD^2_u(f_s, f_t)              (Long et al. 2015)
    prototypes: L = CE(-||f_q - c_k||^2)  over an episode          (Snell et al. 2017)

For padding-invariant backbones (text) the backbone runs twice inside that call,
once per domain, so neither batch is padded to the other's length.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..modeling import TltextModel


def build_loss_module(objective: str, feature_dim: int, mmd_kernels: int = 5, hidden_dim: int = 256) -> Optional[nn.Module]:
    if objective == "erm":
        return None
    if objective == "dann":
        from ..strategies.dann import DomainAdversarialLoss

        return DomainAdversarialLoss(feature_dim, hidden_dim=hidden_dim)
    if objective == "mmd":
        from ..strategies.mkmmd import MultipleKernelMMD

        return MultipleKernelMMD(num_kernels=mmd_kernels)
    if objective == "prototypes":
        from ..strategies.prototypical import PrototypicalLoss

        return PrototypicalLoss()
    raise ValueError(f"--objective must be one of erm, dann, mmd, prototypes; got {objective!r}")


def da_coefficient(objective: str, progress: float, weight: float, warmup_ratio: float = 0.0) -> float:
    """The weight of the alignment term at training progress p in [0, 1]."""
    if objective == "dann":
        from ..strategies.dann import dann_coefficient

        return dann_coefficient(progress, lambda_max=weight)
    if objective == "mmd":
        if warmup_ratio > 0:
            return weight * min(1.0, progress / warmup_ratio)
        return weight
    return 0.0


class TrainingModule(nn.Module):
    def __init__(self, model: TltextModel, objective: str = "erm", loss_module: Optional[nn.Module] = None,
                 class_weights: Optional[torch.Tensor] = None):
        super().__init__()
        self.model = model
        self.objective = objective
        self.loss_module = loss_module
        if class_weights is not None:
            self.register_buffer("class_weights", class_weights.float(), persistent=False)
        else:
            self.class_weights = None

    def forward(self, inputs: Dict[str, torch.Tensor], labels: torch.Tensor, n_source: int,
                coeff: float = 0.0) -> Dict[str, torch.Tensor]:
        if "embeddings" in inputs:
            emb = inputs["embeddings"]
        elif "parts" in inputs:  # source, target collated apart (padding-invariant backbones)
            emb = torch.cat([self.model.encode(**part) for part in inputs["parts"]])
        else:
            emb = self.model.encode(**inputs)
        feats = self.model.features(emb)
        out: Dict[str, torch.Tensor] = {}
        if self.objective == "prototypes":
            return self._prototypes(feats, labels)
        f_s = feats[:n_source]
        logits = self.model.classify(f_s)
        ce = F.cross_entropy(logits.float(), labels[:n_source], weight=self.class_weights)
        out["ce"] = ce.detach()
        loss = ce
        if self.objective in ("dann", "mmd"):
            f_t = feats[n_source:]
            if self.objective == "dann":
                da = self.loss_module(f_s.float(), f_t.float(), coeff)
                out["disc_acc"] = self.loss_module.last_accuracy.detach()
                loss = loss + da  # the GRL carries lambda; the discriminator learns at full strength
            else:
                da = self.loss_module(f_s.float(), f_t.float())
                loss = loss + coeff * da
            out["da"] = da.detach()
        out["loss"] = loss
        out["logits"] = logits.detach()
        return out

    def _prototypes(self, feats: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        # episode = support (n_way * k_shot) then query; relabel classes 0..N-1
        classes, rel = torch.unique(labels, return_inverse=True)
        n_way = len(classes)
        k_shot = self._k_shot
        n_sup = n_way * k_shot
        loss, acc = self.loss_module(feats[:n_sup].float(), rel[:n_sup], feats[n_sup:].float(), rel[n_sup:])
        return {"loss": loss, "episode_acc": acc.detach() if torch.is_tensor(acc) else torch.tensor(acc)}

    _k_shot = 5
