"""The model's-eye view: crop geometry by hand and against the real transforms, and the drawn sheet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from latent.errors import InputError
from latent.modelcard import model_transform
from latent.plotting.inputs import plot_model_inputs
from latent.show_inputs import GEOMETRY_COLUMNS, crop_geometry, denormalise, show_inputs

SHORTEST_224 = {"resize_mode": "shortest", "resize_size": [224], "crop_size": [224, 224], "image_size": [224, 224]}


def _box(g):
    return g["x0"], g["x1"], g["y0"], g["y1"]


def test_crop_geometry_by_hand():
    # 400x200, shorter side to 224 -> 448x224, centre crop 224 keeps [112, 336) -> [100, 300) of the original
    g = crop_geometry(400, 200, SHORTEST_224)
    assert (g["resized_width"], g["resized_height"]) == (448, 224)
    assert _box(g) == (100.0, 300.0, 0.0, 200.0)
    assert g["visible_fraction"] == pytest.approx(0.5) and g["aspect_distortion"] == 1.0
    # portrait: the same on y
    assert _box(crop_geometry(200, 400, SHORTEST_224)) == (0.0, 200.0, 100.0, 300.0)
    # square: everything seen
    g = crop_geometry(300, 300, SHORTEST_224)
    assert _box(g) == (0.0, 300.0, 0.0, 300.0) and g["visible_fraction"] == 1.0
    # torchvision's int(round(...)) is Python's round: (449 - 224) / 2 = 112.5 -> 112 (half to even)
    assert crop_geometry(449, 224, SHORTEST_224)["x0"] == 112.0
    # timm crop_pct 0.9: shorter side to 248, crop 224: 400x200 -> 496x248, crop at x 136, y 12
    timm = {"resize_mode": "shortest", "resize_size": [248], "crop_size": [224, 224], "image_size": [224, 224]}
    g = crop_geometry(400, 200, timm)
    assert (g["resized_width"], g["resized_height"]) == (496, 248)
    assert _box(g) == pytest.approx((136 * 400 / 496, 360 * 400 / 496, 12 * 200 / 248, 236 * 200 / 248))
    # squash: nothing cropped, the aspect changes: 224/200 vertically over 224/400 horizontally = 2
    squash = {"resize_mode": "squash", "resize_size": [224, 224], "crop_size": None, "image_size": [224, 224]}
    g = crop_geometry(400, 200, squash)
    assert _box(g) == (0.0, 400.0, 0.0, 200.0) and g["aspect_distortion"] == pytest.approx(2.0)
    # longest: fit 400x200 into 224x224 -> 224x112, padded 56 above and below
    longest = {"resize_mode": "longest", "resize_size": [224, 224], "crop_size": [224, 224], "image_size": [224, 224]}
    g = crop_geometry(400, 200, longest)
    assert (g["resized_width"], g["resized_height"]) == (224, 112)
    assert (g["pad_top"], g["pad_bottom"], g["pad_left"]) == (56, 56, 0) and g["visible_fraction"] == 1.0


def test_crop_geometry_refuses_bad_input():
    with pytest.raises(InputError, match="'width'"):
        crop_geometry(0, 10, SHORTEST_224)
    with pytest.raises(InputError, match="'transform_info'"):
        crop_geometry(10, 10, {"crop_size": [2, 2]})


def test_identity_resize_keeps_exactly_the_predicted_columns():
    """451x224 through the real ViT-L/14 transform: the resize is the identity, so the input is columns [114, 338).

    (451 - 224) / 2 = 113.5 rounds to 114 (Python's round, as torchvision uses it), not 113.
    """
    transform, geo, _ = model_transform("random-vit-l-14")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(224, 451, 3), dtype=np.uint8)
    g = crop_geometry(451, 224, geo)
    seen = denormalise(transform(Image.fromarray(pixels)), geo["mean"], geo["std"])
    x0, x1 = int(g["x0"]), int(g["x1"])
    assert (x0, x1) == (114, 338)
    assert np.abs(seen - pixels[:, x0:x1] / 255.0).max() < 1e-5


@pytest.mark.parametrize("model", ["random-vit-l-14", "random-timm-tiny", "random-dinov2-vit-l-14"])
@pytest.mark.parametrize("size", [(400, 200), (200, 400), (333, 517), (640, 481)])
def test_painted_visible_box_is_what_the_transform_keeps(model, size):
    """Green inside the predicted box, red outside: the model's input is green except its outermost pixels.

    A box predicted too wide puts red well inside the input; one predicted too narrow lets the red painted
    inside the true box in. Only resampling at the very edge (bicubic support) may mix the two.
    """
    transform, geo, _ = model_transform(model)
    w, h = size
    g = crop_geometry(w, h, geo)
    pixels = np.zeros((h, w, 3), dtype=np.uint8)
    pixels[..., 0] = 255
    xs, ys = np.arange(w) + 0.5, np.arange(h) + 0.5  # pixel centres
    inside = ((xs >= g["x0"]) & (xs < g["x1"]))[None, :] & ((ys >= g["y0"]) & (ys < g["y1"]))[:, None]
    pixels[inside] = (0, 255, 0)
    seen = denormalise(transform(Image.fromarray(pixels)), geo["mean"], geo["std"])
    assert seen.shape[:2] == tuple(geo["image_size"])
    core = seen[3:-3, 3:-3]
    assert core[..., 0].max() < 0.05 and core[..., 1].min() > 0.95


def test_denormalise_undoes_the_normalisation():
    transform, geo, _ = model_transform("random-tiny")
    image = Image.new("RGB", (64, 64), (51, 102, 204))
    seen = denormalise(transform(image), geo["mean"], geo["std"])
    assert seen.shape == (64, 64, 3)
    assert seen[10, 10] == pytest.approx(np.array([51, 102, 204]) / 255.0, abs=1e-5)


def _folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    sizes = {"a/wide.png": (400, 200), "a/tall.png": (200, 400), "b/square.png": (300, 300), "b/odd.png": (333, 517)}
    for rel, size in sizes.items():
        Image.new("RGB", size, (40, 160, 90)).save(root / rel)
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root, sizes


def test_show_inputs_writes_sheet_and_geometry_table(tmp_path):
    root, sizes = _folder(tmp_path)
    out = tmp_path / "out"
    png = show_inputs(root, out, model="random-tiny", n=16, patch_grid=True)
    assert png == out / "model_inputs.png" and png.stat().st_size > 0 and (out / "model_inputs.pdf").is_file()
    table = pd.read_csv(out / "model_inputs.csv")
    assert list(table.columns) == list(GEOMETRY_COLUMNS)
    assert len(table) == 5  # 4 images and the broken file, recorded with its reason
    broken = table[table["id"] == "b/broken.jpg"]
    assert len(broken) == 1 and "corrupt" in broken["error"].iloc[0] and broken["width"].isna().all()
    assert table.loc[table["id"] != "b/broken.jpg", "error"].isna().all()
    _, geo, _ = model_transform("random-tiny")
    for rel, (w, h) in sizes.items():
        row = table[table["id"] == rel].iloc[0]
        g = crop_geometry(w, h, geo)
        assert (int(row["width"]), int(row["height"])) == (w, h)
        assert [float(row[k]) for k in ("x0", "x1", "y0", "y1")] == pytest.approx(list(_box(g)))
        assert row["patch_grid"] == "4x4" and int(row["patch_size"]) == 16


def test_show_inputs_sample_is_seeded_and_reads_manifests(tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(10):
        Image.new("RGB", (50 + i, 40), (i * 20, 0, 0)).save(root / f"{i}.png")
    ids = []
    for seed in (0, 0, 1):
        show_inputs(root, tmp_path / f"s{seed}", model="random-tiny", n=3, seed=seed)
        ids.append(list(pd.read_csv(tmp_path / f"s{seed}" / "model_inputs.csv")["id"]))
    assert ids[0] == ids[1] and ids[0] != ids[2] and len(ids[0]) == 3
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"file_name": [f"many/{i}.png" for i in range(4)]}).to_csv(manifest, index=False)
    show_inputs(manifest, tmp_path / "m", model="random-tiny", n=4, path_column="file_name")
    assert len(pd.read_csv(tmp_path / "m" / "model_inputs.csv")) == 4
    with pytest.raises(InputError, match="'n'") as e:
        show_inputs(root, tmp_path / "bad", model="random-tiny", n=0)
    assert "\n" not in str(e.value)


def test_sheet_draws_the_shading_the_inputs_and_the_grid():
    transform, geo, patch = model_transform("random-tiny")
    panels = []
    for i, (w, h) in enumerate([(400, 200), (200, 400), (300, 300)]):
        image = Image.new("RGB", (w, h), (200, 30, 30))
        panels.append({"id": f"img{i}", "original": np.asarray(image), "geometry": crop_geometry(w, h, geo),
                       "input": denormalise(transform(image), geo["mean"], geo["std"])})
    fig = plot_model_inputs(panels, geo, model="random-tiny", patch_size=patch)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 6
    for k, p in enumerate(panels):
        ax_o, ax_i = axes[2 * k], axes[2 * k + 1]
        g = p["geometry"]
        unseen = [a for a in ax_o.patches if a.get_gid() == "unseen"]
        shaded = sum(r.get_width() * r.get_height() for r in unseen)
        assert shaded == pytest.approx(g["width"] * g["height"] * (1 - g["visible_fraction"]))
        box = next(a for a in ax_o.patches if a.get_gid() == "visible-box")
        assert (box.get_x() + 0.5, box.get_x() + 0.5 + box.get_width()) == pytest.approx((g["x0"], g["x1"]))
        assert ax_i.images[0].get_array().shape[:2] == (64, 64)
        grid = [ln for ln in ax_i.lines if ln.get_gid() == "patch-grid"]
        assert len(grid) == 2 * (64 // 16 - 1)
        assert f"sees {100 * g['visible_fraction']:.0f}%" in ax_o.get_title()
        assert "4x4 patches" in ax_i.get_title()
    assert "shorter side resized to 64 px" in fig._suptitle.get_text().replace("\n", " ")
    # the wide image's unseen margins are x in [0, 100) and [300, 400)
    xs = sorted(r.get_x() + 0.5 for r in axes[0].patches if r.get_gid() == "unseen")
    assert xs == pytest.approx([0.0, 300.0])


def test_cub10_sheet(shared, tmp_path):
    birds = shared("cub10", "birds")
    png = show_inputs(birds, tmp_path / "cub10", model="bioclip-2", n=8, patch_grid=True)
    table = pd.read_csv(tmp_path / "cub10" / "model_inputs.csv", keep_default_na=False)
    assert png.is_file() and len(table) == 8 and (table["error"] == "").all()
    assert (table["patch_grid"] == "16x16").all()
    # every cub10 photo is wider or taller than square: a centre crop always cuts something
    assert (table["visible_fraction"] <= 1.0).all() and (table["visible_fraction"] > 0.4).all()


def test_cli_show_inputs_and_describe(tmp_path, capsys):
    """The CLI layer (proposed in /tmp/proposed/h18a.diff): runs once latent/cli.py has the commands."""
    from latent import cli

    if not hasattr(cli, "cmd_show_inputs"):
        pytest.skip("latent/cli.py does not have show-inputs yet (the h18a CLI diff is not applied)")
    root, _ = _folder(tmp_path)
    assert cli.main(["show-inputs", str(root), "--model", "random-tiny", "--out", str(tmp_path / "o"), "--n", "3",
                     "--patch-grid"]) == 0
    assert len(pd.read_csv(tmp_path / "o" / "model_inputs.csv")) == 3
    capsys.readouterr()
    assert cli.main(["models", "--describe", "random-timm-tiny", "--json"]) == 0
    import json

    card = json.loads(capsys.readouterr().out)
    assert card["parameters"]["total"] == 5_524_416 and card["text"] is None
    assert cli.main(["models", "--describe", "no-such-model"]) == 2
    assert cli.main(["show-inputs", str(root), "--out", str(tmp_path / "x"), "--n", "0"]) == 2
