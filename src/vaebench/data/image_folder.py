"""A user's own images (dataset kind ``image_folder``): PNG / JPEG files in a folder or a ``.tar`` / ``.tar.gz`` /
``.tgz`` of one, decoded with Pillow, split by folders or with a seed."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from vaebench import registry
from vaebench.data.common import Prepared, index_sha256, seeded_split, seeded_subset
from vaebench.errors import StageError, one_line
from vaebench.registry import StrictConfig


class ImageFolderError(StageError):
    """An image folder cannot be prepared (missing path, unreadable archive or image, wrong size, an image outside
    the layout, an empty split); the message names the file and what is wrong."""


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def _is_tar_name(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(TAR_SUFFIXES)


class ImageFolderConfig(StrictConfig):
    """A folder of your own images (PNG / JPEG), or a .tar / .tar.gz / .tgz of one (dataset kind image_folder)."""

    kind: Literal["image_folder"] = Field(..., description="The dataset kind: a folder of the user's own images "
                                                           "(any dataset name that is not a registered dataset).")
    path: str = Field(..., min_length=1, description=(
        "The folder, or a .tar / .tar.gz / .tgz archive of it (read member by member, never extracted), relative "
        "to the repository root (the working directory of every stage) or absolute. It is the source itself: the "
        "data mirror ($VAEBENCH_DATA_MIRROR / --mirror) is not used."))
    image_size: PositiveInt | tuple[PositiveInt, PositiveInt] = Field(..., description=(
        "Image height = width after resizing (an integer), or [height, width]; other sizes: see resize."))
    channels: Literal[1, 3] = Field(..., description='1: converted to grey (Pillow mode "L"); 3: RGB (an alpha '
                                                     'channel is dropped).')
    resize: Literal["error", "center_crop_resize"] = Field("error", description=(
        "An image of another size: error (the file is named) or center_crop_resize (crop the centre to the "
        "aspect ratio of image_size, then resize with bicubic interpolation)."))
    split: Literal["folders", "random"] = Field("folders", description=(
        "folders: <root>/train/ and <root>/test/ (each [<class>/]*.png|jpg|jpeg), validation = a seeded draw of "
        "n_validation training images; random: a flat (*.png) or class-folder (<class>/*.png) tree split with "
        "split_seed into test (n_test), validation (n_validation) and train (the rest)."))
    n_validation: PositiveInt = Field(1000, description="Images held out as validation, drawn with split_seed "
                                                        "(from train/ with split: folders).")
    n_test: PositiveInt = Field(1000, description="Images held out as the test split (split: random only; with "
                                                  "split: folders the test split is the test/ folder).")
    split_seed: NonNegativeInt = Field(0, description="Seed of the draw: numpy RandomState(split_seed).permutation("
                                                      "n) over the sorted paths; test first, then validation.")
    max_train: PositiveInt | None = Field(None, description="Keep a seeded subset of N training images (null = all): the first N of RandomState(split_seed).permutation, so every class stays represented.")
    max_validation: PositiveInt | None = Field(None, description="Keep a seeded subset of N validation images (null = all).")
    max_test: PositiveInt | None = Field(None, description="Keep a seeded subset of N test images (null = all).")

    def path_problem(self) -> str | None:
        """What is wrong with ``path`` (missing, or neither a folder nor a tar archive), None when it can be read;
        checked before any job (:func:`vaebench.validation.check_image_folders`), not when the settings are
        parsed, so that commands which only read study files (``dvc-yaml``, ``readme``) need no data."""
        p = Path(self.path)
        where = "" if p.is_absolute() else f" (relative to the repository root {Path.cwd()})"
        if not p.exists():
            return f"no such folder or archive: {p.absolute()}{where}"
        if not (p.is_dir() or (p.is_file() and _is_tar_name(p))):
            return f"{p.absolute()} is neither a folder nor a {' / '.join(TAR_SUFFIXES)} archive"
        return None

    @model_validator(mode="after")
    def _n_test_only_for_random(self):
        if self.split == "folders" and "n_test" in self.model_fields_set:
            raise ValueError("n_test is only for split: random (with split: folders the test split is the test/ "
                             "folder); remove it or set split: random")
        return self

    @property
    def size_hw(self) -> tuple[int, int]:
        """(height, width) of the prepared images."""
        return (self.image_size, self.image_size) if isinstance(self.image_size, int) else tuple(self.image_size)

registry.DATASETS.register_image_folder(ImageFolderConfig)


def _read_image_files(root: Path) -> tuple[list[tuple[str, str, bytes]], str, dict[str, str]]:
    """([(path relative to ``root``, path shown in errors, bytes)] of the image files sorted by path, source,
    {name: SHA-256}: of a tar archive, or for a folder ``"<folder>/"``: of its listing ``"<relative path>\\t<SHA-256
    of the file>\\n"``). Files without an image extension are ignored.

    Raises:
        ImageFolderError: a missing path, not a folder or tar, an unreadable archive, an image path twice or a link.
    """
    if not root.exists():
        raise ImageFolderError(f"image folder {root} does not exist (the dataset's path, relative to the "
                               f"repository root {Path.cwd()})")
    files: list[tuple[str, str, bytes]] = []
    if root.is_dir():
        listing = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                rel = p.relative_to(root).as_posix()
                buf = p.read_bytes()
                files.append((rel, str(p), buf))
        files.sort(key=lambda f: f[0])
        for rel, _, buf in files:
            listing.update(f"{rel}\t{hashlib.sha256(buf).hexdigest()}\n".encode())
        return files, str(root.resolve()), {f"{root.name}/": listing.hexdigest()}
    if not (root.is_file() and _is_tar_name(root)):
        raise ImageFolderError(f"image folder {root} is neither a folder nor a {' / '.join(TAR_SUFFIXES)} archive")
    digest = hashlib.sha256()
    with open(root, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    seen: set[str] = set()
    member = None
    try:
        with tarfile.open(root, "r:*") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if not name.lower().endswith(IMAGE_EXTENSIONS) or member.isdir():
                    continue
                shown = f"{name} (in {root})"
                if not member.isfile():
                    raise ImageFolderError(f"{shown}: a link or special file, not an image file")
                if name in seen:
                    raise ImageFolderError(f"{shown}: the archive holds this path twice")
                seen.add(name)
                files.append((name, shown, tar.extractfile(member).read()))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        after = f" after member {member.name}" if member is not None else ""
        raise ImageFolderError(f"{root}: not a readable tar archive ({one_line(exc)}){after}: the file is "
                               "truncated or corrupted") from None
    files.sort(key=lambda f: f[0])
    return files, str(root.resolve()), {root.name: digest.hexdigest()}


def _decode_image(shown: str, buf: bytes, settings: ImageFolderConfig) -> np.ndarray:
    """One image as uint8 (H, W) or (H, W, 3) as ``settings`` say; ImageFolderError names the file: not decodable,
    or another size with ``resize: error``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    h, w = settings.size_hw
    try:
        img = Image.open(io.BytesIO(buf))
        img.load()
        img = img.convert("L" if settings.channels == 1 else "RGB")
    except Exception as exc:  # noqa: BLE001 - Pillow raises UnidentifiedImageError, OSError, SyntaxError, ...
        why = ("UnidentifiedImageError: Pillow recognises no image format in it"
               if isinstance(exc, UnidentifiedImageError) else one_line(exc))
        raise ImageFolderError(f"{shown}: not a readable image ({why}): the file is not a PNG/JPEG image, or it is "
                               "corrupt or truncated") from None
    if img.size != (w, h):
        if settings.resize == "error":
            raise ImageFolderError(f"{shown}: image is {img.size[1]}x{img.size[0]} (height x width), expected "
                                   f"{h}x{w} (image_size); set resize: center_crop_resize to crop and resize such "
                                   "images")
        img = ImageOps.fit(img, (w, h), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))
    return np.asarray(img, dtype=np.uint8)


def _image_folder_layout(files: list[tuple[str, str, bytes]], root: Path, split: str
                         ) -> tuple[dict[str, list[int]], dict[str, list[str | None]]]:
    """({group: [index into files]}, {group: [class name or None]}), groups "train" and "test" (``split:
    folders``) or "all" (``random``); a tar's single top-level folder is its root.

    Raises:
        ImageFolderError: no image, an image outside the layout (named), a mixed layout, an empty split.
    """
    where = f"{root} (folder)" if root.is_dir() else f"{root} (archive)"
    exts = ",".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
    expected = (f"train/[<class>/]*.{{{exts}}} and test/[<class>/]*.{{{exts}}}" if split == "folders"
                else f"*.{{{exts}}} or <class>/*.{{{exts}}}")
    if not files:
        raise ImageFolderError(f"{where}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found; expected "
                               f"{expected}")
    parts = [rel.split("/") for rel, _, _ in files]
    tops = {p[0] for p in parts}
    if (not root.is_dir() and len(tops) == 1 and all(len(p) > 1 for p in parts)
            and not tops & {"train", "test"}):
        parts = [p[1:] for p in parts]
        tops = {p[0] for p in parts}
    if split == "random" and {"train", "test"} <= tops:
        raise ImageFolderError(f"{where}: holds train/ and test/ folders: use split: folders (split: random "
                               f"expects {expected})")
    groups: dict[str, list[int]] = {}
    classes: dict[str, list[str | None]] = {}
    with_class = None
    for i, p in enumerate(parts):
        shown = files[i][1]
        if split == "folders":
            if p[0] not in ("train", "test") or len(p) == 1:
                fix = ("; for a folder without train/ and test/, set the dataset's split: random (a seeded "
                       "split, n_test images held out)") if not ({"train", "test"} & tops) else ""
                raise ImageFolderError(f"{shown}: image outside train/ and test/ (split: folders expects "
                                       f"{expected}){fix}")
            group, rest = p[0], p[1:]
        else:
            group, rest = "all", p
        if len(rest) > 2:
            raise ImageFolderError(f"{shown}: image nested too deep (expected {expected})")
        has_class = len(rest) == 2
        if with_class is None:
            with_class = has_class
        elif has_class != with_class:
            raise ImageFolderError(f"{shown}: mixed layout, some images lie in class folders and some do not "
                                   f"(expected {expected}, all images alike)")
        groups.setdefault(group, []).append(i)
        classes.setdefault(group, []).append(rest[0] if has_class else None)
    for group in (("train", "test") if split == "folders" else ()):
        if group not in groups:
            raise ImageFolderError(f"{where}: no images in {group}/ (split: folders expects {expected})")
    return groups, classes


def prepare_image_folder(settings: ImageFolderConfig) -> tuple[Prepared, str]:
    """Read, check (every image) and split an image folder: (images (N, C, H, W), labels: class folder index in
    the sorted names, or -1; ``source_index_<split>``, ``meta["classes"]``), and its source description.

    Raises:
        ImageFolderError: a bad path, archive, layout or image (named); a test class without training images;
            a split left empty by ``n_validation`` / ``n_test``.
    """
    root = Path(settings.path)
    files, source, sums = _read_image_files(root)
    groups, group_classes = _image_folder_layout(files, root, settings.split)
    first_group = "train" if settings.split == "folders" else "all"
    class_names = sorted({c for c in group_classes[first_group] if c is not None})
    label = {c: i for i, c in enumerate(class_names)}
    for group, names in group_classes.items():
        for i, c in zip(groups[group], names):
            if c is not None and c not in label:
                raise ImageFolderError(f"{files[i][1]}: class {c!r} has no training images (classes of train/: "
                                       f"{', '.join(class_names)})")
    images = {group: np.stack([_decode_image(files[i][1], files[i][2], settings) for i in idx])
              for group, idx in groups.items()}
    labels = {group: np.array([label[c] if c is not None else -1 for c in names], dtype=np.int64)
              for group, names in group_classes.items()}
    n_val, seed = settings.n_validation, settings.split_seed
    if settings.split == "folders":
        n = len(images["train"])
        if n_val >= n:
            raise ImageFolderError(f"{root}: n_validation = {n_val} leaves no training image: train/ holds {n} "
                                   "images")
        drawn = seeded_split(n, n_val, 0, seed)
        index = {"train": ("train", drawn["train"]), "val": ("train", drawn["val"]),
                 "test": ("test", np.arange(len(images["test"]), dtype=np.int64))}
        rule = (f"test = the images of test/ (sorted paths); perm = numpy.random.RandomState({seed}).permutation({n}) "
                f"over the sorted images of train/: validation = perm[:{n_val}], train = the other {n - n_val}, "
                "each sorted")
    else:
        n, n_test = len(images["all"]), settings.n_test
        if n_val + n_test >= n:
            raise ImageFolderError(f"{root}: n_validation + n_test = {n_val} + {n_test} leaves no training image: "
                                   f"the folder holds {n} images")
        drawn = seeded_split(n, n_val, n_test, seed)
        index = {split: ("all", idx) for split, idx in drawn.items()}
        rule = (f"perm = numpy.random.RandomState({seed}).permutation({n}) over all images (sorted paths): "
                f"test = perm[:{n_test}], validation = perm[{n_test}:{n_test + n_val}], train = the other "
                f"{n - n_test - n_val}, each sorted")
    caps = {"train": settings.max_train, "val": settings.max_validation, "test": settings.max_test}
    index = {split: (group, seeded_subset(idx, caps[split], seed)) for split, (group, idx) in index.items()}
    splits = {split: (images[group][idx], labels[group][idx]) for split, (group, idx) in index.items()}
    split_meta = {
        "description": (f"{rule}; then max_* keeps a seeded subset of N of a split: the first N of "
                        f"numpy.random.RandomState({seed}).permutation(n) over its images, sorted. source_index_<split> is each image's "
                        "index in the sorted paths of its source (" +
                        ("train/ or test/" if settings.split == "folders" else "all images") + ")"),
        "kind": "image_folder",
        "layout": settings.split,
        "seed": seed,
        "n_source_images": {group: len(idx) for group, idx in groups.items()},
        "index_sha256": {split: index_sha256(idx) for split, (_, idx) in index.items()},
    }
    splits = {s: (x.transpose(0, 3, 1, 2) if x.ndim == 4 else x, y) for s, (x, y) in splits.items()}
    return Prepared(splits, split_meta, sums, extra={f"source_index_{split}": idx for split, (_, idx) in index.items()},
                    more_meta={"classes": class_names} if class_names else {}), source
