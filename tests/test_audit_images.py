"""Image properties and exact duplicates (latent.audit.images): flags set exactly where planted in real files."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import AxesImage
from PIL import Image, ImageFilter

from latent.audit import images as audit_images
from latent.audit.images import (
    FLAG_ORDER,
    PROPERTY_COLUMNS,
    badness_order,
    contact_sheet,
    draw_contact_sheet,
    exact_duplicates,
    image_flags_summary,
    image_properties,
)
from latent.errors import InputError


def _texture(height: int, width: int, seed: int, block: int = 8, low: int = 30, high: int = 225) -> np.ndarray:
    """A sharp colour texture: random blocks of ``block`` pixels, levels in [low, high) (no clipping)."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(low, high, size=(-(-height // block), -(-width // block), 3))
    return np.kron(cells, np.ones((block, block, 1), dtype=np.int64))[:height, :width].astype(np.uint8)


def _scene(height: int, width: int, seed: int, shift: int) -> np.ndarray:
    """A colour texture whose channels follow one luminance (as in a photo), shifted by ``shift`` levels and
    clipped: +110 blows out every pixel brighter than ~145 to white in all channels, -110 crushes the dark ones."""
    rng = np.random.default_rng(seed)
    luma = _texture(height, width, seed)[..., :1].astype(int)
    colour = luma + rng.integers(-20, 21, size=(height, width, 3))
    return np.clip(colour + shift, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict[str, str]:
    """Real image files, one per planted property; ``clean*`` files have no flag."""
    root = tmp_path_factory.mktemp("images")
    files: dict[str, str] = {}

    def save(name: str, image: Image.Image, **kw) -> None:
        path = root / name
        image.save(path, **kw)
        files[name] = str(path)

    save("clean.jpg", Image.fromarray(_texture(200, 300, 0)), quality=95)
    save("clean.png", Image.fromarray(_texture(240, 240, 1)))
    save("grey.png", Image.fromarray(_texture(200, 200, 2)[..., 0]))  # mode L
    grey3 = np.repeat(_texture(200, 260, 3)[..., :1], 3, axis=2)
    save("grey_rgb.jpg", Image.fromarray(grey3), quality=90)  # RGB file, equal channels
    save("tiny.png", Image.fromarray(_texture(30, 40, 4, block=4)))
    save("blurred.jpg", Image.fromarray(_texture(300, 300, 5)).filter(ImageFilter.GaussianBlur(6)), quality=95)
    save("over.jpg", Image.fromarray(_scene(220, 220, 6, shift=+110)), quality=95)  # blown-out highlights
    save("under.png", Image.fromarray(_scene(220, 220, 7, shift=-110)))  # crushed shadows
    save("dup_a.jpg", Image.fromarray(_texture(256, 320, 8)), quality=92)
    shutil.copyfile(files["dup_a.jpg"], root / "dup_b.jpg")
    files["dup_b.jpg"] = str(root / "dup_b.jpg")
    save("resized.jpg", Image.open(files["dup_a.jpg"]).resize((250, 200)), quality=92)  # near, NOT exact
    data = (root / "clean.jpg").read_bytes()
    (root / "corrupt.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    files["corrupt.jpg"] = str(root / "corrupt.jpg")
    (root / "garbage.jpg").write_bytes(b"this is not an image at all")
    files["garbage.jpg"] = str(root / "garbage.jpg")
    files["missing.jpg"] = str(root / "missing.jpg")
    return files


@pytest.fixture(scope="module")
def props(planted) -> pd.DataFrame:
    return image_properties(list(planted.values()))


def _by_name(props: pd.DataFrame) -> pd.DataFrame:
    return props.assign(name=props["path"].map(lambda p: p.rsplit("/", 1)[-1])).set_index("name")


PLANTED_FLAGS = {
    "greyscale": {"grey.png", "grey_rgb.jpg"},
    "tiny": {"tiny.png"},
    "blurred": {"blurred.jpg"},
    "overexposed": {"over.jpg"},
    "underexposed": {"under.png"},
}
UNREADABLE = {"corrupt.jpg", "garbage.jpg", "missing.jpg"}


def test_columns_and_order(planted, props):
    assert tuple(props.columns) == PROPERTY_COLUMNS
    assert props["path"].tolist() == list(planted.values())
    for column in ("readable", "greyscale", "tiny", "blurred", "overexposed", "underexposed"):
        assert props[column].dtype == bool


@pytest.mark.parametrize("flag", sorted(PLANTED_FLAGS))
def test_each_flag_exactly_where_planted(props, flag):
    table = _by_name(props)
    assert set(table.index[table[flag]]) == PLANTED_FLAGS[flag]


def test_unreadable_files_get_a_reason_not_an_exception(props):
    table = _by_name(props)
    assert set(table.index[~table["readable"]]) == UNREADABLE
    assert "truncated" in table.loc["corrupt.jpg", "error"]
    assert table.loc["garbage.jpg", "error"].startswith("truncated or corrupt image")
    assert table.loc["missing.jpg", "error"] == "file not found"
    assert (table.loc[sorted(UNREADABLE), "error"] != "").all()
    assert (table.loc[table["readable"], "error"] == "").all()
    # bytes of a broken file are still hashed; a missing file has none
    assert table.loc["corrupt.jpg", "sha256"] != "" and table.loc["missing.jpg", "sha256"] == ""
    assert np.isnan(table.loc["corrupt.jpg", "width"])
    assert not table.loc[sorted(UNREADABLE), list(FLAG_ORDER)].any().any()


def test_header_fields(props):
    table = _by_name(props)
    assert table.loc["clean.jpg", ["format", "mode", "width", "height"]].tolist() == ["JPEG", "RGB", 300.0, 200.0]
    assert table.loc["grey.png", ["format", "mode"]].tolist() == ["PNG", "L"]
    assert table.loc["grey_rgb.jpg", "mode"] == "RGB"  # greyscale found from the pixels, not the mode
    assert table.loc["tiny.png", ["width", "height"]].tolist() == [40.0, 30.0]
    assert table.loc["clean.jpg", "blur"] > table.loc["blurred.jpg", "blur"] * 10


def test_crop_loss_hand_computed_for_300x200(planted):
    path = [planted["clean.jpg"]]
    crop = image_properties(path).iloc[0]
    assert crop["aspect"] == pytest.approx(1.5)
    assert crop["crop_loss"] == pytest.approx(1 - 200 / 300)
    assert crop["distortion"] == 1.0
    assert crop["upscale"] == pytest.approx(224 / 200)
    squash = image_properties(path, resize_mode="squash", input_size=336).iloc[0]
    assert squash["crop_loss"] == 0.0
    assert squash["distortion"] == pytest.approx(1.5)
    assert squash["upscale"] == pytest.approx(336 / 200)


def test_exif_rotation_swaps_width_and_height(tmp_path):
    image = Image.fromarray(_texture(200, 300, 9))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    row = image_properties([path]).iloc[0]
    assert (row["width"], row["height"]) == (200.0, 300.0)


def test_sixteen_bit_grey_is_read_and_grey(tmp_path):
    levels = (_texture(100, 120, 10)[..., 0].astype(np.uint16) * 257)
    path = tmp_path / "deep.png"
    Image.fromarray(levels).save(path)
    row = image_properties([path]).iloc[0]
    assert row["readable"] and row["greyscale"] and not row["overexposed"] and not row["blurred"]
    assert 0.3 < row["brightness"] < 0.7


def test_exact_duplicates_groups_and_pairs(planted, props):
    groups = exact_duplicates(props)
    assert list(groups.columns) == ["group", "sha256", "path", "group_size"]
    assert groups["path"].tolist() == [planted["dup_a.jpg"], planted["dup_b.jpg"]]
    assert groups["group"].tolist() == [0, 0] and groups["group_size"].tolist() == [2, 2]
    assert planted["resized.jpg"] not in set(groups["path"])  # a resized copy is not an exact duplicate
    pairs = exact_duplicates(props, as_pairs=True)
    expected = [[planted["dup_a.jpg"], planted["dup_b.jpg"], "exact"]]
    assert pairs[["path_a", "path_b", "kind"]].values.tolist() == expected


def test_exact_duplicates_large_group_gives_k_minus_one_pairs():
    props = pd.DataFrame({"path": [f"f{i}" for i in range(6)], "sha256": ["x", "y", "x", "x", "", ""]})
    pairs = exact_duplicates(props, as_pairs=True)
    assert pairs[["path_a", "path_b"]].values.tolist() == [["f0", "f2"], ["f0", "f3"]]
    assert exact_duplicates(props.iloc[[0, 1]]).empty  # no duplicate: empty with its columns
    assert list(exact_duplicates(props.iloc[[0, 1]]).columns) == ["group", "sha256", "path", "group_size"]


def test_flags_summary_long_format(planted, props):
    summary = image_flags_summary(props)
    assert list(summary.columns) == ["rank", "metric", "value", "ci_low", "ci_high", "n", "unit"]
    assert (summary["rank"] == "all").all() and summary["ci_low"].isna().all()
    values = summary.set_index("metric")["value"]
    n = summary.set_index("metric")["n"]
    total, readable = len(planted), len(planted) - len(UNREADABLE)
    assert values["images"] == total and values["unreadable"] == len(UNREADABLE) and n["unreadable"] == total
    for flag, names in PLANTED_FLAGS.items():
        assert values[flag] == len(names) and n[flag] == readable
    assert values["exact_duplicate_groups"] == 1 and values["exact_duplicate_files"] == 1
    assert values["format:JPEG"] + values["format:PNG"] == readable
    assert values["min_side_min"] == 30.0
    ok = props[props["readable"]]
    assert values["crop_loss_mean"] == pytest.approx(ok["crop_loss"].mean())
    assert values["aspect_median"] == pytest.approx(ok["aspect"].median())


def test_badness_order_documented(props):
    worst = badness_order(props)
    names = [p.rsplit("/", 1)[-1] for p in worst["path"]]
    assert names[0] == "blurred.jpg" and names[1] == "tiny.png"
    assert set(names[2:4]) == {"grey.png", "grey_rgb.jpg"}
    assert set(names[4:]) == {"over.jpg", "under.png"}
    assert not set(names) & UNREADABLE
    assert worst.iloc[0]["flags"] == "blurred"


def test_contact_sheet_draws_flagged_images_with_captions(props, tmp_path):
    fig = draw_contact_sheet(props)
    images = [a for ax in fig.axes for a in ax.get_children() if isinstance(a, AxesImage)]
    assert len(images) == 6  # the six flagged readable images; unreadable and clean files skipped
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert len(titles) == 6
    assert "blurred.jpg\nblurred\n300x300 px, blur " in titles[0] and "tiny.png\ntiny\n40x30 px" in titles[1]
    assert not any(bad in t for t in titles for bad in UNREADABLE | {"clean.jpg", "dup_a.jpg"})
    drawn = dict(zip(titles, images))
    assert [im.get_array().ndim for t, im in drawn.items() if "grey.png" in t] == [2]  # the L image, in grey
    assert [im.get_cmap().name for t, im in drawn.items() if "grey.png" in t] == ["gray"]
    few = draw_contact_sheet(props, n=2)
    assert sum(isinstance(a, AxesImage) for ax in few.axes for a in ax.get_children()) == 2
    written = contact_sheet(props, tmp_path / "worst.png", n=4)
    assert written.suffix == ".png" and written.stat().st_size > 0


def test_contact_sheet_without_flags_says_so(props):
    clean = props[props["path"].str.endswith(("clean.jpg", "clean.png"))]
    fig = draw_contact_sheet(clean)
    assert not [a for ax in fig.axes for a in ax.get_children() if isinstance(a, AxesImage)]
    assert any("No flagged image among 2 readable" in t.get_text() for ax in fig.axes for t in ax.texts)


@pytest.mark.parametrize("kwargs, match", [
    ({"paths": "one.jpg"}, "'paths'.*single path"),
    ({"paths": [1, 2]}, "'paths'.*int"),
    ({"paths": [], "input_size": 0}, "'input_size'.*0"),
    ({"paths": [], "resize_mode": "pad"}, "'resize_mode'.*'pad'"),
])
def test_bad_input_is_one_line_input_error(kwargs, match):
    paths = kwargs.pop("paths")
    with pytest.raises(InputError, match=match) as info:
        image_properties(paths, **kwargs)
    assert "\n" not in str(info.value)


def test_empty_paths_give_empty_table():
    props = image_properties([])
    assert props.empty and tuple(props.columns) == PROPERTY_COLUMNS
    assert image_flags_summary(props).set_index("metric").loc["images", "value"] == 0


def test_props_must_be_the_table():
    with pytest.raises(InputError, match="'props'.*sha256"):
        exact_duplicates(pd.DataFrame({"path": ["a"]}))


def test_real_cub10_photos(shared):
    from latent.images import find_images

    birds = shared("cub10", "birds")
    props = image_properties([r.path for r in find_images(birds)])
    assert len(props) == 306 and props["readable"].all() and (props["format"] == "JPEG").all()
    assert exact_duplicates(props).empty
    # the blur threshold was chosen so that no original CUB photo is flagged (see BLUR_THRESHOLD)
    assert not props["blurred"].any() and props["blur"].min() > audit_images.BLUR_THRESHOLD
    assert not props["greyscale"].any() and not props["tiny"].any()
    assert props["crop_loss"].between(0, 0.6).all()


def test_planted_defects_in_real_cub10_photos(shared, tmp_path):
    """Real photos of two species with a grey, a tiny and a blurred one planted, an exact copy across species
    and a resized copy: each found, and nothing else flagged."""
    birds = shared("cub10", "birds")
    folders = sorted(p for p in birds.iterdir() if p.is_dir())[:2]
    paths = []
    for folder in folders:
        (tmp_path / folder.name).mkdir()
        for photo in sorted(folder.glob("*.jpg"))[:6]:
            paths.append(tmp_path / folder.name / photo.name)
            shutil.copyfile(photo, paths[-1])
    a, b = (tmp_path / f.name for f in folders)
    Image.open(paths[0]).convert("L").save(a / "planted_grey.jpg")
    Image.open(paths[1]).resize((56, 42)).save(a / "planted_tiny.jpg")
    Image.open(paths[2]).filter(ImageFilter.GaussianBlur(3)).save(a / "planted_blurred.jpg")
    shutil.copyfile(paths[3], b / "planted_exact_copy.jpg")  # same bytes, other species
    Image.open(paths[4]).resize((300, 220)).save(b / "planted_resized.jpg")
    planted = ["planted_grey.jpg", "planted_tiny.jpg", "planted_blurred.jpg", "planted_exact_copy.jpg",
               "planted_resized.jpg"]
    props = image_properties(paths + [a / planted[0], a / planted[1], a / planted[2], b / planted[3], b / planted[4]])
    table = _by_name(props)
    assert props["readable"].all()
    assert set(table.index[table["greyscale"]]) == {"planted_grey.jpg"}
    assert set(table.index[table["tiny"]]) == {"planted_tiny.jpg"}
    assert set(table.index[table["blurred"]]) == {"planted_blurred.jpg"}
    pairs = exact_duplicates(props, as_pairs=True)
    assert pairs[["path_a", "path_b"]].values.tolist() == [[str(paths[3]), str(b / "planted_exact_copy.jpg")]]
