"""MiniLM's long texts (issue 12, point 6): a text past its 64-token window is read as several
windows pooled together; short texts embed bit for bit as before, and models from before the
option load truncating."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shared.config import DEFAULT_MODEL_DIR, Settings
from shared.errors import ArtifactError
from shared.ml.cache import EmbeddingCache
from shared.ml.features import text_features
from shared.ml.manifest import EncodersSpec, read_manifest
from shared.ml.predictor import load_encoders
from shared.ml.text_encoder import TextEncoder, window_spans
from shared.ml.train_config import TrainConfig, config_problems

# ~100 word pieces of shop boilerplate: with it in front, the title starts past token 64.
BOILERPLATE = (
    "Free standard shipping on every order over fifty dollars, delivered in three to five business "
    "days. Returns are accepted within thirty days of delivery if the item is unworn, unwashed and "
    "still has its original tags attached; refunds go back to the original payment method within "
    "seven business days. Sizes and colours may vary slightly from the pictures shown. Questions? "
    "Our customer care team answers by email and chat every day from nine in the morning to six in "
    "the evening. "
)
SHORT = ["Nike Men Blue Running Shoes", "Lakme Women Red Lipstick", "short",
         "a much longer product title that needs more padding tokens"]


@pytest.fixture(scope="module")
def truncating() -> TextEncoder:
    return TextEncoder(device="cpu")  # windows=1: the encoder every model before the option has


@pytest.fixture(scope="module")
def windowed() -> TextEncoder:
    return TextEncoder(device="cpu", windows=4)


def test_window_spans() -> None:
    assert window_spans(10, 62, 4) == [(0, 10)]
    assert window_spans(62, 62, 4) == [(0, 62)]
    assert window_spans(200, 62, 1) == [(0, 62)]  # truncation
    assert window_spans(100, 62, 4) == [(0, 62), (62, 100)]  # every piece read once
    assert window_spans(248, 62, 4) == [(0, 62), (62, 124), (124, 186), (186, 248)]
    assert window_spans(1000, 62, 4) == [(0, 62), (62, 124), (124, 186), (938, 1000)]  # head + tail


def test_the_boilerplate_pushes_the_title_past_the_window(truncating: TextEncoder) -> None:
    n = len(truncating.tokenizer(BOILERPLATE, add_special_tokens=False)["input_ids"])
    assert 80 <= n <= 120, n


def test_short_texts_embed_bit_for_bit_as_before(truncating: TextEncoder, windowed: TextEncoder) -> None:
    np.testing.assert_array_equal(windowed.encode(SHORT), truncating.encode(SHORT))
    np.testing.assert_array_equal(windowed.encode(SHORT[:1]), truncating.encode(SHORT[:1]))
    # Beside a long text in one batch (windows padded to 64 tokens, as truncation pads them).
    mixed = [*SHORT, BOILERPLATE + SHORT[1]]
    np.testing.assert_allclose(windowed.encode(mixed)[:4], truncating.encode(mixed)[:4], atol=1e-6)


def test_a_long_text_is_read_past_token_64(truncating: TextEncoder, windowed: TextEncoder) -> None:
    titles = ["Lakme Women Red Lipstick", "Nike Men Black Running Shoes"]
    long = [BOILERPLATE + t for t in titles]
    cut, win, alone = truncating.encode(long), windowed.encode(long), truncating.encode(titles)
    # Truncated, the two titles are never read: both texts embed the same.
    np.testing.assert_allclose(cut[0], cut[1], atol=1e-6)
    assert not np.allclose(win[0], win[1], atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(win, axis=1), 1.0, atol=1e-5)
    for i in (0, 1):
        assert win[i] @ alone[i] > cut[i] @ alone[i] + 0.1  # closer to the decisive words
        assert win[i] @ alone[i] > win[i] @ alone[1 - i]  # and to its own title than the other


def test_batching_does_not_change_long_embeddings(windowed: TextEncoder) -> None:
    texts = [BOILERPLATE * 5 + "Lakme Women Red Lipstick", "short", BOILERPLATE + "Nike Shoes"]
    together = windowed.encode(texts)
    alone = np.concatenate([windowed.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_the_long_text_mode_is_part_of_the_cache_key(truncating: TextEncoder, windowed: TextEncoder,
                                                     tmp_path: Path) -> None:
    assert truncating.encoder_id == truncating.base_id  # ids of models before the option
    assert windowed.encoder_id == truncating.base_id + "+win4x64"
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    texts = [BOILERPLATE + "Lakme Women Red Lipstick"]
    cut, _ = text_features(truncating, texts, cache)
    win, _ = text_features(windowed, texts, cache)  # not the truncated vector read back
    np.testing.assert_allclose(win, windowed.encode(texts), atol=1e-6)
    assert not np.allclose(win, cut, atol=1e-3)
    cache.close()


def test_lora_tuning_reads_the_windows(windowed: TextEncoder) -> None:
    enc = TextEncoder(device="cpu", windows=4)
    enc.attach_lora({}, trainable=True)
    batch = enc.tokenize([BOILERPLATE + "Lakme Women Red Lipstick", "short"])
    assert batch["owner"].tolist() == [0, 0, 1]
    z = enc.forward(batch)
    assert z.shape == (2, 384)
    z[0].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for n, p in enc.model.named_parameters() if "lora_" in n)


def test_a_manifest_without_the_field_loads_truncating(settings: Settings, tmp_path: Path) -> None:
    doc = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    doc["encoders"]["text"].pop("windows", None)  # as every model before the option wrote it
    (tmp_path / "manifest.json").write_text(json.dumps(doc))
    m = read_manifest(tmp_path)
    assert m.encoders.text.windows == 1
    text, _ = load_encoders(m.encoders, None, settings, m.version)
    assert text.windows == 1 and text.encoder_id == m.encoders.text.id

    doc = m.encoders.model_dump()
    doc["text"].update(windows=4, id=m.encoders.text.base_id + "+win4x64")
    text, _ = load_encoders(EncodersSpec.model_validate(doc), None, settings, m.version)
    assert text.windows == 4
    doc["text"]["id"] = m.encoders.text.base_id  # a windowed manifest whose id says truncation
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        load_encoders(EncodersSpec.model_validate(doc), None, settings, m.version)


def test_new_trainings_truncate_unless_asked(sample_model: Path, sample_tagger) -> None:
    """Truncation stays the default: on the probe, windows dilute a title that comes first
    (docs/MODEL.md, "Long texts"); a windowed manifest loads windowed (above)."""
    assert TrainConfig().text_windows == 1
    assert "text_windows" in config_problems(TrainConfig(text_windows=0))
    text = json.loads((sample_model / "manifest.json").read_text())["encoders"]["text"]
    assert text.get("windows", 1) == 1 and "+win" not in text["id"]
    assert sample_tagger.text_encoder.windows == 1


def test_the_cli_default_and_option(tmp_path: Path, sample_manifest: Path) -> None:
    from typer.testing import CliRunner

    from cli import model as cli_model
    from cli.model import train_config
    from tests.cli.root import root_with

    assert train_config().text_windows == 1
    assert train_config(text_windows=4).text_windows == 4
    res = CliRunner().invoke(root_with(cli_model.register), [
        "train", "--dataset", str(sample_manifest), "--out", str(tmp_path / "m"), "--text-windows", "0"],
        env={"COLUMNS": "80", "TERM": "dumb", "NO_COLOR": "1"})
    assert res.exit_code == 2 and "--text-windows" in res.output, res.output
    assert not (tmp_path / "m").exists()
