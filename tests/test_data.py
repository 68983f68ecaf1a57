"""prepare (sub-image store), the dataset and sampler, and divide (classes by difficulty)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from train_helpers import micro_config, photo, write_photos

from classsr_core._basicsr import imresize, metrics
from classsr_core.errors import ClassSRError, ConfigError, InputError
from classsr_core.training.dataset import PairDataset, Store, apply_aug
from classsr_core.training.divide import divide, labels_for, psnr_batch, thresholds_for
from classsr_core.training.prepare import crop_starts, prepare, to_uint8
from classsr_core.training.samplers import ShardedBatchSampler


def _mixed_folder(folder):
    """One image of every kind prepare must handle, plus a broken and a too-small one."""
    from PIL import Image

    from classsr_core.io.images import write_image

    folder.mkdir()
    Image.fromarray(photo(72, 88, 0)).save(folder / "a_rgb.png")
    Image.fromarray(photo(64, 64, 1)[:, :, 0]).save(folder / "b_grey.png")
    rgba = np.concatenate([photo(64, 72, 2), np.full((64, 72, 1), 128, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(folder / "c_rgba.png")
    Image.fromarray(photo(64, 64, 3)).save(folder / "d_photo.jpg", quality=95)
    write_image(folder / "e_deep.tif", photo(64, 66, 4).astype(np.uint16) * 257)
    Image.fromarray(photo(20, 20, 5)).save(folder / "f_small.png")
    (folder / "g_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (folder / "notes.txt").write_text("not an image; ignored")
    return folder


def test_crop_starts_cover_the_border():
    assert crop_starts(64, 32, 16) == [0, 16, 32]
    assert crop_starts(70, 32, 16) == [0, 16, 32, 38]  # the last one moved in
    assert crop_starts(31, 32, 16) == []


def test_prepare_handles_every_kind_and_skips_bad_files(tmp_path):
    cfg = micro_config(tmp_path, _mixed_folder(tmp_path / "hr"))
    with pytest.warns(RuntimeWarning, match="skipped 2 train image"):
        summary = prepare(cfg, progress=False)
    assert summary["skipped"] == {"train": 2, "val": 0}
    manifest = json.loads((cfg.store_dir / "manifest.json").read_text())
    reasons = {sk["key"]: sk["reason"] for sk in manifest["train"]["skipped"]}
    assert "unreadable" in reasons["g_broken.png@1"]
    assert "too small" in reasons["f_small.png@1"]

    store = Store(cfg.store_dir)
    keys = [it["key"] for it in store.items]
    assert keys == ["a_rgb.png@1", "b_grey.png@1", "c_rgba.png@1", "d_photo.jpg@1", "e_deep.tif@1"]
    for i, it in enumerate(store.items):
        lr, hr = store.item_arrays(i)
        assert hr.dtype == lr.dtype == np.uint8
        assert hr.shape[1:] == (32, 32, 3) and lr.shape[1:] == (16, 16, 3)
        assert len(hr) == len(lr) == it["count"]
    # a_rgb: 72x88 -> 4 x 5 sub-images (the last row and column moved in to the border)
    assert store.items[0]["count"] == len(crop_starts(72, 32, 16)) * len(crop_starts(88, 32, 16))
    # Input sub-images are crops of the task's input for the whole image (aligned).
    task = cfg.make_task()
    hr_full = photo(72, 88, 0)
    lr_full = to_uint8(task.make_input(hr_full.astype(np.float32) / 255, None))
    lr, hr = store.item_arrays(0)
    np.testing.assert_array_equal(hr[1], hr_full[0:32, 16:48])
    np.testing.assert_array_equal(lr[1], lr_full[0:16, 8:24])
    # grey -> RGB (equal channels); RGBA -> RGB; 16-bit -> the same 8-bit values
    _, grey = store.item_arrays(1)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    _, deep = store.item_arrays(4)
    np.testing.assert_array_equal(deep[0], photo(64, 66, 4)[:32, :32])


def test_prepare_rerun_skips_done_and_resumes_after_interruption(tmp_path, monkeypatch):
    import classsr_core.training.prepare as preparing

    cfg = micro_config(tmp_path, write_photos(tmp_path / "hr", 3))
    real = preparing._make_item
    calls = []

    def crash_on_second(*args, **kw):
        calls.append(args[2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(preparing, "_make_item", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg, progress=False)
    with pytest.raises(ClassSRError, match="incomplete"):
        Store(cfg.store_dir)
    monkeypatch.setattr(preparing, "_make_item", real)
    summary = prepare(cfg, progress=False)
    assert (summary["made"], summary["reused"]) == (2, 1)  # the first image was kept
    first = cfg.store_dir / Store(cfg.store_dir).items[0]["hr"]
    stamp = first.stat().st_mtime_ns
    summary = prepare(cfg, progress=False)
    assert (summary["made"], summary["reused"]) == (0, 3)
    assert first.stat().st_mtime_ns == stamp


def test_prepare_multiscale_uses_matlab_bicubic(tmp_path):
    cfg = micro_config(tmp_path, write_photos(tmp_path / "hr", 1, size=(96, 96)))
    cfg.data.scales = [1.0, 0.6]
    prepare(cfg, progress=False)
    store = Store(cfg.store_dir)
    assert [it["key"] for it in store.items] == ["img00.png@1", "img00.png@0.6"]
    small = to_uint8(imresize(photo(96, 96, 0).astype(np.float32) / 255, 0.6))
    small = small[: small.shape[0] // 2 * 2, : small.shape[1] // 2 * 2]  # mod-crop by 2
    _, hr = store.item_arrays(1)
    np.testing.assert_array_equal(hr[0], small[:32, :32])
    assert store.items[1]["count"] == len(crop_starts(small.shape[0], 32, 16)) ** 2


def test_prepare_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no images"):
        prepare(micro_config(tmp_path, tmp_path / "empty"), progress=False)
    with pytest.raises(ConfigError, match="does not exist"):
        prepare(micro_config(tmp_path, tmp_path / "missing"), progress=False)
    small = write_photos(tmp_path / "small", 2, size=(24, 24))
    with pytest.raises(InputError, match="no training sub-images.*2 skipped.*too small"):
        prepare(micro_config(tmp_path, small), progress=False)
    good = write_photos(tmp_path / "good", 1)
    prepare(micro_config(tmp_path, good), progress=False)
    with pytest.raises(ConfigError, match="other settings"):
        prepare(micro_config(tmp_path, good, data={"crop": 48}), progress=False)
    with pytest.raises(ConfigError, match="multiples of the task's scale"):
        prepare(micro_config(tmp_path / "x", good, data={"step": 15}), progress=False)
    with pytest.raises(ConfigError, match="no image 'nope'"):
        prepare(micro_config(tmp_path / "y", "skimage:nope"), progress=False)


def test_augmentations_are_the_eight_symmetries_and_keep_pairs_aligned(tmp_path):
    img = np.arange(4 * 4 * 3).reshape(4, 4, 3)
    outs = {apply_aug(img, c).tobytes() for c in range(8)}
    assert len(outs) == 8
    cfg = micro_config(tmp_path, write_photos(tmp_path / "hr", 1))
    prepare(cfg, progress=False)
    ds = PairDataset(Store(cfg.store_dir))
    task = cfg.make_task()
    for code in range(8):
        lr, hr = ds[(5, code)]
        assert lr.shape == (3, 16, 16) and hr.shape == (3, 32, 32) and lr.dtype == torch.uint8
        # bicubic downscaling commutes with flips and transposes: the pair stays a pair
        again = task.make_input(hr.permute(1, 2, 0).numpy() / 255.0, None)
        assert np.abs(to_uint8(again).astype(int) - lr.permute(1, 2, 0).numpy()).max() <= 1


def test_sampler_is_a_function_of_seed_and_iteration():
    idx = np.arange(100, 150)
    a = ShardedBatchSampler(idx, 4, seed=(0, 1))
    stream = iter(a)
    first = [next(stream) for _ in range(30)]  # crosses epoch boundaries (12 per epoch)
    resumed = iter(ShardedBatchSampler(idx, 4, seed=(0, 1), start=17))
    assert [next(resumed) for _ in range(13)] == first[17:]
    epoch = [i for b in first[:12] for i, _ in b]
    assert len(set(epoch)) == 48 and set(epoch) <= set(idx.tolist())
    assert {c for b in first for _, c in b} == set(range(8))
    assert ShardedBatchSampler(idx, 4, seed=(1, 1)).batch_at(0) != first[0]
    assert {c for _, c in ShardedBatchSampler(idx, 4, augment=False).batch_at(3)} == {0}
    # two ranks split each global batch between them, without overlap
    r0 = ShardedBatchSampler(idx, 2, rank=0, world=2, seed=(0, 1))
    r1 = ShardedBatchSampler(idx, 2, rank=1, world=2, seed=(0, 1))
    for t in range(5):
        both = r0.batch_at(t) + r1.batch_at(t)
        assert sorted(both) == sorted(first[t])
    # a class smaller than one batch is repeated, not an error
    assert len(ShardedBatchSampler(np.array([7, 9]), 5).batch_at(0)) == 5


def test_psnr_batch_matches_basicsr():
    calc_psnr, _ = metrics()
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 3, 24, 24)), rng.random((2, 3, 24, 24))
    ours = psnr_batch(torch.from_numpy(a), torch.from_numpy(b), border=2)
    for i in range(2):
        ref = calc_psnr(
            (a[i] * 255).round().transpose(1, 2, 0),
            (b[i] * 255).round().transpose(1, 2, 0),
            crop_border=2,
        )
        assert abs(float(ours[i]) - ref) < 1e-9


def test_quantile_thresholds_and_labels():
    psnr = np.linspace(20, 40, 120)
    t = thresholds_for(psnr, [1, 1, 1])
    labels = labels_for(psnr, t)
    assert t[0] > t[1] and np.bincount(labels).tolist() == [40, 40, 40]
    assert psnr[labels == 0].min() > psnr[labels == 1].max() > psnr[labels == 2].max()
    labels = labels_for(psnr, thresholds_for(psnr, [1, 1, 2]))  # the paper's 25:25:50
    assert np.bincount(labels).tolist() == [30, 30, 60]


def test_divide_by_bicubic_and_by_a_reference_checkpoint(tmp_path, capsys):
    from classsr_core.model.wrapper import ClassWrapper

    cfg = micro_config(tmp_path, write_photos(tmp_path / "hr", 3))
    prepare(cfg, progress=False)
    info = divide(cfg, progress=False)
    out = capsys.readouterr().out
    assert "thresholds (dB)" in out and f"{info['thresholds'][0]:.2f}" in out
    store = Store(cfg.store_dir)
    labels = store.labels()
    psnr = np.load(cfg.store_dir / "psnr.npy")
    assert len(labels) == len(store) and info["counts"] == np.bincount(labels).tolist()
    assert abs(info["counts"][0] - info["counts"][1]) <= 1
    assert psnr[labels == 0].mean() > psnr[labels == 1].mean() + 3  # smooth vs textured
    assert store.divide_info()["thresholds"] == info["thresholds"]
    # the textured (right) half of the photos is the hard class
    lr, _ = store.item_arrays(0)
    first = labels[: len(lr)]
    assert first[0] == 0 and first[-1] == 1

    ref = ClassWrapper("fsrcnn", widths=[8], scale=2)  # an "-O" single-branch model
    ref.save(tmp_path / "ref.safetensors")
    info2 = divide(cfg, reference=str(tmp_path / "ref.safetensors"), progress=False)
    assert info2["reference"].endswith("ref.safetensors")
    assert not np.allclose(np.load(cfg.store_dir / "psnr.npy"), psnr)
    x4 = ClassWrapper("fsrcnn", widths=[8], scale=4)
    x4.save(tmp_path / "x4.safetensors")
    with pytest.raises(InputError, match="upscales by 4"):
        divide(cfg, reference=str(tmp_path / "x4.safetensors"), progress=False)
    cfg.divide.ratios = [1, 1, 1]
    with pytest.raises(ConfigError, match="2 branches"):
        divide(cfg, progress=False)


def test_labels_go_stale_when_the_images_change(tmp_path):
    folder = write_photos(tmp_path / "hr", 2)
    cfg = micro_config(tmp_path, folder)
    prepare(cfg, progress=False)
    divide(cfg, progress=False, quiet=True)
    assert Store(cfg.store_dir).divide_info() is not None
    write_photos(folder, 1, seed=7)  # overwrites img00.png with another picture
    os.utime(folder / "img00.png", ns=(1, 1))
    prepare(cfg, progress=False)
    with pytest.raises(ClassSRError, match="run `classsr divide"):
        Store(cfg.store_dir).labels()
