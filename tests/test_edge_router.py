"""Edge routing: the score, the table, calibration, the engine's router="edge", persistence
and the CLI."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from classsr_core.cli import main
from classsr_core.errors import CheckpointError, InputError
from classsr_core.model.loading import load_model
from classsr_core.model.wrapper import ClassWrapper
from classsr_core.routing.calibration import calibrate
from classsr_core.routing.edge import (
    FLAT_LEVEL,
    FLAT_MACS_FROM_ENERGY,
    FLAT_MACS_PER_PIXEL,
    LUMA,
    STATISTICS,
    EdgeRouter,
    EdgeTable,
    edge_map,
    edge_scores,
    flat_map,
    image_price,
    patch_scores,
)

SKIP = {"skip": "bicubic"}  # FSRCNN width 0: the bicubic branch


def _photo(step: int = 4) -> torch.Tensor:
    from skimage import data

    img = data.astronaut()[::step, ::step].astype(np.float32) / 255
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ClassWrapper(
        "fsrcnn", widths=[0, 8, 24], scale=2, patch_size=16, stride=12, backbone_kwargs=SKIP
    ).eval()


@pytest.fixture(scope="module")
def table(model):
    """Calibrated on a photo against its own 2x-downscaled input: a real LR/HR pair."""
    import torch.nn.functional as F

    hr = _photo(2)
    lr = F.interpolate(hr, scale_factor=0.5, mode="bicubic", antialias=True).clamp(0, 1)
    return calibrate(model, [(lr, hr)], bins=6, tolerance_db=0.05)


# -- the score ------------------------------------------------------------------------------


def test_edge_map_of_a_flat_image_is_zero():
    assert edge_map(torch.full((1, 3, 9, 7), 0.3)).abs().max() == 0


def test_edge_map_is_the_luma_laplacian():
    x = torch.zeros(1, 3, 5, 5)
    x[0, :, 2, 2] = torch.tensor([1.0, 0.5, 0.25])
    luma = sum(w * v for w, v in zip(LUMA, (1.0, 0.5, 0.25)))
    e = edge_map(x)[0]
    assert e[2, 2] == pytest.approx(4 * luma, rel=1e-6)
    for y, x_ in ((1, 2), (3, 2), (2, 1), (2, 3)):
        assert e[y, x_] == pytest.approx(luma, rel=1e-6)
    assert e[0, 0] == 0
    grey = edge_map(torch.rand(1, 1, 6, 6))  # one channel: no luma weights
    assert grey.shape == (1, 6, 6)


def test_patch_scores_are_patch_means():
    emap = torch.rand(23, 31)
    ys, xs, p = [0, 5, 7], [0, 9, 15], 8
    got = patch_scores(emap, ys, xs, p)
    want = [emap[y : y + p, x : x + p].mean() for y in ys for x in xs]
    assert torch.allclose(got, torch.stack(want), atol=1e-5)


# -- the table ------------------------------------------------------------------------------


def test_table_round_trip_and_lookup():
    t = EdgeTable((0.1, 0.2), ((1.0, 0.9), (2.0, 1.0), (4.0, 1.5)), price=0.5, tolerance_db=0.05)
    assert EdgeTable.from_dict(t.to_dict()) == t
    mse = t.expected_mse(np.array([0.0, 0.1, 0.15, 0.3]))
    assert mse.tolist() == [[1.0, 0.9], [2.0, 1.0], [2.0, 1.0], [4.0, 1.5]]
    scores = np.array([0.05, 0.3])
    assert t.route(scores, [0.0, 1.0], price=0.0).tolist() == [1, 1]  # free: least error
    assert t.route(scores, [0.0, 1.0], price=1.0).tolist() == [0, 1]  # 0.1 < 1.0 < 2.5
    assert t.route(scores, [0.0, 1.0], price=10.0).tolist() == [0, 0]


@pytest.mark.parametrize(
    "bad",
    [
        {"edges": [0.1], "mse": [[1.0]], "price": 0, "tolerance_db": 0},  # one row short
        {"edges": [0.2, 0.1], "mse": [[1.0]] * 3, "price": 0, "tolerance_db": 0},
        {"edges": [0.1], "mse": [[1.0], [math.nan]], "price": 0, "tolerance_db": 0},
        {"edges": [0.1], "mse": [[1.0], [2.0]]},  # no price
        {"edges": "x", "mse": [[1.0]], "price": 0, "tolerance_db": 0},
    ],
)
def test_a_broken_table_is_a_checkpoint_error(bad):
    with pytest.raises(CheckpointError, match="edge table"):
        EdgeTable.from_dict(bad)


# -- calibration ------------------------------------------------------------------------------


def test_one_bin_holds_the_widest_error_plus_each_branch_s_mean_cell_loss(model):
    hr = _photo(4)[:, :, :100, :120]
    lr = hr[:, :, ::2, ::2].contiguous()  # 50 x 60 LR: 3 x 3 whole 16-pixel cells
    t = calibrate(model, [(lr, hr)], bins=1)
    assert t.edges == () and t.patches == 9 and t.statistic == "laplacian-energy"
    cells = []
    for branch in model.branches:
        with torch.inference_mode():
            out = branch(lr).clamp(0, 1)
        # regions with each branch's full receptive field equal the branch on the whole image
        se = (out - hr)[0, :, :96, :96].square().mean(0)
        cells.append(se.reshape(3, 32, 3, 32).mean(dim=(1, 3)).reshape(-1).double())
    widest = cells[-1]
    for j, err in enumerate(cells):
        # a cheaper branch's gains on some cells do not offset its losses on others
        want = (widest.mean() + (err - widest).clamp_min(0).mean()).item()
        assert t.mse[0][j] == pytest.approx(want, rel=1e-4, abs=1e-9)


def test_calibration_bins_and_price(model, table):
    assert len(table.mse) == len(table.edges) + 1 <= 6
    assert all(len(row) == 3 for row in table.mse)
    # each image is priced by its own expected error: no one price for all
    assert table.allocation == "relative" and table.price == 0 and table.patches > 0
    assert len(table.branch_costs) == 3 and table.branch_costs[0] < table.branch_costs[-1]
    # a cheaper branch is never expected to beat the widest; flat patches lose least
    gap = [row[0] - row[-1] for row in table.mse]
    assert all(g >= 0 for g in gap) and gap[-1] >= gap[0]
    assert table.statistic == "laplacian-energy" and len(table.curve[0]) == 3


def test_calibration_rejects_what_it_cannot_use(model):
    with pytest.raises(InputError, match="whole 16x16"):
        calibrate(model, [(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 16, 16))])
    single = ClassWrapper("fsrcnn", widths=[8], scale=2)
    with pytest.raises(InputError, match="two branches"):
        calibrate(single, [])
    with pytest.raises(InputError, match="bins"):
        calibrate(model, [], bins=0)


# -- the engine -------------------------------------------------------------------------------


def test_infer_needs_a_table_for_the_edge_router():
    m = ClassWrapper("fsrcnn", widths=[8, 16], scale=2, patch_size=16, stride=12).eval()
    with pytest.raises(InputError, match="classsr calibrate"):
        m.infer(torch.rand(1, 3, 32, 32), router="edge")
    with pytest.raises(InputError, match="router must be one of"):
        m.infer(torch.rand(1, 3, 32, 32), router="edges")
    m.edge_table = EdgeTable((), ((1.0, 1.0, 1.0),), 0.0, 0.05)
    with pytest.raises(InputError, match="3 branches, the model 2"):
        m.infer(torch.rand(1, 3, 32, 32), router="edge")


@pytest.mark.parametrize("mode", ["patches", "regions"])
def test_edge_routing_runs_no_classifier_and_counts_the_score(model, table, mode, monkeypatch):
    model.edge_table = table
    x = _photo(4)

    def fail(*_):
        raise AssertionError("the classifier ran")

    monkeypatch.setattr(model, "classify", fail)
    res = model.infer(x, router="edge", mode=mode)
    assert res.router == "edge" and res.probs is None
    p = res.patch_size
    # the score and the flat share (the table limits how flat an image it prices)
    macs = STATISTICS[table.statistic][2] + FLAT_MACS_FROM_ENERGY
    assert table.flat_limit < 1 and res.flops_per_patch["classifier"] == macs * p * p
    # the default price routes each patch as the table says
    scores = edge_scores(x, res.grid.ys, res.grid.xs, p, table.statistic)
    pixel_costs = np.asarray(res.flops_per_patch["branches"]) / (p * p)
    assert (res.class_map.reshape(-1) == table.route(scores, pixel_costs)).all()


def test_flat_patches_go_to_the_cheapest_branch(model, table):
    model.edge_table = table
    res = model.infer(torch.full((1, 3, 40, 40), 0.5), router="edge")
    assert res.class_counts[0] == res.num_patches


@pytest.mark.parametrize("mode", ["patches", "regions"])
def test_edge_budget_lands_on_target_and_grows(model, table, mode):
    model.edge_table = table
    x = _photo(4)
    previous = -1.0
    for budget in (0.3, 0.5, 0.7, 0.9):
        frac = model.infer(x, router="edge", mode=mode, budget=budget).flops_fraction
        assert abs(frac - budget) <= 0.03, (budget, frac)
        assert frac >= previous - 1e-9
        previous = frac


def test_forced_classes_win_over_the_edge_router(model, table):
    model.edge_table = table
    x = torch.rand(1, 3, 40, 40)
    n = model.infer(x, router="edge").num_patches
    res = model.infer(x, router="edge", classes=np.full(n, 2))
    assert res.class_counts == [0, 0, n]


# -- persistence and the command line -----------------------------------------------------------


def test_the_table_is_saved_with_the_model(model, table, tmp_path):
    model.edge_table = table
    model.save(tmp_path / "m.safetensors")
    assert load_model(tmp_path / "m.safetensors").edge_table == table
    model.edge_table = None
    model.save(tmp_path / "plain.safetensors")
    assert load_model(tmp_path / "plain.safetensors").edge_table is None


def test_cli_calibrate_then_upscale_with_the_edge_router(tmp_path, capsys):
    from skimage import data

    from classsr_core.io.images import Image, write_image

    photos = tmp_path / "photos"
    photos.mkdir()
    for name, img in (("coffee", data.coffee()[:128, :160]), ("cat", data.chelsea()[:128, :160])):
        write_image(photos / f"{name}.png", Image(img.astype(np.float32) / 255, None, False, 255))
    torch.manual_seed(0)
    tiny = ClassWrapper(
        "fsrcnn", widths=[0, 8], scale=2, patch_size=16, stride=12, backbone_kwargs=SKIP
    )
    tiny.save(tmp_path / "m.safetensors")
    supernet = ClassWrapper(
        "fsrcnn", widths=[0, 8, 12], scale=2, patch_size=16, stride=12, backbone_kwargs=SKIP,
        shared_weights=True,
    )  # fmt: skip
    supernet.save(tmp_path / "super.safetensors")
    out = tmp_path / "cal.safetensors"
    args = ["calibrate", str(photos), "--model", str(tmp_path / "m.safetensors"), "-o", str(out)]
    assert main([*args, "--bins", "4"]) == 0
    assert "2 images" in capsys.readouterr().out
    calibrated = load_model(out)
    assert calibrated.edge_table is not None and len(calibrated.edge_table.mse) <= 4
    code = main(
        ["upscale", str(photos / "cat.png"), "-o", str(tmp_path / "cat_x2.png")]
        + ["--model", str(out), "--router", "edge", "--mode", "regions", "--json"]
    )
    assert code == 0 and (tmp_path / "cat_x2.png").is_file()
    assert (
        main(
            ["upscale", str(photos / "cat.png"), "-o", str(tmp_path / "x.png")]
            + ["--model", str(tmp_path / "m.safetensors"), "--router", "edge"]
        )
        == 2
    )
    assert "classsr calibrate" in capsys.readouterr().err
    cut = tmp_path / "cut.safetensors"
    args = ["calibrate", str(photos), "--model", str(tmp_path / "super.safetensors")]
    assert main([*args, "--widths", "0,12", "-o", str(cut), "--bins", "2"]) == 0
    model = load_model(cut)
    assert model.spec["widths"] == [0, 12] and model.edge_table.num_branches == 2
    assert model.checkpoint_meta["cut_from"]["widths"] == [0, 8, 12]
    assert main([*args, "--widths", "0,x", "-o", str(cut)]) == 2


# -- relative allocation, tables of other models, recorded halos ----------------------------


def test_image_price_spends_the_image_s_allowance_and_no_more():
    rng = np.random.default_rng(0)
    widest = rng.uniform(1e-4, 1e-3, 200)
    expected = np.stack([widest * 3, widest * 1.5, widest], axis=1)
    costs = np.array([0.1, 5.0, 10.0])
    loss = expected - expected[:, -1:]
    previous = math.inf
    for loss_db in (0.01, 0.05, 0.2, 1.0):
        price = image_price(expected, costs, loss_db)
        assign = np.argmin(expected + price * costs[None, :], axis=1)
        spent = loss[np.arange(200), assign].sum()
        allowed = (10 ** (loss_db / 10) - 1) * widest.sum()
        assert spent <= allowed
        # a price 5% higher would overspend: the allowance is used, not left
        more = np.argmin(expected + price * 1.05 * costs[None, :], axis=1)
        assert loss[np.arange(200), more].sum() > allowed or (more == 0).all()
        cost = costs[assign].sum()
        assert cost <= previous  # a looser tolerance never costs more
        previous = cost


def test_the_tolerance_knob_buys_flops_step_by_step(model):
    # A hand-made relative table (the fixture's random branches gain nothing to trade).
    model.edge_table = _relative_table(1.0)
    x = _photo(4)
    fractions = [
        model.infer(x, router="edge", mode="patches", tolerance=t).flops_fraction
        for t in (0.05, 0.1, 0.2, 0.5, 2.0)
    ]
    assert all(b < a for a, b in zip(fractions, fractions[1:])), fractions
    # no tolerance: the table's own (0.05 dB)
    assert model.infer(x, router="edge", mode="patches").flops_fraction == fractions[0]


def test_a_table_measured_for_other_widths_is_refused_naming_both(table):
    other = ClassWrapper(
        "fsrcnn", widths=[0, 8, 16], scale=2, patch_size=16, stride=12, backbone_kwargs=SKIP
    ).eval()
    other.edge_table = table
    with pytest.raises(InputError, match=r"calibrated for branches costing.*widths \[0, 8, 16\]"):
        other.infer(_photo(4), router="edge")


def test_a_recorded_halo_narrows_the_regions_and_survives_save_and_load(model, table, tmp_path):
    # (the table of the module's fixture: the last test may have set a hand-made one)
    from classsr_core.execution.regions import halos_for

    model.edge_table = table
    full = halos_for(model, None, torch.device("cpu"))
    model.defaults["halo"] = 1
    try:
        assert halos_for(model, None, torch.device("cpu")) == [min(h, 1) for h in full]
        assert halos_for(model, 3, torch.device("cpu")) == [3, 3, 3]  # the caller's wins
        model.save(tmp_path / "m.safetensors")
        loaded = load_model(tmp_path / "m.safetensors")
        assert loaded.defaults == {"halo": 1}
        x = _photo(4)
        n = len(loaded.infer(x, router="edge", mode="regions").class_map.reshape(-1))
        mixed = np.arange(n) % 3  # many tiles: many halos
        narrow = loaded.infer(x, router="edge", mode="regions", classes=mixed)
        exact = loaded.infer(x, router="edge", mode="regions", classes=mixed, halo=max(full))
        assert narrow.halos == [min(h, 1) for h in full] and narrow.flops < exact.flops
    finally:
        model.defaults.pop("halo")


def test_a_file_with_an_unknown_default_is_refused(model, tmp_path):
    from classsr_core.io.checkpoint import read_checkpoint, save_state

    model.save(tmp_path / "m.safetensors")
    state, meta = read_checkpoint(tmp_path / "m.safetensors")
    for bad, match in (({"halos": 2}, "unknown model default 'halos'"), ({"halo": -1}, "halo")):
        save_state(state, tmp_path / "bad.safetensors", {**meta, "defaults": bad})
        with pytest.raises(CheckpointError, match=match):
            load_model(tmp_path / "bad.safetensors")


def test_measure_halo_keeps_quality_and_narrows_only_what_it_may(model):
    import torch.nn.functional as F

    from classsr_core.execution.regions import halos_for
    from classsr_core.routing.calibration import measure_halo

    hr = _photo(2)
    lr = F.interpolate(hr, scale_factor=0.5, mode="bicubic", antialias=True).clamp(0, 1)
    full = max(halos_for(model, None, torch.device("cpu")))
    strict = measure_halo(model, [(lr, hr)], max_loss_db=1e-9)
    loose = measure_halo(model, [(lr, hr)], max_loss_db=50.0)
    assert loose == 0  # anything goes at 50 dB
    assert strict is None or strict < full
    assert "halo" not in model.defaults  # measuring leaves the model as it was


def test_the_curve_leaves_out_the_worst_share_of_images():
    # Four images, each its own content: one image's loss at every budget is the curve's
    # worst without a share left out, the second worst with a quarter of four left out.
    from classsr_core.routing.calibration import _held_out_curve, bin_edges

    rng = np.random.default_rng(0)
    costs = [1.0, 10.0]
    scores, errors = [], []
    for k in range(4):
        s = rng.uniform(0, 1, 40)
        widest = 0.01 * (1 + s) / (k + 1)  # the later images: cleaner, a cheap cell costs more
        errors.append(np.stack([widest + 0.01 * s, widest], 1))
        scores.append(s)
    edges = bin_edges(np.concatenate(scores), 4)
    kw = dict(allocation="relative", points=12)
    every = _held_out_curve(edges, scores, errors, costs, None, **kw)
    some = _held_out_curve(edges, scores, errors, costs, None, worst_share=0.25, **kw)
    quarter = _held_out_curve(edges, scores, errors, costs, None, worst_share=0.2, **kw)
    assert [p for p, _, _ in every] == [p for p, _, _ in some]
    assert [m for _, m, _ in every] == [m for _, m, _ in some]  # the mean keeps every image
    assert all(s <= e for (_, _, e), (_, _, s) in zip(every, some))
    assert any(s < e for (_, _, e), (_, _, s) in zip(every, some))
    assert quarter == every  # 0.2 of 4 images rounds down to none


def test_calibrate_records_the_share_and_refuses_a_bad_one(model, table):
    assert table.worst_share == 0.05
    assert EdgeTable.from_dict(table.to_dict()).worst_share == 0.05
    old = {k: v for k, v in table.to_dict().items() if k != "worst_share"}
    assert EdgeTable.from_dict(old).worst_share == 0.0  # tables before: every image judged
    for bad in (-0.1, 1.0):
        with pytest.raises(InputError, match="worst_share"):
            pair = (torch.rand(1, 3, 32, 32), torch.rand(1, 3, 64, 64))
            calibrate(model, [pair], worst_share=bad)


# -- renders: images past the table's flat limit ----------------------------------------------


def test_flat_map_marks_pixels_whose_four_neighbours_equal_them():
    x = torch.full((1, 3, 6, 8), 100 / 255)
    x[..., 5:] = 99 / 255  # one 8-bit level: not flat along the step
    f = flat_map(x)[0]
    assert f[:, :4].all() and f[:, 6:].all() and not f[:, 4:6].any()
    noisy = x + torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 0.02
    assert flat_map(noisy).mean() < 0.05
    # the router reads it off the laplacian-energy map when it has one: the same pixels
    photo = _photo(4)
    energy = STATISTICS["laplacian-energy"][0](photo)
    assert torch.equal((energy < FLAT_LEVEL**2).float(), flat_map(photo))


def _relative_table(flat_limit: float) -> EdgeTable:
    # Cheaper branches lose more on busier patches; the held-out curve holds each budget.
    mse = (
        (1.02e-4, 1.01e-4, 1e-4),
        (6e-4, 5.5e-4, 5e-4),
        (3e-3, 2.4e-3, 2e-3),
        (0.024, 0.012, 0.008),
    )
    return EdgeTable(
        (0.001, 0.01, 0.05),
        mse,
        0.0,
        0.05,
        statistic="laplacian-energy",
        curve=tuple((t, t, 1.5 * t) for t in np.geomspace(1e-3, 3, 40)),
        interpolate=True,
        allocation="relative",
        flat_limit=flat_limit,
    )


def test_a_render_past_the_flat_limit_is_routed_at_the_curve_s_lowest_point(model):
    render = _photo(4).clone()
    render[..., :80, :] = 0.5  # 80 of 128 rows one flat colour: more than half flat
    assert 0.5 < float(flat_map(render).mean()) < 0.7
    photo = _photo(4)
    model.edge_table = _relative_table(0.5)
    try:

        def classes(x, t):
            return model.infer(x, router="edge", mode="patches", tolerance=t).class_map

        # the render: every tolerance routes as the lowest point of the curve (tolerance 0)
        assert all(np.array_equal(classes(render, t), classes(render, 0.0)) for t in (0.5, 2.0))
        # a photo is not held there: the knob still buys FLOPs on it
        assert not np.array_equal(classes(photo, 2.0), classes(photo, 0.0))
        limited = model.infer(render, router="edge", mode="patches", tolerance=2.0)
        model.edge_table = _relative_table(1.0)  # no limit: the render is routed as a photo
        free = model.infer(render, router="edge", mode="patches", tolerance=2.0)
        assert free.flops_fraction < limited.flops_fraction
        # the flat map is counted in the router's cost only where a limit needs it (off the
        # energy map: a comparison and a mean; standalone: its own Laplacian too)
        assert EdgeRouter().cost(model, 16) == 20 * 256
        model.edge_table = _relative_table(0.5)
        assert EdgeRouter().cost(model, 16) == (20 + FLAT_MACS_FROM_ENERGY) * 256
        model.edge_table = replace(_relative_table(0.5), statistic="gradient-max")
        assert EdgeRouter().cost(model, 16) == (18 + FLAT_MACS_PER_PIXEL) * 256
    finally:
        model.edge_table = None


def test_the_flat_limit_is_recorded_and_checked(model, table):
    assert table.flat_limit == 0.5  # calibrate's default
    table = _relative_table(0.5)
    assert EdgeTable.from_dict(table.to_dict()).flat_limit == 0.5
    old = {k: v for k, v in table.to_dict().items() if k != "flat_limit"}
    assert EdgeTable.from_dict(old).flat_limit == 1.0  # tables before: no limit
    with pytest.raises(CheckpointError, match="flat_limit"):
        EdgeTable.from_dict({**table.to_dict(), "flat_limit": 0.0})
    pair = (torch.rand(1, 3, 32, 32), torch.rand(1, 3, 64, 64))
    assert calibrate(model, [pair], bins=1, flat_limit=1.0).flat_limit == 1.0
    for bad in (0.0, 1.5):
        with pytest.raises(InputError, match="flat_limit"):
            calibrate(model, [pair], flat_limit=bad)
