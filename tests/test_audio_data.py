"""Audio loading: decoding, mono mix, resampling, bad files, and the three
sources (manifest, class folders, datasets) on real FSDD / Speech Commands clips."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from tltext.data import DataError
from tltext.data.audio import load_audio_examples, load_waveform


@pytest.fixture(scope="module")
def fsdd(data_dir):
    return data_dir / "fsdd"


def _rec(fsdd, name: str) -> str:
    return str(fsdd / "recordings" / name)


def test_native_rate_is_the_file_itself(fsdd):
    path = _rec(fsdd, "4_jackson_20.wav")
    raw, sr = sf.read(path, dtype="float32")
    assert sr == 8000
    x = load_waveform(path, 8000)
    assert x.dtype == np.float32 and x.ndim == 1
    np.testing.assert_array_equal(x, raw)


def test_8k_to_16k_keeps_duration_and_content(fsdd, tmp_path):
    path = _rec(fsdd, "4_jackson_20.wav")
    n8 = sf.info(path).frames
    x = load_waveform(path, 16000)
    assert len(x) == 2 * n8  # same duration: n / 8000 s == 2n / 16000 s
    assert abs(np.sqrt(np.mean(x**2)) - np.sqrt(np.mean(sf.read(path)[0] ** 2))) < 0.05 * np.sqrt(np.mean(x**2))
    # a 440 Hz tone written at 8 kHz matches the same tone synthesised at 16 kHz
    t8, t16 = np.arange(8000) / 8000, np.arange(16000) / 16000
    sf.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t8), 8000, subtype="FLOAT")
    y = load_waveform(str(tmp_path / "tone.wav"), 16000)
    want = 0.5 * np.sin(2 * np.pi * 440 * t16)
    assert len(y) == 16000
    assert np.abs(y[400:-400] - want[400:-400]).max() < 0.01  # away from the edges


def test_16k_to_8k(data_dir):
    path = str(data_dir / "speech_commands_mini" / "bed" / "62581901_nohash_0.wav")
    info = sf.info(path)
    assert info.samplerate == 16000
    assert len(load_waveform(path, 8000)) == info.frames // 2


def test_stereo_is_mixed_to_mono(fsdd, tmp_path):
    left = load_waveform(_rec(fsdd, "1_george_10.wav"), 8000)
    right = 0.3 * np.sin(np.arange(len(left)) / 7.0).astype(np.float32)
    for ext, subtype in ((".wav", "FLOAT"), (".flac", "PCM_24")):
        p = tmp_path / f"stereo{ext}"
        sf.write(p, np.stack([left, right], axis=1), 8000, subtype=subtype)
        assert sf.info(p).channels == 2
        x = load_waveform(str(p), 8000)
        assert x.shape == left.shape
        np.testing.assert_allclose(x, (left + right) / 2, atol=1e-6 if subtype == "FLOAT" else 1e-5)


def test_bad_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros(0, dtype=np.float32), 16000)
    assert zero.stat().st_size > 0  # a valid header with no frames
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + bytes(range(7)))
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    cases = {
        tmp_path / "missing.wav": "not found",
        empty: "empty",
        zero: "no audio frames",
        corrupt: "cannot decode",
        text: "cannot decode",
        tmp_path: "is a folder",
    }
    for path, why in cases.items():
        with pytest.raises(DataError) as e:
            load_waveform(str(path), 16000)
        msg = str(e.value)
        assert msg.startswith(str(path)) and why in msg and "expected" in msg, msg
        assert "\n" not in msg


def test_fsdd_manifest_with_speaker_filter(fsdd):
    ex = load_audio_examples(str(fsdd / "manifest.csv"), audio_column="path", label_column="digit",
                             filter={"speaker": ["george", "jackson"], "split": "test"})
    assert len(ex) == 2 * 10 * 5  # 2 speakers x 10 digits x takes 0-4
    assert sorted(set(ex.labels)) == list(range(10))
    assert set(ex.extra["columns"]["speaker"]) == {"george", "jackson"}
    assert set(ex.extra["columns"]["split"]) == {"test"}
    for x, n, p in zip(ex.inputs, ex.extra["columns"]["num_samples"], ex.extra["paths"]):
        assert x.dtype == np.float32 and x.ndim == 1 and len(x) == 2 * n  # 8 kHz -> 16 kHz
        assert os.path.isabs(p) and p.startswith(str(fsdd))
    # the same rows through the folder (it holds the manifest), integer filter values as strings
    ex2 = load_audio_examples(str(fsdd), audio_column="path", label_column="digit", sampling_rate=8000,
                              filter={"speaker": "george", "split": "test", "digit": ["3", "4"]})
    assert len(ex2) == 10 and set(ex2.labels) == {3, 4}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_manifest_relative_and_absolute_paths(fsdd, tmp_path, fmt):
    import datasets

    names = ["0_theo_7.wav", "1_theo_8.wav", "2_nicolas_9.wav"]
    absolute = [_rec(fsdd, n) for n in names]
    rows = {
        "file": [os.path.relpath(absolute[0], tmp_path), absolute[1], os.path.relpath(absolute[2], tmp_path)],
        "word": ["zero", "one", "two"],
    }
    out = str(tmp_path / f"m.{fmt}")
    ds = datasets.Dataset.from_dict(rows)
    {"csv": ds.to_csv, "jsonl": ds.to_json, "parquet": ds.to_parquet}[fmt](out)
    ex = load_audio_examples(out, audio_column="file", label_column="word", sampling_rate=8000)
    assert ex.labels == ["zero", "one", "two"]
    for x, p in zip(ex.inputs, absolute):
        np.testing.assert_array_equal(x, sf.read(p, dtype="float32")[0])


def test_missing_columns_and_bad_filter(fsdd):
    m = str(fsdd / "manifest.csv")
    with pytest.raises(DataError, match=r"no audio column 'audio'; columns are \['path', 'digit'.*--audio_column"):
        load_audio_examples(m)
    with pytest.raises(DataError, match=r"no label column 'label'; columns are .*'speaker'.*--label_column"):
        load_audio_examples(m, audio_column="path")
    ex = load_audio_examples(m, audio_column="path", require_labels=False, filter={"speaker": "theo", "index": 0})
    assert ex.labels is None and len(ex) == 10
    with pytest.raises(DataError, match="filter column 'gender' not found"):
        load_audio_examples(m, audio_column="path", label_column="digit", filter={"gender": "f"})
    with pytest.raises(DataError, match=r"selects no rows; values present: \['george', 'jackson', 'nicolas', 'theo'\]"):
        load_audio_examples(m, audio_column="path", label_column="digit", filter={"speaker": "bob"})


def test_manifest_sample_rate_must_match_the_file(fsdd, tmp_path):
    path = _rec(fsdd, "5_george_5.wav")
    for rate, why in ((16000, "says 16000 Hz but .*5_george_5.wav is 8000 Hz"), ("fast", "invalid sampling rate 'fast'"),
                      (-8000, "invalid sampling rate -8000")):
        m = tmp_path / "m.jsonl"
        m.write_text(json.dumps({"path": path, "label": "five", "sample_rate": rate}) + "\n")
        with pytest.raises(DataError, match=why) as e:
            load_audio_examples(str(m), audio_column="path")
        assert str(m) in str(e.value) and "row 0" in str(e.value)


def test_bad_file_in_manifest_names_it(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"")
    m = tmp_path / "m.csv"
    m.write_text("path,label\nbad.wav,a\n")
    with pytest.raises(DataError, match=str(tmp_path / "bad.wav") + ": file is empty"):
        load_audio_examples(str(m), audio_column="path")


def test_class_per_folder(data_dir, tmp_path):
    src = data_dir / "speech_commands_mini"
    for word in ("yes", "no"):
        (tmp_path / word).mkdir()
        for f in sorted(os.listdir(src / word))[:3]:
            os.symlink(src / word / f, tmp_path / word / f)
    (tmp_path / "README.txt").write_text("not audio, ignored")
    ex = load_audio_examples(str(tmp_path))
    assert ex.labels == ["no"] * 3 + ["yes"] * 3
    assert all(x.dtype == np.float32 and len(x) <= 16000 for x in ex.inputs)
    only_yes = load_audio_examples(str(tmp_path), filter={"label": "yes"}, sampling_rate=8000)
    assert only_yes.labels == ["yes"] * 3 and all(len(x) <= 8000 for x in only_yes.inputs)
    flat = tmp_path / "yes"
    with pytest.raises(DataError, match="no class sub-folders"):
        load_audio_examples(str(flat))
    assert load_audio_examples(str(flat), require_labels=False).labels is None
    (tmp_path / "void").mkdir()
    with pytest.raises(DataError, match="no audio files"):
        load_audio_examples(str(tmp_path / "void"))


def test_datasets_audio_column(fsdd, tmp_path):
    import datasets

    paths = [_rec(fsdd, n) for n in ("6_theo_1.wav", "8_nicolas_2.wav")]
    ds = datasets.Dataset.from_dict({"audio": paths, "label": [6, 8]}).cast_column("audio", datasets.Audio())
    ds.save_to_disk(str(tmp_path / "saved"))
    ex = load_audio_examples(str(tmp_path / "saved"))
    assert ex.labels == [6, 8]
    for x, p in zip(ex.inputs, paths):
        np.testing.assert_array_equal(x, load_waveform(p, 16000))
    # decoded arrays with their rate
    arr = sf.read(paths[0], dtype="float32")[0]
    datasets.Dataset.from_dict({"audio": [{"array": arr, "sampling_rate": 8000}], "label": [6]}).save_to_disk(
        str(tmp_path / "arrays"))
    np.testing.assert_allclose(load_audio_examples(str(tmp_path / "arrays")).inputs[0],
                               load_waveform(paths[0], 16000), atol=1e-6)
    datasets.Dataset.from_dict({"audio": [{"array": arr}], "label": [6]}).save_to_disk(str(tmp_path / "norate"))
    with pytest.raises(DataError, match="'array' but no 'sampling_rate'"):
        load_audio_examples(str(tmp_path / "norate"))
