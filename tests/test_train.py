"""The three training stages, the "-O" baseline, clear errors, and the tiny end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import micro_config, write_photos

from classsr_core.cli import main
from classsr_core.errors import ClassSRError, ConfigError
from classsr_core.model.loading import load_model, read_checkpoint
from classsr_core.training.config import validate_train_config
from classsr_core.training.dataset import PairDataset, Store
from classsr_core.training.trainer import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    return write_photos(root / "train", 3), write_photos(root / "val", 1, size=(48, 64), seed=9)


def _micro(tmp_path, photos, **over):
    return micro_config(tmp_path, photos[0], photos[1], threads=1, **over)


def test_config_typo_and_missing_stage_one_are_clear(tmp_path, photos, capsys):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(
        "model: {widths: [4, 8]}\n"
        f"data: {{train: {photos[0]}}}\n"
        "stages: {branches: {iterations: 2, lrr: 0.1}}\n"
    )
    assert main(["train", str(cfg_path)]) == 2
    err = capsys.readouterr().err
    assert "stages.branches.lrr" in err and "allowed keys here: iterations" in err
    assert main(["train", str(cfg_path), "--set", "stages.branches.lrr"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err

    cfg = _micro(tmp_path, photos)
    with pytest.raises(
        ClassSRError, match=r"branches\.safetensors does not exist.*--stage branches"
    ):
        train(cfg, "classifier", progress=False)
    one = _micro(tmp_path, photos, model={"widths": [8]})
    with pytest.raises(ConfigError, match="one branch"):
        train(one, "joint", progress=False)


def test_single_width_is_the_o_baseline(tmp_path, photos):
    cfg = _micro(tmp_path, photos, model={"widths": [8]})
    trainer = train(cfg, "all", progress=False)
    assert [r.stage for r in trainer.results] == ["branches"]
    assert not (cfg.store_dir / "labels.npy").exists()  # no classes needed
    model = load_model(cfg.out_dir / "branches.safetensors")
    assert model.num_classes == 1 and model.classifier is None
    _, meta = read_checkpoint(cfg.out_dir / "model.safetensors")
    assert meta["stage"] == "branches" and meta["iteration"] == 6 and meta["complete"]
    assert meta["config"]["model"]["widths"] == [8]
    assert meta["val"]["class_ratios"] == [1.0] and meta["val"]["val_images"] == 1
    assert 0 < meta["val"]["val_psnr"] < 60 and 0 < meta["val"]["val_ssim"] <= 1


def test_a_parameter_free_branch_is_skipped_in_stage_one(tmp_path, photos, capsys):
    cfg = _micro(
        tmp_path,
        photos,
        model={"widths": [0, 8], "backbone_kwargs": {"m": 1, "skip": "bicubic"}},
        divide={"ratios": [1, 1]},
    )
    fresh = _fresh_state(cfg)
    train(cfg, "branches", progress=False)
    assert "branch 1/2 has no parameters: nothing to train" in capsys.readouterr().out
    state, meta = read_checkpoint(cfg.out_dir / "branches.safetensors")
    assert meta["complete"] and all(k.startswith(("branches.1.", "classifier.")) for k in state)
    assert not torch.equal(
        state["branches.1.tail_conv.weight"], fresh["branches.1.tail_conv.weight"]
    )


def _fresh_state(cfg):
    """The weights stage 1 starts from (same seed as the trainer)."""
    from classsr_core.model.wrapper import ClassWrapper

    torch.manual_seed(cfg.seed)
    return ClassWrapper(scale=2, **cfg.model.wrapper_kwargs()).state_dict()


def test_each_branch_sees_only_its_class_and_stage_two_freezes_them(tmp_path, photos, monkeypatch):
    # carn_m has BatchNorm: frozen branches must keep their running statistics in stage 2.
    data = _micro(tmp_path, photos).resolved()
    data["model"].update(backbone="carn_m", backbone_kwargs={"n_blocks": 1})  # not fsrcnn's m
    cfg = validate_train_config(data)
    seen: list[int] = []
    real = PairDataset.__getitem__

    def spy(self, key):
        seen.append(key[0])
        return real(self, key)

    monkeypatch.setattr(PairDataset, "__getitem__", spy)
    train(cfg, "branches", progress=False)
    labels = Store(cfg.store_dir).labels()
    per_branch = 6 * 4  # iterations x batch
    assert set(labels[seen[:per_branch]]) == {0} and set(labels[seen[per_branch:]]) == {1}

    stage1, _ = read_checkpoint(cfg.out_dir / "branches.safetensors")
    init = _fresh_state(cfg)
    assert not torch.equal(stage1["branches.0.entry.weight"], init["branches.0.entry.weight"])
    assert torch.equal(stage1["classifier.fc.weight"], init["classifier.fc.weight"])

    train(cfg, "classifier", progress=False)
    stage2, _ = read_checkpoint(cfg.out_dir / "classifier.safetensors")
    bn = [k for k in stage2 if k.startswith("branches.") and "running_mean" in k]
    assert bn, "carn_m should carry BatchNorm layers"
    for k in stage2:
        if k.startswith("branches."):
            assert torch.equal(stage2[k], stage1[k]), f"{k} changed in stage 2"
    assert not torch.equal(stage2["classifier.fc.weight"], stage1["classifier.fc.weight"])

    train(cfg, "joint", progress=False)
    stage3, meta = read_checkpoint(cfg.out_dir / "joint.safetensors")
    assert not torch.equal(stage3[bn[0]], stage2[bn[0]])  # joint: BatchNorm trains again
    assert meta["divide"]["thresholds"] == Store(cfg.store_dir).divide_info()["thresholds"]
    log = [json.loads(line) for line in (cfg.out_dir / "log.jsonl").read_text().splitlines()]
    joint = [r for r in log if r["stage"] == "joint" and "total" in r]
    assert joint[-1]["lr"] == pytest.approx(1e-7)  # the cosine reached lr_min at the end
    assert {"l1", "class", "average"} <= set(joint[-1])
    assert not (cfg.out_dir / "state" / "joint.pt").exists()  # cleaned up when complete


def _fresh_state(cfg):
    """The weights stage 1 starts from (same seed as the trainer)."""
    from classsr_core.model.wrapper import ClassWrapper

    torch.manual_seed(cfg.seed)
    return ClassWrapper(scale=2, **cfg.model.wrapper_kwargs()).state_dict()


@pytest.mark.slow
def test_tiny_config_end_to_end(tmp_path):
    """The acceptance run: `classsr train examples/configs/tiny.yaml --stage all`."""
    out = tmp_path / "tiny"
    rc = main(
        ["train", str(REPO / "examples/configs/tiny.yaml"), "--stage", "all"]
        + ["--set", f"out={out}", "--no-progress"]
    )
    assert rc == 0
    model = load_model(out / "model.safetensors")
    assert model.num_classes == 3 and model.checkpoint_meta["stage"] == "joint"
    import skimage.data

    image = skimage.data.rocket()[:200, :300]
    result = model.infer(image)
    assert result.output.shape == (800, 1200, 3) and result.output.dtype == np.uint8

    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    val = {r["stage"]: r for r in log if "val_psnr" in r}
    # The stage-2 classifier uses more than one branch on its validation photo...
    ratios = val["classifier"]["class_ratios"]
    assert sum(r >= 0.05 for r in ratios) >= 2 and max(ratios) < 0.95, ratios
    # ...and sends smooth patches (sky) to a cheaper branch than textured ones (coat, grass).
    _, lr8, _ = Store(out / "data").val_images()[0]
    lr = torch.from_numpy(lr8).permute(2, 0, 1)[None].float() / 255.0
    result = load_model(out / "classifier.safetensors").infer(lr)
    assert result.class_counts == [round(r * result.num_patches) for r in ratios]
    p = model.patch_size
    texture = np.array([lr[0, :, y : y + p, x : x + p].std().item() for y, x in result.origins])
    classes = result.class_map.reshape(-1)
    cheap, dear = classes == classes.min(), classes == classes.max()
    assert texture[cheap].mean() < 0.7 * texture[dear].mean()
    assert val["joint"]["flops_fraction"] < 0.9  # cheaper than the widest branch alone
