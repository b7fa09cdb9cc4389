"""SpeechBackbone: frame masks, padding-invariant pooling, layer groups,
freezing, LayerDrop, cropping and save/reload, on tiny random encoders."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoConfig, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from tltext.backbones import backbone_class, backbone_from_config, load_backbone
from tltext.backbones.speech import SpeechBackbone
from tltext.data.audio import load_waveform

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=(16, 16, 16), conv_kernel=(10, 8, 4), conv_stride=(5, 4, 4),
            num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4, mask_time_prob=0.0, layerdrop=0.0)


def _config_file(tmp_path, model_type: str) -> str:
    kw = dict(TINY, feat_extract_norm="layer")
    if model_type != "data2vec-audio":
        kw["do_stable_layer_norm"] = True
    else:  # one positional conv layer: a stack of them lets padding leak (see speech.py)
        kw.update(num_conv_pos_embeddings=1, conv_pos_kernel_size=5)
    d = tmp_path / model_type
    AutoConfig.for_model(model_type, **kw).save_pretrained(d)
    return str(d / "config.json")


@pytest.fixture(scope="module")
def clips(data_dir):
    """Four real FSDD digits of different lengths, at 16 kHz."""
    names = ["3_george_7.wav", "0_jackson_12.wav", "7_nicolas_30.wav", "9_theo_5.wav"]
    return [load_waveform(str(data_dir / "fsdd" / "recordings" / n), 16000) for n in names]


def _tiny(**kw) -> SpeechBackbone:
    torch.manual_seed(0)
    return SpeechBackbone.from_pretrained("", model_config="tiny", **kw).eval()


def test_registry_and_presets():
    assert backbone_class("speech") is SpeechBackbone
    b = load_backbone("speech", "tiny-wav2vec2", model_config="tiny")
    assert b.modality == "speech" and b.hidden_size == 64 and b.num_layers == 2 and b.sampling_rate == 16000
    assert b.encoder.config.mask_time_prob == 0.0 and b.encoder.config.layerdrop == 0.0
    assert not hasattr(b.encoder, "masked_spec_embed")  # SpecAugment off: no mask vector
    small = SpeechBackbone.from_pretrained("", model_config="small")
    assert small.hidden_size == 256 and small.num_layers == 4 and small.min_samples == 400
    with pytest.raises(ValueError, match="not a preset"):
        SpeechBackbone.from_pretrained("", model_config="huge")


@pytest.mark.parametrize("model_type", ["wav2vec2", "hubert", "wavlm", "data2vec-audio"])
def test_frame_mask_matches_encoder_length(tmp_path, model_type):
    torch.manual_seed(0)
    b = SpeechBackbone.from_pretrained("", model_config=_config_file(tmp_path, model_type)).eval()
    assert b.encoder.config.model_type == model_type
    lengths = [b.min_samples, b.min_samples + 79, 1000, 3333, 8000]
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) for n in lengths]
    with torch.no_grad():
        single = [b.encoder(torch.from_numpy(w)[None]).last_hidden_state.shape[1] for w in waves]
        batch = b.collate(waves)
        t_max = b.encoder(batch["input_values"], attention_mask=batch["attention_mask"]).last_hidden_state.shape[1]
    frames = b.frame_mask(batch["attention_mask"], t_max)
    assert frames.shape == (len(lengths), t_max)
    assert frames.sum(1).tolist() == single
    assert b.encoder._get_feat_extract_output_lengths(torch.tensor(lengths)).tolist() == single
    # the mask is a prefix of ones
    for row, n in zip(frames, single):
        assert row[:n].all() and not row[n:].any()
    assert single[0] == 1  # min_samples is exactly one frame's receptive field
    assert b.encoder._get_feat_extract_output_lengths(b.min_samples - 1) == 0


@pytest.mark.parametrize("model_type,layer_weighting", [("wav2vec2", False), ("wav2vec2", True), ("hubert", False),
                                                        ("wavlm", False), ("data2vec-audio", True)])
def test_clip_alone_equals_clip_padded(tmp_path, clips, model_type, layer_weighting):
    torch.manual_seed(0)
    b = SpeechBackbone.from_pretrained("", model_config=_config_file(tmp_path, model_type),
                                       layer_weighting=layer_weighting).eval()
    if layer_weighting:  # non-uniform weights, so every layer matters
        b.layer_weights.data = torch.linspace(-1.0, 1.0, b.num_layers + 1)
    with torch.no_grad():
        batch = b(**b.collate(clips))
        alone = torch.cat([b(**b.collate([c])) for c in clips])
    assert batch.shape == (len(clips), b.hidden_size)
    torch.testing.assert_close(batch, alone, atol=2e-5, rtol=1e-4)
    # padding really is present and ignored: the shorter clips were padded
    assert len({len(c) for c in clips}) == len(clips)
    # the engine encodes DA target batches on their own pass where the backbone says so
    assert b.padding_invariant == (model_type != "data2vec-audio")


def test_length_split_cuts_only_where_it_saves_padding():
    from tltext.backbones.base import length_split

    parts = length_split(torch.tensor([10, 100, 12, 11]))
    assert [p.tolist() for p in parts] == [[1], [0, 2, 3]]  # 4 x 100 -> 100 + 3 x 12 positions
    parts = length_split(torch.tensor([90, 100, 12, 11, 13]))
    assert [p.tolist() for p in parts] == [[0, 1], [2, 3, 4]]
    assert [p.tolist() for p in length_split(torch.tensor([10, 11, 12, 9]))] == [[0, 1, 2, 3]]  # saves < 20 %
    assert [p.tolist() for p in length_split(torch.tensor([7]))] == [[0]]


def test_batch_with_a_long_outlier_runs_as_two_cropped_passes_with_the_same_embeddings(tmp_path, clips):
    torch.manual_seed(0)
    b = SpeechBackbone.from_pretrained("", model_config=_config_file(tmp_path, "wav2vec2"))
    b.train(False)
    long_clip = np.concatenate([clips[0]] * 4)
    waves = [clips[1], long_clip, clips[2], clips[3]]
    widths = []
    hook = b.encoder.register_forward_pre_hook(lambda m, args, kw: widths.append(tuple((args or (kw["input_values"],))[0].shape)),
                                               with_kwargs=True)
    batch = b(**b.collate(waves))
    hook.remove()
    longest_other = max(len(w) for w in waves if w is not long_clip)
    assert widths == [(1, len(long_clip)), (3, longest_other)]  # not one pass of 4 x len(long_clip)
    alone = torch.cat([b(**b.collate([w])) for w in waves])
    torch.testing.assert_close(batch, alone, atol=2e-5, rtol=1e-4)
    # gradients reach the encoder through both passes as through separate clips
    g_batch = torch.autograd.grad(batch.square().sum(), b.encoder.feature_projection.projection.weight)[0]
    alone = torch.cat([b(**b.collate([w])) for w in waves])
    g_alone = torch.autograd.grad(alone.square().sum(), b.encoder.feature_projection.projection.weight)[0]
    torch.testing.assert_close(g_batch, g_alone, atol=1e-4, rtol=1e-3)


def test_unmasked_model_pools_with_downsampled_mask(tmp_path, clips):
    """wav2vec2-base style (group-norm CNN, extractor without masks): the model gets
    no mask, but pooling still averages only the clip's own frames."""
    torch.manual_seed(0)
    cfg = Wav2Vec2Config(**dict(TINY, feat_extract_norm="group", do_stable_layer_norm=False))
    Wav2Vec2Model(cfg).save_pretrained(tmp_path / "m")
    Wav2Vec2FeatureExtractor(return_attention_mask=False, do_normalize=True).save_pretrained(tmp_path / "m")
    b = SpeechBackbone.from_pretrained(str(tmp_path / "m")).eval()
    assert not b.padding_invariant  # group norm over padded time: source and target share one padded pass
    pair = [min(clips, key=len), max(clips, key=len)]
    batch = b.collate(pair)
    with torch.no_grad():
        got = b(**batch)
        h = b.encoder(batch["input_values"]).last_hidden_state
    n = b.encoder._get_feat_extract_output_lengths(batch["attention_mask"].sum(1))
    want = torch.stack([h[i, : n[i]].mean(0) for i in range(2)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert n[0] != n[1]


@pytest.mark.parametrize("model_type", ["wav2vec2", "data2vec-audio"])
@pytest.mark.parametrize("layer_weighting", [False, True])
def test_layer_groups_cover_every_parameter_once(tmp_path, model_type, layer_weighting):
    b = SpeechBackbone.from_pretrained("", model_config=_config_file(tmp_path, model_type),
                                       layer_weighting=layer_weighting, mask_time_prob=0.3)
    groups = b.layer_groups()
    names = [g.name for g in groups]
    assert names == ["feature_encoder", "feature_projection", "layer.0", "layer.1", "final"] or (
        model_type == "data2vec-audio" and not layer_weighting and names[-1] == "layer.1")
    ids = [id(p) for g in groups for p in g.params]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in b.parameters()}
    by_group = {g.name: {id(p) for p in g.params} for g in groups}
    assert {id(p) for p in b.encoder.feature_extractor.parameters()} == by_group["feature_encoder"]
    assert id(b.encoder.masked_spec_embed) in by_group["feature_projection"]
    assert {id(p) for p in b.encoder.encoder.pos_conv_embed.parameters()} <= by_group["feature_projection"]
    norm = {id(p) for p in b.encoder.encoder.layer_norm.parameters()}
    assert norm <= by_group["final" if model_type == "wav2vec2" else "feature_projection"]
    for i, layer in enumerate(b.encoder.encoder.layers):
        assert {id(p) for p in layer.parameters()} == by_group[f"layer.{i}"]
    if layer_weighting:
        assert id(b.layer_weights) in by_group["final"]

    # every parameter shapes the training-mode output (SpecAugment uses masked_spec_embed)
    b.train()
    x = torch.randn(2, 4000)
    np.random.seed(0)
    b(input_values=x, attention_mask=torch.ones(2, 4000, dtype=torch.long)).pow(2).sum().backward()
    missing = [n for n, p in b.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_freeze_feature_encoder_and_layerdrop():
    b = _tiny(freeze_feature_encoder=True)
    cnn = {id(p) for p in b.encoder.feature_extractor.parameters()}
    assert len(cnn) > 0
    for p in b.parameters():
        assert p.requires_grad == (id(p) not in cnn)
    assert b.config_dict()["freeze_feature_encoder"] is True
    assert all(p.requires_grad for p in _tiny().parameters())

    b.train()
    x = torch.randn(2, 3000)
    b.set_layerdrop(1.0)  # every transformer layer skipped
    assert b.encoder.config.layerdrop == 1.0
    b(input_values=x).sum().backward()
    layer_params = list(b.encoder.encoder.layers.parameters())
    assert all(p.grad is None for p in layer_params)
    b.zero_grad(set_to_none=True)
    b.set_layerdrop(0.0)
    b(input_values=x).sum().backward()
    assert all(p.grad is not None for p in layer_params)
    assert all(p.grad is None for p in b.encoder.feature_extractor.parameters())  # frozen


def test_collate_crops_and_pads(clips):
    b = _tiny(max_duration_seconds=0.25)
    long_clip = max(clips, key=len)
    n = 4000
    assert len(long_clip) > n
    # centred crop when not training: the normalised centre window
    out = b.collate([long_clip], train=False)
    start = (len(long_clip) - n) // 2
    want = b.feature_extractor([long_clip[start:start + n]], sampling_rate=16000, return_tensors="pt")["input_values"]
    assert out["input_values"].shape == (1, n)
    torch.testing.assert_close(out["input_values"], want)
    # random crop when training, repeated by the torch seed
    torch.manual_seed(1)
    a = b.collate([long_clip] * 3, train=True)["input_values"]
    torch.manual_seed(1)
    a2 = b.collate([long_clip] * 3, train=True)["input_values"]
    torch.manual_seed(2)
    a3 = b.collate([long_clip] * 3, train=True)["input_values"]
    assert torch.equal(a, a2) and not torch.equal(a, a3)
    assert not (torch.equal(a[0], a[1]) and torch.equal(a[1], a[2]))  # each clip its own window
    # short clips: padded with a 0/1 mask, and a clip below the receptive field is extended
    short = np.ones(100, dtype=np.float32)
    batch = b.collate([clips[0][:2000], short])
    assert batch["attention_mask"].sum(1).tolist() == [2000, b.min_samples]
    assert b.length(clips[0]) == len(clips[0])
    with pytest.raises(ValueError, match="1-D"):
        b.collate([np.zeros((2, 100), dtype=np.float32)])


@pytest.mark.parametrize("layer_weighting", [False, True])
def test_save_and_reload_gives_same_embedding(tmp_path, clips, layer_weighting):
    b = _tiny(layer_weighting=layer_weighting, max_duration_seconds=1.5, freeze_feature_encoder=True)
    if layer_weighting:
        b.layer_weights.data = torch.tensor([0.5, -0.2, 0.1])
    cfg = json.loads(json.dumps(b.config_dict()))  # must survive JSON
    b.save_preprocessor(str(tmp_path))
    assert (tmp_path / "preprocessor_config.json").exists()
    state = b.state_dict()
    for pre_dir in (str(tmp_path), None):
        torch.manual_seed(123)  # different random init, overwritten by the state dict
        r = backbone_from_config(cfg, preprocessor_dir=pre_dir).eval()
        r.load_state_dict(state)
        assert json.loads(json.dumps(r.config_dict())) == cfg and r.fingerprint() == b.fingerprint()
        assert r.feature_encoder_frozen and r.max_duration_seconds == 1.5
        with torch.no_grad():
            torch.testing.assert_close(r(**r.collate(clips)), b(**b.collate(clips)))


def test_from_pretrained_local_dir_matches_model(tmp_path, clips):
    b = _tiny()
    b.encoder.save_pretrained(tmp_path)
    b.save_preprocessor(str(tmp_path))
    r = SpeechBackbone.from_pretrained(str(tmp_path), pooling="mean").eval()
    assert r.name_or_path == str(tmp_path) and r.sampling_rate == 16000
    with torch.no_grad():
        torch.testing.assert_close(r(**r.collate(clips[:2])), b(**b.collate(clips[:2])))


def test_training_augmentation_speed_and_noise(clips):
    """Speed perturbation resamples the clip (f = 1.25: 1/1.25 of the samples); noise at
    SNR 10 dB leaves a residual 10 dB below the clip; evaluation collates are untouched."""
    b = SpeechBackbone.from_pretrained("", model_config="tiny", speed_perturbation=[1.25])
    x = max(clips, key=len)
    torch.manual_seed(0)
    fast = b.collate([x], train=True)
    assert fast["attention_mask"].sum().item() == pytest.approx(len(x) / 1.25, abs=2)
    plain = b.collate([x], train=False)
    assert plain["attention_mask"].sum().item() == len(x)  # eval: no augmentation
    b.set_augmentation(None, [10.0, 10.0])
    torch.manual_seed(0)
    wave = torch.from_numpy(np.asarray(x, dtype=np.float32))
    noisy = b._augment(wave.numpy(), np.random.default_rng(0))
    residual = torch.from_numpy(noisy) - wave
    snr = 10 * torch.log10(wave.pow(2).mean() / residual.pow(2).mean())
    assert snr.item() == pytest.approx(10.0, abs=0.01)
    assert b.config_dict()["noise_snr_db"] == [10.0, 10.0]
    again = backbone_from_config(b.config_dict())
    assert again.noise_snr_db == (10.0, 10.0) and again.speed_perturbation == ()
    with pytest.raises(ValueError, match=r"^--speed_perturbation 0\.9 3: expected factors in \[0\.5, 2\]"):
        b.set_augmentation([0.9, 3.0], None)
    with pytest.raises(ValueError, match=r"^--noise_snr_db 40 10: expected two finite values LOW HIGH"):
        b.set_augmentation(None, [40.0, 10.0])
    with pytest.raises(ValueError, match=r"^--noise_snr_db 10 inf: expected two finite values"):
        b.set_augmentation(None, [10.0, float("inf")])


def test_spec_augment_span_longer_than_the_clips_is_a_flag_error():
    b = SpeechBackbone.from_pretrained("", model_config="tiny", mask_time_prob=0.5, max_duration_seconds=0.1)
    with pytest.raises(ValueError, match=r"^--mask_time_prob 0.5: a masked span is 10 frames .* "
                                         r"--max_duration_seconds 0.1 gives clips of 4"):
        b.check_spec_augment()
    b.max_duration_seconds = 1.0
    b.check_spec_augment()  # 49 frames hold a 10-frame span
