"""Tests of latent.images: every image is generated here with PIL/numpy, each case checks its outcome."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile

from latent.errors import InputError, LatentError
from latent.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageDataset,
    ImageLoadError,
    ImageRecord,
    collate_skip_failed,
    find_images,
    load_rgb,
    records_from_manifest,
)

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def _close(pixel, expected, tol):
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected))


def _mean_rgb(im: Image.Image, box) -> tuple[float, ...]:
    return tuple(np.asarray(im.crop(box), dtype=float).reshape(-1, 3).mean(axis=0))


def _solid_png(path: Path, size=(8, 8), color=(10, 200, 30)) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


def _jpeg(path: Path, size=(64, 48)) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
    return path


# --------------------------------------------------------------------------------------------------
# load_rgb: conversions
# --------------------------------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)  # h=20, w=40
    a[:, :20] = RED
    a[:, 20:] = BLUE
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # stored rotated: display needs 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    assert Image.open(path).size == (40, 20)  # stored sideways

    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (20, 40)
    top = _mean_rgb(out, (2, 2, 18, 16))
    bottom = _mean_rgb(out, (2, 24, 18, 38))
    assert _close(top, RED, 30), top
    assert _close(bottom, BLUE, 30), bottom


def test_cmyk_jpeg_becomes_rgb_of_the_same_colour(tmp_path):
    path = tmp_path / "cyan.jpg"
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    out = load_rgb(path)
    assert out.mode == "RGB"
    assert _close(out.getpixel((8, 8)), (0, 255, 255), 20), out.getpixel((8, 8))


def test_greyscale_png(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (8, 8), 77).save(path)
    out = load_rgb(path)
    assert out.mode == "RGB" and out.getpixel((3, 3)) == (77, 77, 77)


@pytest.mark.parametrize("value, expected", [(32768, 128), (65535, 255), (0, 0), (1000, 4)])
def test_16bit_greyscale_png_is_scaled_not_clipped(tmp_path, value, expected):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((8, 8), value, np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")  # I;16 in Pillow >= 10
    out = load_rgb(path)
    assert out.mode == "RGB"
    assert out.getpixel((2, 2)) == (expected,) * 3


def test_16bit_greyscale_tiff_keeps_its_gradient(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 16).astype(np.uint16), (4, 1))
    path = tmp_path / "ramp16.tif"
    Image.fromarray(ramp).save(path)
    out = np.asarray(load_rgb(path))[..., 0]
    np.testing.assert_array_equal(out[0], np.rint(ramp[0] / 257).astype(np.uint8))


def test_32bit_int_and_float_greyscale(tmp_path):
    Image.fromarray(np.full((4, 4), 32768, np.int32)).save(tmp_path / "i32.tif")
    assert load_rgb(tmp_path / "i32.tif").getpixel((0, 0)) == (128, 128, 128)
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "f01.tif")
    assert load_rgb(tmp_path / "f01.tif").getpixel((0, 0)) == (128, 128, 128)
    f = np.zeros((4, 4), np.float32)
    f[:, 2:] = 1000.0
    f[0, 0] = np.nan
    Image.fromarray(f).save(tmp_path / "fbig.tif")
    out = np.asarray(load_rgb(tmp_path / "fbig.tif"))[..., 0]
    assert out[1, 0] == 0 and out[1, 3] == 255 and out[0, 0] == 0


def test_palette_png(tmp_path):
    img = Image.new("RGB", (8, 8), (200, 30, 40)).quantize(4)
    assert img.mode == "P"
    img.save(tmp_path / "pal.png")
    assert _close(load_rgb(tmp_path / "pal.png").getpixel((4, 4)), (200, 30, 40), 4)


def test_palette_png_with_transparency_is_white(tmp_path):
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 200, 30, 40] + [0] * (254 * 3))
    img.putpixel((0, 0), 1)
    img.save(tmp_path / "pal_t.png", transparency=0)
    out = load_rgb(tmp_path / "pal_t.png")
    assert out.getpixel((4, 4)) == WHITE  # transparent index 0 is black in the palette
    assert out.getpixel((0, 0)) == (200, 30, 40)


def test_rgba_alpha_zero_becomes_white_and_half_alpha_blends(tmp_path):
    a = np.zeros((8, 8, 4), np.uint8)
    a[:, :4] = (0, 0, 0, 0)  # transparent black
    a[:, 4:] = (0, 0, 255, 128)  # half-transparent blue
    Image.fromarray(a, "RGBA").save(tmp_path / "rgba.png")
    out = load_rgb(tmp_path / "rgba.png")
    assert out.getpixel((1, 1)) == WHITE
    assert _close(out.getpixel((6, 6)), (127, 127, 255), 2), out.getpixel((6, 6))


def test_la_alpha_zero_becomes_white(tmp_path):
    a = np.zeros((8, 8, 2), np.uint8)
    a[:, 4:] = (50, 255)
    Image.fromarray(a, "LA").save(tmp_path / "la.png")
    assert Image.open(tmp_path / "la.png").mode == "LA"
    out = load_rgb(tmp_path / "la.png")
    assert out.getpixel((1, 1)) == WHITE and out.getpixel((6, 6)) == (50, 50, 50)


@pytest.mark.parametrize("name, kwargs", [("x.webp", {"lossless": True}), ("x.tiff", {}), ("x.bmp", {}), ("x.TIF", {})])
def test_other_formats(tmp_path, name, kwargs):
    path = tmp_path / name
    Image.new("RGB", (10, 6), (10, 200, 30)).save(path, **kwargs)
    out = load_rgb(path)
    assert out.size == (10, 6) and out.getpixel((5, 3)) == (10, 200, 30)


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, BLUE)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(tmp_path / "anim.gif").n_frames == 2
    assert load_rgb(tmp_path / "anim.gif").getpixel((4, 4)) == RED


def test_misnamed_file_opens_by_content(tmp_path):
    path = _solid_png(tmp_path / "actually_png.jpg")
    assert load_rgb(path).getpixel((0, 0)) == (10, 200, 30)


def test_result_is_detached_from_the_file(tmp_path):
    path = _solid_png(tmp_path / "a.png")
    out = load_rgb(path)
    path.unlink()
    assert out.getpixel((0, 0)) == (10, 200, 30) and out.copy().size == (8, 8)


# --------------------------------------------------------------------------------------------------
# load_rgb: failures, each with its reason
# --------------------------------------------------------------------------------------------------


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError, match=r"empty file \(0 bytes\)") as info:
        load_rgb(path)
    assert info.value.reason == "empty file (0 bytes)" and info.value.path == path


def test_truncated_jpeg_fails_instead_of_padding_grey(tmp_path):
    path = _jpeg(tmp_path / "cut.jpg")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(ImageLoadError, match=r"truncated or corrupt image: .*truncated") as info:
        load_rgb(path)
    assert info.value.reason.startswith("truncated or corrupt image: ")


def test_truncated_png(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"^.*truncated or corrupt image: "):
        load_rgb(path)


def test_jpeg_cut_inside_its_header_is_corrupt_not_a_non_image(tmp_path):
    path = _jpeg(tmp_path / "stub.jpg")
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ImageLoadError, match="truncated or corrupt image: unreadable header"):
        load_rgb(path)


def test_reduce_to_decodes_large_jpegs_smaller_but_not_below_the_size(tmp_path):
    path = _jpeg(tmp_path / "big.jpg", size=(400, 300))
    assert load_rgb(path).size == (400, 300)
    assert load_rgb(path, reduce_to=100).size == (200, 150)  # 1/2: 1/4 would give 75 < 100
    assert load_rgb(path, reduce_to=30).size == (50, 38)  # 1/8
    png = _solid_png(tmp_path / "big.png", size=(400, 300))
    assert load_rgb(png, reduce_to=30).size == (400, 300)  # not a JPEG: full size


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture of a bird\n")
    with pytest.raises(ImageLoadError, match="not an image: cannot identify image file") as info:
        load_rgb(path)
    assert info.value.reason == "not an image: cannot identify image file"


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (3000, 3000), 0).convert("1").save(path)  # tiny file, 9 Mpx
    assert path.stat().st_size < 50_000
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageLoadError, match=r"image too large: 3000 x 3000 pixels > limit of 1000000"):
        load_rgb(path, max_pixels=1_000_000)
    assert Image.MAX_IMAGE_PIXELS == before  # the global limit is untouched
    assert load_rgb(path).size == (3000, 3000)  # under the default limit it loads


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageLoadError, match="file not found"):
        load_rgb(tmp_path / "nope.jpg")
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_rgb(tmp_path)


def test_bad_max_pixels_is_an_input_error(tmp_path):
    path = _solid_png(tmp_path / "a.png")
    with pytest.raises(InputError, match="'max_pixels' parameter"):
        load_rgb(path, max_pixels=0)
    with pytest.raises(InputError, match="'reduce_to' parameter of load_rgb must be a positive int"):
        load_rgb(path, reduce_to=2.5)


def test_image_load_error_is_a_latent_error_and_pickles(tmp_path):
    err = ImageLoadError("empty file (0 bytes)", tmp_path / "x.jpg")
    assert isinstance(err, LatentError)
    back = pickle.loads(pickle.dumps(err))
    assert back.reason == err.reason and back.path == err.path and str(back) == str(err)
    assert str(ImageLoadError("why")) == "why"


def test_defaults_and_import_is_torch_free():
    assert DEFAULT_MAX_PIXELS == 2 * 89_478_485
    assert {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"} <= set(IMAGE_SUFFIXES)
    code = (
        "import sys, latent.images; from PIL import ImageFile; "
        "assert 'torch' not in sys.modules; assert not ImageFile.LOAD_TRUNCATED_IMAGES"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------------
# find_images
# --------------------------------------------------------------------------------------------------


def test_find_images_walks_nested_folders(tmp_path):
    root = tmp_path / "data"
    for rel in [
        "002.Laysan_Albatross/b.JPG",
        "001.Black_footed_Albatross/0001.png",
        "001.Black_footed_Albatross/0000.jpg",
        "001.Black_footed_Albatross/deeper/x.webp",
        "top.jpeg",
        "001.Black_footed_Albatross/._0000.jpg",  # macOS resource fork
        ".hidden/secret.jpg",
        "001.Black_footed_Albatross/notes.txt",
        "labels.csv",
        "noext",
    ]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (root / "link_to_self").symlink_to(root, target_is_directory=True)  # loop
    (root / "broken.jpg").symlink_to(root / "gone.jpg")

    records = find_images(root)
    ids = [r.id for r in records]
    assert ids == [
        "001.Black_footed_Albatross/0000.jpg",
        "001.Black_footed_Albatross/0001.png",
        "001.Black_footed_Albatross/deeper/x.webp",
        "002.Laysan_Albatross/b.JPG",
        "top.jpeg",
    ]
    assert ids == sorted(ids)
    assert [r.folder for r in records] == [
        "001.Black_footed_Albatross",
        "001.Black_footed_Albatross",
        "deeper",
        "002.Laysan_Albatross",
        "",
    ]
    for r in records:
        assert r.path.is_absolute() and r.path == root.absolute() / r.id and r.path.exists()
    assert find_images(str(root)) == records  # deterministic
    with pytest.raises(AttributeError):
        records[0].id = "other"  # frozen


def test_find_images_follows_a_symlinked_folder_once(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _solid_png(elsewhere / "a.png")
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    (root / "linked_again").symlink_to(elsewhere, target_is_directory=True)
    assert [r.id for r in find_images(root)] == ["linked/a.png"]


def test_find_images_bad_root(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        find_images(tmp_path / "nope")
    f = _solid_png(tmp_path / "a.png")
    with pytest.raises(InputError, match="is not a folder"):
        find_images(f)
    (tmp_path / "empty").mkdir()
    assert find_images(tmp_path / "empty") == []


# --------------------------------------------------------------------------------------------------
# records_from_manifest
# --------------------------------------------------------------------------------------------------


def test_records_from_manifest_resolves_relative_paths(tmp_path):
    absolute = str(tmp_path / "abs" / "z.png")
    table = pd.DataFrame({"file": ["birds/a.jpg", "b.png", absolute], "label": [1, 2, 3]})
    records = records_from_manifest(table, "file", root=tmp_path / "manifest_dir")
    assert [r.id for r in records] == ["birds/a.jpg", "b.png", absolute]
    assert records[0].path == tmp_path / "manifest_dir" / "birds" / "a.jpg"
    assert records[1].path == tmp_path / "manifest_dir" / "b.png"
    assert records[2].path == Path(absolute)
    assert [r.folder for r in records] == ["birds", "", "abs"]
    assert all(isinstance(r, ImageRecord) for r in records)


def test_records_from_manifest_default_root_is_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (record,) = records_from_manifest(pd.DataFrame({"path": ["x/y.jpg"]}), "path")
    assert record.path == tmp_path / "x" / "y.jpg"


def test_records_from_manifest_missing_column(tmp_path):
    table = pd.DataFrame({"filepath": ["a.jpg"], "species": ["x"]})
    with pytest.raises(InputError, match=r"'path'.*available columns: filepath, species"):
        records_from_manifest(table, "path", root=tmp_path)


def test_records_from_manifest_duplicates_and_empty(tmp_path):
    table = pd.DataFrame({"path": ["a.jpg", "b.jpg", "a.jpg", "./b.jpg", "c.jpg"]})
    with pytest.raises(InputError, match=r"more than once: a\.jpg, \./b\.jpg = b\.jpg") as info:
        records_from_manifest(table, "path", root=tmp_path)
    assert "c.jpg" not in str(info.value)
    with pytest.raises(InputError, match=r"empty in rows 1, 2"):
        records_from_manifest(pd.DataFrame({"path": ["a.jpg", None, " "]}), "path", root=tmp_path)


# --------------------------------------------------------------------------------------------------
# ImageDataset + collate_skip_failed through a real DataLoader
# --------------------------------------------------------------------------------------------------


def _write_mixed_folder(root: Path) -> dict[str, str]:
    """Good and bad files; returns {id: expected reason words} for the bad ones."""
    root.mkdir()
    for i in range(7):
        Image.new("RGB", (20 + i, 12), (i * 30, 100, 50)).save(root / f"good_{i}.png")
    Image.new("L", (9, 9), 40).save(root / "good_grey.jpg")
    (root / "bad_empty.jpg").write_bytes(b"")
    (root / "bad_text.jpg").write_text("hello")
    jpg = _jpeg(root / "bad_cut.jpg")
    jpg.write_bytes(jpg.read_bytes()[:400])
    Image.new("1", (1500, 1500)).save(root / "bad_bomb.png")
    return {
        "bad_empty.jpg": "empty file",
        "bad_text.jpg": "not an image",
        "bad_cut.jpg": "truncated or corrupt",
        "bad_bomb.png": "image too large",
    }


def _transform():
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((16, 16)), transforms.ToTensor()])


class _FailsOnWideImages:
    """A transform that raises for one image (picklable: top-level class)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, image):
        if image.size[0] == 26:
            raise RuntimeError("boom")
        return self.inner(image)


def test_dataloader_with_workers_skips_bad_files(tmp_path):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    bad = _write_mixed_folder(tmp_path / "mixed")
    records = find_images(tmp_path / "mixed")
    dataset = ImageDataset(records, _FailsOnWideImages(_transform()), max_pixels=1_000_000)
    assert len(dataset) == len(records) == 12
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_skip_failed)

    good_seen, failed = [], {}
    for batch in loader:
        assert batch["indices"].dtype == torch.long
        if len(batch["indices"]):
            assert batch["images"].shape == (len(batch["indices"]), 3, 16, 16)
        else:
            assert batch["images"].shape == (0,)
        good_seen += batch["indices"].tolist()
        failed.update(zip(batch["failed_indices"], batch["failed_reasons"]))

    ids = [r.id for r in records]
    expected_bad = {ids.index(name): words for name, words in bad.items()}
    expected_bad[ids.index("good_6.png")] = "RuntimeError: boom"  # 26 px wide: the transform fails
    assert sorted(good_seen) == sorted(set(range(len(records))) - set(expected_bad))
    assert len(good_seen) == len(set(good_seen))  # each once
    assert set(failed) == set(expected_bad)
    for index, words in expected_bad.items():
        assert words in failed[index], (ids[index], failed[index])


def test_collate_all_failed_and_mixed_shapes():
    torch = pytest.importorskip("torch")
    out = collate_skip_failed([{"index": 3, "image": None, "error": "empty file (0 bytes)"}])
    assert out["images"].shape == (0,) and out["indices"].tolist() == []
    assert out["failed_indices"] == [3] and out["failed_reasons"] == ["empty file (0 bytes)"]
    batch = [
        {"index": 0, "image": torch.zeros(3, 4, 4), "error": ""},
        {"index": 1, "image": torch.zeros(3, 5, 4), "error": ""},
    ]
    with pytest.raises(ValueError, match="different shapes"):
        collate_skip_failed(batch)


def test_dataset_item_and_pickling(tmp_path):
    path = _solid_png(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"")
    records = find_images(tmp_path)
    dataset = pickle.loads(pickle.dumps(ImageDataset(records, np.asarray)))
    ok, bad = dataset[0], dataset[1]
    assert ok["index"] == 0 and ok["error"] == "" and ok["image"].shape == (8, 8, 3)
    assert bad == {"index": 1, "image": None, "error": "empty file (0 bytes)"}
    assert records[0].path == path
    with pytest.raises(InputError, match="'transform' parameter"):
        ImageDataset(records, "not callable")
