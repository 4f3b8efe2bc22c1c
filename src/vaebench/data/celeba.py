"""CelebA aligned faces (Liu, Luo, Wang & Tang 2015, "Deep Learning Face Attributes in the Wild", ICCV;
http://mmlab.ie.cuhk.edu.hk/projects/CelebA.html), unlabelled: ``img_align_celeba.zip`` (202,599 JPEGs, 178 x 218)
and ``list_eval_partition.txt`` (the official split); centre crop then bilinear resize. Never downloaded."""
from __future__ import annotations

import io
import re
import zipfile
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt

from vaebench.data.common import (SPLIT_CAPS, DataIntegrityError, Prepared, index_sha256, resize_bilinear,
                                  seeded_subset)
from vaebench.data.fetch import verify_file
from vaebench.data.sources import DatasetSource, register_source
from vaebench.errors import one_line
from vaebench.registry import StrictConfig

ZIP = "img_align_celeba.zip"
PARTITION = "list_eval_partition.txt"
ZIP_FOLDER = "img_align_celeba/"
WIDTH, HEIGHT = 178, 218
PAGE = "http://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
PARTS = {0: "train", 1: "val", 2: "test"}
_LINE = re.compile(r"^(\d{6}\.jpg)\s+([012])$")


class CelebAConfig(StrictConfig):
    """How CelebA's aligned faces are cropped and resized (official split; unlabelled) and truncated."""

    image_size: Literal[64, 32] = Field(64, description=(
        "Height = width of the prepared images, after the centre crop (Pillow bilinear resize)."))
    crop: PositiveInt = Field(148, le=WIDTH, description=(
        "Side of the centre crop of the 178x218 (width x height) aligned images before the resize: left = "
        "round((178 - crop) / 2), top = round((218 - crop) / 2); 148 is the common convention (torchvision "
        "CenterCrop(148), Resize(64))."))
    split_seed: NonNegativeInt = Field(0, description="Seed of the max_* subsets: the first N of numpy "
                                                      "RandomState(split_seed).permutation(n) over a split.")
    max_train: PositiveInt | None = Field(None, description="Keep a seeded subset of N training images (null = all).")
    max_validation: PositiveInt | None = Field(None, description="Keep a seeded subset of N validation images "
                                                                 "(null = all).")
    max_test: PositiveInt | None = Field(None, description="Keep a seeded subset of N test images (null = all).")


def image_shape(settings: CelebAConfig) -> tuple[int, int, int]:
    """(C, H, W) of the prepared images: (3, image_size, image_size)."""
    return (3, settings.image_size, settings.image_size)


def crop_box(crop: int) -> tuple[int, int, int, int]:
    """Pillow's (left, top, right, bottom) of the centre ``crop`` square of a 178 x 218 image, as torchvision's
    ``center_crop``: (15, 35, 163, 183) for 148."""
    left, top = int(round((WIDTH - crop) / 2.0)), int(round((HEIGHT - crop) / 2.0))
    return (left, top, left + crop, top + crop)


def read_partition(path: Path) -> tuple[list[str], np.ndarray]:
    """(image names in file order, int64 partition 0 train / 1 validation / 2 test) of ``list_eval_partition.txt``.

    Raises:
        DataIntegrityError: not ASCII, a malformed line (shown), an image listed twice; names the file.
    """
    try:
        text = path.read_bytes().decode("ascii")
    except UnicodeDecodeError as exc:
        raise DataIntegrityError(f"{path}: not ASCII text ({one_line(exc)})") from None
    names, parts, seen = [], [], set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        m = _LINE.match(line)
        if m is None:
            raise DataIntegrityError(f"{path}: line {number} is {line[:80]!r}, expected '<6 digits>.jpg <0|1|2>' "
                                     "(0 = train, 1 = validation, 2 = test)")
        if m.group(1) in seen:
            raise DataIntegrityError(f"{path}: line {number} lists {m.group(1)} a second time")
        seen.add(m.group(1))
        names.append(m.group(1))
        parts.append(int(m.group(2)))
    if not names:
        raise DataIntegrityError(f"{path}: lists no image")
    return names, np.array(parts, dtype=np.int64)


def decode_face(buf: bytes, shown: str, crop: int, size: int) -> np.ndarray:
    """One JPEG as uint8 (3, size, size): RGB, :func:`crop_box`, bilinear resize. DataIntegrityError names
    ``shown``: not decodable, or not 178 x 218."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(buf))
        img.load()
        img = img.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - UnidentifiedImageError, OSError, SyntaxError, ...
        raise DataIntegrityError(f"{shown}: not a readable image ({one_line(exc)})") from None
    if img.size != (WIDTH, HEIGHT):
        raise DataIntegrityError(f"{shown}: image is {img.size[0]}x{img.size[1]} (width x height), the aligned "
                                 f"CelebA images are {WIDTH}x{HEIGHT}")
    cropped = np.asarray(img.crop(crop_box(crop)), dtype=np.uint8)
    return resize_bilinear(cropped[None], size)[0].transpose(2, 0, 1)


def prepare_celeba(source: DatasetSource, cfg: dict, folder: Path) -> Prepared:
    """Verify both files, split as the partition list says (``max_*``: seeded subsets), decode the selected images.
    Images (N, 3, S, S), labels -1, ``source_index_<split>``: line in the partition list.

    Raises:
        FileNotFoundError: a file is missing. DataIntegrityError: an MD5 mismatch, a bad partition line, a listed
            image missing from the zip, an unreadable zip or member, a bad image (names the member).
    """
    folder = Path(folder)
    sums = {f: verify_file(source, folder, f)["sha256"] for f in (ZIP, PARTITION)}
    names, parts = read_partition(folder / PARTITION)
    seed, size, crop = cfg["split_seed"], cfg["image_size"], cfg["crop"]
    index = {split: seeded_subset(np.flatnonzero(parts == p).astype(np.int64), cfg[SPLIT_CAPS[split]], seed)
             for p, split in PARTS.items()}
    path = folder / ZIP
    out = {s: np.empty((len(idx), 3, size, size), np.uint8) for s, idx in index.items()}
    member = None
    try:
        with zipfile.ZipFile(path) as zf:
            present = set(zf.namelist())
            absent = [n for n in names if ZIP_FOLDER + n not in present]
            if absent:
                raise DataIntegrityError(f"{path}: lacks {len(absent)} image(s) listed in {PARTITION}, e.g. "
                                         f"{ZIP_FOLDER}{absent[0]}")
            for split, idx in index.items():
                for k, i in enumerate(idx):
                    member = ZIP_FOLDER + names[i]
                    out[split][k] = decode_face(zf.read(member), f"{member} (in {path})", crop, size)
    except DataIntegrityError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error, NotImplementedError) as exc:
        where = f" member {member}" if member is not None else ""
        raise DataIntegrityError(f"{path}{where}: not a readable zip archive ({one_line(exc)})") from None
    n = {PARTS[p]: int((parts == p).sum()) for p in PARTS}
    left, top, right, bottom = crop_box(crop)
    split_meta = {
        "description": (f"the official split of {PARTITION} (0 = train: {n['train']}, 1 = validation: {n['val']}, "
                        f"2 = test: {n['test']} images); then max_* keeps a seeded subset of N of a split: the first N "
                        f"of numpy.random.RandomState({seed}).permutation(n) over its images, kept in order. "
                        f"source_index_<split> is the image's 0-based line in {PARTITION} (000001.jpg = 0)"),
        "rule": f"official: {PARTITION}",
        "seed": seed,
        "n_source_images": n,
        "index_sha256": {s: index_sha256(idx) for s, idx in index.items()},
    }
    more = {"preprocessing": (f"centre crop {crop}x{crop} of the {WIDTH}x{HEIGHT} image (Pillow box ({left}, {top}, "
                              f"{right}, {bottom})), then Image.resize(({size}, {size}), Image.Resampling.BILINEAR): "
                              f"torchvision CenterCrop({crop}) then Resize({size}) on a PIL image")}
    splits = {s: (out[s], np.full(len(idx), -1, dtype=np.int64)) for s, idx in index.items()}
    return Prepared(splits, split_meta, sums, extra={f"source_index_{s}": idx for s, idx in index.items()},
                    more_meta=more)


def download_refusal(mirror_layout: str) -> str:
    """The DatasetDownloadError message without a mirror (``mirror_layout``: :func:`vaebench.data.mirror_layout`)."""
    return ("dataset 'celeba' is not downloaded automatically: its files are hosted on Google Drive, which refuses "
            "automated downloads of them (its daily download quota for these files is usually used up: 'Too many "
            "users have viewed or downloaded this file recently'). Download img_align_celeba.zip ('Align&Cropped "
            "Images') and list_eval_partition.txt ('Eval') by hand from the official page "
            f"{PAGE} (its Google Drive or Baidu links), put them, unchanged (do not unzip), in an offline mirror "
            f"laid out as\n{mirror_layout}\nand pass --mirror <mirror> (or set VAEBENCH_DATA_MIRROR=<mirror>).")


SOURCE = register_source(DatasetSource(
    name="celeba",
    config=CelebAConfig,
    reader=prepare_celeba,
    citation=('Liu, Luo, Wang & Tang 2015, "Deep Learning Face Attributes in the Wild", ICCV; ' + PAGE),
    mirror_subdir="celeba",
    files={"images": ZIP, "partition": PARTITION},
    download_refusal=download_refusal,
    md5={ZIP: "00d2c5bc6d35e252742224ab0c1e8fcb", PARTITION: "d32c9cbf5e040fd4025c592c306e6668"},
    image_shape=(3, 64, 64),
    image_shape_of=image_shape,
    n_classes=None,
))
