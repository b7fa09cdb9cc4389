"""Speech backbone: wav2vec 2.0 / HuBERT / WavLM / data2vec-audio encoders
(any Hugging Face ``AutoModel`` with a CNN feature encoder + transformer).

Pipeline (Baevski et al. 2020, "wav2vec 2.0", arXiv:2006.11477):

    waveform x (16 kHz) --CNN feature encoder--> frames (20 ms for the standard stack)
        --feature projection + conv. positional embedding--> transformer layers 1..L --> h_1..h_T

The waveform attention mask m (1 = real sample) is downsampled through the CNN
(length n -> floor((n - k_i) / s_i) + 1 per conv layer i) to a frame mask, and
the embedding is the masked mean  z = sum_t m_t h_t / sum_t m_t, so padding in a
batch never changes a clip's embedding. (Exceptions, from the models themselves:
group-norm CNNs of wav2vec2-base style checkpoints, whose feature extractor has
``return_attention_mask=False`` and which are run without a mask, and
data2vec-audio's stack of positional convolutions, which carries padding into
the last few frames of a clip.)

``layer_weighting=True`` uses the SUPERB weighted sum of all hidden states
(Yang et al. 2021, "SUPERB", arXiv:2105.01051):  h_t = sum_l softmax(w)_l h_t^(l),
l = 0 (input of layer 1) .. L (encoder output), with w a learnable vector (init 0).

Models can be loaded (local folder / Hub id) or built with random weights from a
config JSON or a preset (``model_config``):

    tiny : wav2vec2, hidden 64, 2 layers, 2 heads, FFN 128, 4 conv layers of 32
           channels (kernels 10,8,4,4, strides 5,4,4,4: 20 ms frames, receptive
           field 345 samples); fast on a CPU, for tests and smoke runs.
    small: wav2vec2, hidden 256, 4 layers, 4 heads, FFN 1024, the standard 7-layer
           conv stack (kernels 10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2) with 128 channels.

Presets use layer-normalised conv layers and a pre-LN transformer
(``feat_extract_norm="layer"``, ``do_stable_layer_norm=True``) so attention masks
are exact, and switch SpecAugment and LayerDrop off (``mask_time_prob=0``,
``layerdrop=0``) so training is repeatable; pass ``mask_time_prob=`` to change it.
Loaded models and config files keep their own values unless ``mask_time_prob`` is
given.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor

from . import register_backbone
from .base import Backbone, LayerGroup, length_split
from .pooling import POOLINGS, pool

PRESETS: Dict[str, Dict[str, Any]] = {
    "tiny": dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        conv_dim=(32, 32, 32, 32), conv_kernel=(10, 8, 4, 4), conv_stride=(5, 4, 4, 4),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    ),
    "small": dict(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
        conv_dim=(128,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
        num_conv_pos_embeddings=64, num_conv_pos_embedding_groups=16,
    ),
}
_PRESET_COMMON = dict(feat_extract_norm="layer", do_stable_layer_norm=True, mask_time_prob=0.0,
                      mask_feature_prob=0.0, layerdrop=0.0, vocab_size=32)


def default_feature_extractor(sampling_rate: int = 16000, return_attention_mask: bool = True) -> Wav2Vec2FeatureExtractor:
    """Per-utterance zero-mean unit-variance normalisation, padding with 0."""
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=sampling_rate, padding_value=0.0,
                                    do_normalize=True, return_attention_mask=return_attention_mask)


def build_encoder_config(model_config: str, mask_time_prob: Optional[float] = None):
    """A preset name ("tiny", "small") or a config JSON file / folder -> encoder config."""
    if model_config in PRESETS:
        config = Wav2Vec2Config(**{**_PRESET_COMMON, **PRESETS[model_config]})
    elif os.path.exists(model_config):
        config = AutoConfig.from_pretrained(model_config)
    else:
        raise ValueError(f"model_config {model_config!r}: not a preset {sorted(PRESETS)} and no such config file")
    if mask_time_prob is not None:
        config.mask_time_prob = float(mask_time_prob)
    return config


def _clean_config(config) -> Dict[str, Any]:
    d = config.to_dict()
    for k in ("architectures", "_name_or_path", "transformers_version", "torch_dtype", "dtype", "id2label", "label2id"):
        d.pop(k, None)
    return dict(sorted(d.items()))  # canonical order: stable fingerprints across save/reload


class SpeechBackbone(Backbone):
    """Self-supervised speech encoder + masked mean pooling over frames.

    Layer groups, bottom -> top (every parameter in exactly one):
      ``feature_encoder``    the CNN on the raw waveform;
      ``feature_projection`` LayerNorm + linear into the transformer width, the
                             SpecAugment mask vector ``masked_spec_embed`` (it replaces
                             projected frames), the convolutional positional embedding
                             and, for post-LN models (wav2vec2-base style), the encoder
                             LayerNorm applied before layer 1;
      ``layer.0`` .. ``layer.{L-1}`` the transformer blocks in order;
      ``final``              the encoder LayerNorm of pre-LN models (applied after the
                             last layer), an adapter if present, and the SUPERB layer
                             weights when ``layer_weighting`` (they act on the top).
    """

    modality = "speech"

    def __init__(self, encoder: nn.Module, feature_extractor, pooling: str = "mean", layer_weighting: bool = False,
                 freeze_feature_encoder: bool = False, max_duration_seconds: Optional[float] = None,
                 name_or_path: str = "", pretrained_weights_loaded: bool = True,
                 speed_perturbation: Optional[Sequence[float]] = None, noise_snr_db: Optional[Sequence[float]] = None):
        super().__init__()
        self.set_augmentation(speed_perturbation, noise_snr_db)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if max_duration_seconds is not None and not max_duration_seconds > 0:
            raise ValueError(f"max_duration_seconds must be > 0, got {max_duration_seconds!r}")
        for attr in ("feature_extractor", "feature_projection", "encoder", "_get_feature_vector_attention_mask"):
            if not hasattr(encoder, attr):
                raise ValueError(f"{type(encoder).__name__} is not a wav2vec2-style speech encoder (no {attr})")
        if layer_weighting and getattr(encoder, "adapter", None) is not None:
            raise ValueError("layer_weighting is not supported for encoders with an adapter (add_adapter=True)")
        self.encoder = encoder
        self.feature_extractor = feature_extractor
        self.pooling = pooling
        self.layer_weighting = bool(layer_weighting)
        self.max_duration_seconds = max_duration_seconds
        self.name_or_path = name_or_path
        self.pretrained_weights_loaded = bool(pretrained_weights_loaded)
        # wav2vec2-base style models (group-norm CNN) were trained without masks:
        # their feature extractor says so, and they only see zero padding.
        self._pass_mask = bool(getattr(feature_extractor, "return_attention_mask", True))
        # the engine encodes source and target batches as separate passes (each padded to its own
        # longest clip) only where padding never changes an embedding: a masked layer-norm CNN
        self.padding_invariant = self._pass_mask and getattr(encoder.config, "model_type", "") != "data2vec-audio"
        if self.layer_weighting:
            self.layer_weights = nn.Parameter(torch.zeros(self.num_layers + 1))
        self.feature_encoder_frozen = False
        if freeze_feature_encoder:
            self.freeze_feature_encoder()

    def set_augmentation(self, speed_perturbation: Optional[Sequence[float]] = None,
                         noise_snr_db: Optional[Sequence[float]] = None) -> None:
        """Training-time waveform augmentation (applied by ``collate(train=True)`` only).

        ``speed_perturbation``: factors f > 0, one drawn per clip; the clip is resampled so
        it plays f times faster (Ko et al., "Audio Augmentation for Speech Recognition",
        Interspeech 2015; ``torchaudio.functional.speed``). ``noise_snr_db``: ``(low, high)``
        in dB; white Gaussian noise at an SNR drawn uniformly from it
        (``torchaudio.functional.add_noise``). Raises ValueError naming the flag."""
        speeds = tuple(float(f) for f in speed_perturbation or ())
        if any(not 0.5 <= f <= 2.0 for f in speeds):
            raise ValueError(f"--speed_perturbation {' '.join(f'{f:g}' for f in speeds)}: expected factors in "
                             "[0.5, 2] (e.g. 0.9 1.0 1.1)")
        snr = tuple(float(v) for v in noise_snr_db or ())
        if snr and (len(snr) != 2 or not all(math.isfinite(v) for v in snr) or snr[0] > snr[1]):
            raise ValueError(f"--noise_snr_db {' '.join(f'{v:g}' for v in snr)}: expected two finite values LOW HIGH "
                             "in dB with LOW <= HIGH (e.g. 10 40)")
        self.speed_perturbation, self.noise_snr_db = speeds, snr or None

    def _augment(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One training clip through speed perturbation, then additive noise (see ``set_augmentation``)."""
        import torchaudio.functional as AF

        wave = torch.from_numpy(x)[None]
        if self.speed_perturbation:
            f = float(self.speed_perturbation[int(rng.integers(len(self.speed_perturbation)))])
            if f != 1.0:
                wave = AF.speed(wave, self.sampling_rate, f)[0]
        if self.noise_snr_db and wave.abs().max() > 0:
            snr = torch.tensor([rng.uniform(*self.noise_snr_db)], dtype=torch.float32)
            noise = torch.from_numpy(rng.standard_normal(wave.shape[-1]).astype(np.float32))[None]
            wave = AF.add_noise(wave, noise, snr)
        return wave[0].numpy().astype(np.float32)

    def set_mask_time_prob(self, p: float) -> None:
        """SpecAugment time masking in training (the encoder's ``mask_time_prob``); creates the
        learned mask vector ``masked_spec_embed`` (uniform init, as transformers does) when the
        model was built without one. Raises ValueError unless 0 <= p < 1."""
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"--mask_time_prob {p}: expected a probability in [0, 1)")
        self.encoder.config.mask_time_prob = float(p)
        self.encoder.config.apply_spec_augment = True
        if p > 0 and getattr(self.encoder, "masked_spec_embed", None) is None:
            self.encoder.masked_spec_embed = nn.Parameter(torch.empty(self.encoder.config.hidden_size).uniform_())

    def check_spec_augment(self) -> None:
        """Raise a one-line ValueError when SpecAugment time masking cannot fit a span into the
        longest clip a batch may hold (``max_duration_seconds``): transformers would stop
        mid-training with "`mask_length` has to be smaller than `sequence_length`"."""
        cfg = self.encoder.config
        p, span = float(getattr(cfg, "mask_time_prob", 0.0) or 0.0), int(getattr(cfg, "mask_time_length", 1) or 1)
        if p <= 0 or not getattr(cfg, "apply_spec_augment", True) or self.max_duration_seconds is None:
            return
        n = int(round(self.max_duration_seconds * self.sampling_rate))
        frames = int(self.encoder._get_feat_extract_output_lengths(torch.tensor(max(n, self.min_samples))))
        if frames <= span:
            raise ValueError(f"--mask_time_prob {p:g}: a masked span is {span} frames (the model's mask_time_length) but "
                             f"--max_duration_seconds {self.max_duration_seconds:g} gives clips of {frames}; "
                             "lengthen the clips or set --mask_time_prob 0")

    # construction -----------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str, pooling: str = "mean", layer_weighting: bool = False,
                        freeze_feature_encoder: bool = False, max_duration_seconds: Optional[float] = None,
                        model_config: Optional[str] = None, mask_time_prob: Optional[float] = None,
                        speed_perturbation: Optional[Sequence[float]] = None,
                        noise_snr_db: Optional[Sequence[float]] = None, **_: Any) -> "SpeechBackbone":
        """Load ``name_or_path`` (folder or Hub id), or build random weights from
        ``model_config`` (a preset name or a config JSON; ``name_or_path`` is then
        only recorded, and ``pretrained_weights_loaded`` is False).

        ``max_duration_seconds`` has no model limit to check: wav2vec2-style encoders
        use convolutional (or relative) positions, so any clip length fits."""
        if mask_time_prob is not None and not 0.0 <= float(mask_time_prob) < 1.0:
            raise ValueError(f"--mask_time_prob {mask_time_prob}: expected a probability in [0, 1)")
        if model_config is not None:
            config = build_encoder_config(model_config, mask_time_prob)
            encoder = AutoModel.from_config(config)
            fe = default_feature_extractor(return_attention_mask=getattr(config, "feat_extract_norm", "layer") == "layer")
            name = name_or_path or f"config:{model_config}"
        else:
            kw = {} if mask_time_prob is None else {"mask_time_prob": float(mask_time_prob)}
            encoder = AutoModel.from_pretrained(name_or_path, **kw)
            fe = AutoFeatureExtractor.from_pretrained(name_or_path)
            name = name_or_path
        return cls(encoder, fe, pooling=pooling, layer_weighting=layer_weighting,
                   freeze_feature_encoder=freeze_feature_encoder, max_duration_seconds=max_duration_seconds,
                   name_or_path=name, pretrained_weights_loaded=model_config is None,
                   speed_perturbation=speed_perturbation, noise_snr_db=noise_snr_db)

    def config_dict(self) -> Dict[str, Any]:
        return {
            "type": "speech",
            "name_or_path": self.name_or_path,
            "pooling": self.pooling,
            "layer_weighting": self.layer_weighting,
            "freeze_feature_encoder": self.feature_encoder_frozen,
            "max_duration_seconds": self.max_duration_seconds,
            "speed_perturbation": list(self.speed_perturbation),  # training only; recorded for the card
            "noise_snr_db": None if self.noise_snr_db is None else list(self.noise_snr_db),
            "encoder": _clean_config(self.encoder.config),
            "feature_extractor": dict(sorted(self.feature_extractor.to_dict().items())),
        }

    @classmethod
    def from_config_dict(cls, cfg: Dict[str, Any], preprocessor_dir: str | None = None) -> "SpeechBackbone":
        enc_cfg = dict(cfg["encoder"])
        config = AutoConfig.for_model(enc_cfg.pop("model_type"), **enc_cfg)
        encoder = AutoModel.from_config(config)
        if preprocessor_dir and os.path.exists(os.path.join(preprocessor_dir, "preprocessor_config.json")):
            fe = AutoFeatureExtractor.from_pretrained(preprocessor_dir)
        elif cfg.get("feature_extractor"):
            fe = Wav2Vec2FeatureExtractor.from_dict(dict(cfg["feature_extractor"]))
        else:
            fe = default_feature_extractor()
        return cls(encoder, fe, pooling=cfg.get("pooling", "mean"), layer_weighting=cfg.get("layer_weighting", False),
                   freeze_feature_encoder=cfg.get("freeze_feature_encoder", False),
                   max_duration_seconds=cfg.get("max_duration_seconds"), name_or_path=cfg.get("name_or_path", ""),
                   speed_perturbation=cfg.get("speed_perturbation"), noise_snr_db=cfg.get("noise_snr_db"))

    def save_preprocessor(self, directory: str) -> None:
        self.feature_extractor.save_pretrained(directory)

    # interface --------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return len(self.encoder.encoder.layers)

    @property
    def sampling_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    @property
    def min_samples(self) -> int:
        """Receptive field of one output frame: the shortest input the CNN accepts."""
        need = 1
        for k, s in reversed(list(zip(self.encoder.config.conv_kernel, self.encoder.config.conv_stride))):
            need = (need - 1) * s + k
        return int(need)

    def frame_mask(self, attention_mask: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Waveform mask ``[B, N]`` -> frame mask ``[B, T]`` (bool) via the CNN lengths."""
        return self.encoder._get_feature_vector_attention_mask(num_frames, attention_mask.long())

    def forward(self, input_values: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                **_: torch.Tensor) -> torch.Tensor:
        """``input_values`` ``[B, N]`` waveforms (+ ``attention_mask`` ``[B, N]``) -> pooled
        ``[B, H]``. A padding-invariant encoder runs a batch whose clip lengths differ a lot
        (``length_split``) as two passes, each cropped to its own longest clip: the same
        embeddings (up to float rounding) for less padded compute."""
        if attention_mask is not None and self.padding_invariant and input_values.shape[0] > 1:
            lengths = attention_mask.sum(dim=1)
            chunks = length_split(lengths)
            if len(chunks) > 1:
                out = None
                for rows in chunks:
                    n = max(int(lengths[rows].max()), self.min_samples)
                    z = self._forward(input_values[rows, :n], attention_mask[rows, :n])
                    out = z.new_empty((input_values.shape[0], z.shape[1])) if out is None else out
                    out = out.index_copy(0, rows, z)
                return out
        return self._forward(input_values, attention_mask)

    def _forward(self, input_values: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        kwargs: Dict[str, Any] = {}
        if attention_mask is not None and self._pass_mask:
            kwargs["attention_mask"] = attention_mask
        if self.layer_weighting:
            out = self.encoder(input_values, output_hidden_states=True, **kwargs)
            # the last entry is the encoder output (after the final LayerNorm of pre-LN models)
            states = list(out.hidden_states[:-1]) + [out.last_hidden_state]
            w = torch.softmax(self.layer_weights, dim=0).to(states[0].dtype)
            hidden = (w.view(-1, 1, 1, 1) * torch.stack(states, dim=0)).sum(dim=0)
        else:
            hidden = self.encoder(input_values, **kwargs).last_hidden_state
        mask = None if attention_mask is None else self.frame_mask(attention_mask, hidden.shape[1])
        return pool(hidden, mask, self.pooling)

    def collate(self, inputs: Sequence[Any], train: bool = False) -> Dict[str, torch.Tensor]:
        """Waveforms (1-D float arrays at ``sampling_rate``) -> padded ``input_values``
        + ``attention_mask``. When ``train``, clips are first augmented (``set_augmentation``).
        Clips longer than ``max_duration_seconds`` are cropped
        (random window when ``train``, centred otherwise; the window comes from a
        generator seeded from torch's global RNG, so ``torch.manual_seed`` repeats
        it). Clips shorter than the CNN receptive field are zero-padded to it."""
        if len(inputs) == 0:
            raise ValueError("collate got an empty batch")
        max_len = None if self.max_duration_seconds is None else max(
            self.min_samples, int(round(self.max_duration_seconds * self.sampling_rate)))
        rng = None
        augment = train and bool(self.speed_perturbation or self.noise_snr_db)
        if train and (max_len is not None or augment):
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))
        waves: List[np.ndarray] = []
        for i, x in enumerate(inputs):
            x = np.asarray(x, dtype=np.float32)
            if x.ndim != 1 or x.size == 0:
                raise ValueError(f"waveform {i}: expected a non-empty 1-D array, got shape {x.shape}")
            if augment:
                x = self._augment(x, rng)
            if max_len is not None and len(x) > max_len:
                start = int(rng.integers(0, len(x) - max_len + 1)) if rng is not None else (len(x) - max_len) // 2
                x = x[start:start + max_len]
            if len(x) < self.min_samples:
                x = np.pad(x, (0, self.min_samples - len(x)))
            waves.append(x)
        enc = self.feature_extractor(waves, sampling_rate=self.sampling_rate, padding=True,
                                     return_attention_mask=True, return_tensors="pt")
        return {"input_values": enc["input_values"].float(), "attention_mask": enc["attention_mask"].long()}

    def length(self, raw: Any) -> int:
        return len(raw)

    def freeze_feature_encoder(self) -> None:
        """Fix the CNN feature encoder (common when fine-tuning wav2vec 2.0)."""
        for p in self.encoder.feature_extractor.parameters():
            p.requires_grad_(False)
        self.feature_encoder_frozen = True

    def always_frozen(self) -> List[nn.Parameter]:
        """Parameters no tuning may train (the CNN when --freeze_feature_encoder)."""
        return list(self.encoder.feature_extractor.parameters()) if self.feature_encoder_frozen else []

    def set_layerdrop(self, value: float) -> None:
        """LayerDrop probability of the transformer (0 keeps every layer in every step)."""
        self.encoder.config.layerdrop = float(value)
        for mod in self.encoder.modules():
            if isinstance(getattr(mod, "layerdrop", None), float):
                mod.layerdrop = float(value)

    def layer_groups(self) -> List[LayerGroup]:
        enc = self.encoder
        stable = bool(getattr(enc.config, "do_stable_layer_norm", False))
        layers = enc.encoder.layers
        layer_of = {id(p): i for i, layer in enumerate(layers) for p in layer.parameters()}
        cnn = {id(p) for p in enc.feature_extractor.parameters()}
        final_ids = set()
        if stable and getattr(enc.encoder, "layer_norm", None) is not None:
            final_ids |= {id(p) for p in enc.encoder.layer_norm.parameters()}
        if getattr(enc, "adapter", None) is not None:
            final_ids |= {id(p) for p in enc.adapter.parameters()}
        groups: List[List[nn.Parameter]] = [[] for _ in range(len(layers) + 3)]
        for p in enc.parameters():
            if id(p) in cnn:
                groups[0].append(p)
            elif id(p) in layer_of:
                groups[layer_of[id(p)] + 2].append(p)
            elif id(p) in final_ids:
                groups[-1].append(p)
            else:  # feature projection, masked_spec_embed, positional conv, post-LN input norm
                groups[1].append(p)
        if self.layer_weighting:
            groups[-1].append(self.layer_weights)
        names = ["feature_encoder", "feature_projection"] + [f"layer.{i}" for i in range(len(layers))] + ["final"]
        return [LayerGroup(n, g) for n, g in zip(names, groups) if g]


register_backbone("speech", SpeechBackbone)

__all__ = ["SpeechBackbone", "PRESETS", "build_encoder_config", "default_feature_extractor"]
