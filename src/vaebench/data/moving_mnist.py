"""Stochastic Moving MNIST (Denton & Fergus 2018, Section 4.1; svg-code data/moving_mnist.py, docs/methods.md 11.2):
MNIST digits, resized to 32x32, moving in a 64x64 frame; each digit starts at a uniform position with a uniform
integer velocity in [-4, 4]^2, and at every wall it hits it stops at the wall and draws a new velocity pointing
away from that wall (the other component drawn afresh). Digits are added and the sum clipped at the maximum.

Each sequence i is a function of (seed, i) alone, drawn with its own NumPy generator seeded by the ``moving_mnist``
stream of ``vaebench.seeds``; svg-code draws from NumPy's global generator, so its sequences are random, not a
function of the index. Frames are uint8: min(255, sum of the uint8 digits), svg-code's float frames times 255."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt

from vaebench.data.common import Prepared, resize_bilinear
from vaebench.data.idx import read_idx_files
from vaebench.data.mnist import SOURCE as MNIST
from vaebench.data.sources import DatasetSource, register_source
from vaebench.registry import StrictConfig
from vaebench.seeds import stream_seed

FRAME_SIZE = 64
DIGIT_SIZE = 32
MAX_SPEED = 4
LIMIT = FRAME_SIZE - DIGIT_SIZE          # positions lie in [0, LIMIT - 1]


def resize_digits(images: np.ndarray) -> np.ndarray:
    """MNIST digits uint8 (N, 28, 28) -> uint8 (N, 32, 32), bilinear (:func:`~vaebench.data.common.resize_bilinear`,
    as svg-code's ``transforms.Scale(32)``). Raises ValueError for another dtype or rank."""
    return resize_bilinear(images, DIGIT_SIZE)


def trajectory(rng: np.random.Generator, length: int) -> tuple[np.ndarray, np.ndarray]:
    """One digit's path: (positions (length, 2) int as (y, x) of its top-left corner at each frame, velocities
    (length, 2) the step taken after each frame), with svg-code's order of draws (start y and x in [0, 31],
    velocity in [-4, 4]) and its bounce: before drawing frame t, a position past the top (bottom) wall is set to
    0 (31) with dy drawn in [1, 4] ([-4, -1]) and dx afresh in [-4, 4]; then the same for x."""
    sx, sy = rng.integers(0, LIMIT), rng.integers(0, LIMIT)
    dx, dy = rng.integers(-MAX_SPEED, MAX_SPEED + 1), rng.integers(-MAX_SPEED, MAX_SPEED + 1)
    positions, velocities = np.empty((length, 2), np.int64), np.empty((length, 2), np.int64)
    for t in range(length):
        if sy < 0:
            sy, dy, dx = 0, rng.integers(1, MAX_SPEED + 1), rng.integers(-MAX_SPEED, MAX_SPEED + 1)
        elif sy >= LIMIT:
            sy, dy, dx = LIMIT - 1, rng.integers(-MAX_SPEED, 0), rng.integers(-MAX_SPEED, MAX_SPEED + 1)
        if sx < 0:
            sx, dx, dy = 0, rng.integers(1, MAX_SPEED + 1), rng.integers(-MAX_SPEED, MAX_SPEED + 1)
        elif sx >= LIMIT:
            sx, dx, dy = LIMIT - 1, rng.integers(-MAX_SPEED, 0), rng.integers(-MAX_SPEED, MAX_SPEED + 1)
        positions[t], velocities[t] = (sy, sx), (dy, dx)
        sy, sx = sy + dy, sx + dx
    return positions, velocities


def moving_mnist(digits: np.ndarray, n_sequences: int, length: int, seed: int, num_digits: int = 2,
                 start: int = 0) -> dict[str, np.ndarray]:
    """Sequences ``start`` .. ``start + n_sequences - 1`` of Stochastic Moving MNIST from ``digits`` uint8
    (N, 32, 32) (``resize_digits`` of one MNIST split): {'frames': uint8 (n, length, 1, 64, 64), 'digit_index'
    (n, num_digits) int64 indices into ``digits``, 'positions' and 'velocities' (n, num_digits, length, 2) int64
    as (y, x)}. Sequence i depends on (seed, i) only. Raises ValueError for digits of another shape or dtype, or a
    count below 1."""
    if digits.dtype != np.uint8 or digits.ndim != 3 or digits.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE):
        raise ValueError(f"moving_mnist: digits must be uint8 (N, {DIGIT_SIZE}, {DIGIT_SIZE}), got "
                         f"{digits.dtype} {digits.shape}")
    for name, value in (("n_sequences", n_sequences), ("length", length), ("num_digits", num_digits),
                        ("digits", len(digits))):
        if int(value) < 1:
            raise ValueError(f"moving_mnist: {name} must be >= 1, got {value!r}")
    n, length, k = int(n_sequences), int(length), int(num_digits)
    frames = np.zeros((n, length, 1, FRAME_SIZE, FRAME_SIZE), np.uint8)
    index = np.empty((n, k), np.int64)
    positions, velocities = np.empty((n, k, length, 2), np.int64), np.empty((n, k, length, 2), np.int64)
    for i in range(n):
        rng = np.random.default_rng(stream_seed(seed, "moving_mnist", start + i))
        canvas = np.zeros((length, FRAME_SIZE, FRAME_SIZE), np.int32)
        for j in range(k):
            index[i, j] = rng.integers(0, len(digits))
            positions[i, j], velocities[i, j] = trajectory(rng, length)
            digit = digits[index[i, j]].astype(np.int32)
            for t, (y, x) in enumerate(positions[i, j]):
                canvas[t, y: y + DIGIT_SIZE, x: x + DIGIT_SIZE] += digit
        frames[i, :, 0] = np.minimum(canvas, 255).astype(np.uint8)
    return {"frames": frames, "digit_index": index, "positions": positions, "velocities": velocities}


class MovingMnistConfig(StrictConfig):
    """How Stochastic Moving MNIST is generated from the MNIST files: sequence counts and lengths per split, digits
    per frame and the generation seed. Digits: train sequences from the first 60,000 - ``n_validation_digits``
    official training digits, validation sequences from the last ``n_validation_digits``, test sequences from the
    official test digits."""

    num_digits: PositiveInt = Field(2, description="Digits per sequence (SVG: 2; the paper also uses 1).")
    sequence_length: int = Field(15, ge=2, description="Frames of a training and validation sequence (SVG: n_past "
                                                       "+ n_future = 5 + 10).")
    test_sequence_length: int = Field(30, ge=2, description="Frames of a test sequence (SVG's n_eval: 30).")
    n_train: PositiveInt = Field(10000, description="Training sequences per epoch.")
    fresh_train: bool = Field(False, description="Draw n_train new training sequences every epoch (epoch e: "
                                                 "sequences (e - 1) n_train .. e n_train - 1 of the training stream), "
                                                 "as SVG draws a fresh random sequence for every training example; "
                                                 "false: the same n_train sequences every epoch.")
    n_validation: PositiveInt = Field(1000, description="Validation sequences.")
    n_test: PositiveInt = Field(1000, description="Test sequences.")
    n_validation_digits: PositiveInt = Field(10000, lt=60000, description="The last N official training digits, "
                                                                         "used only by validation sequences.")
    seed: NonNegativeInt = Field(0, description="Generation seed: sequence i of a split depends on (seed, split, i).")


SPLIT_OFFSET = {"train": 0, "val": 1 << 40, "test": 2 << 40}   # sequence index ranges of the splits' streams


def prepare_moving_mnist(source: DatasetSource, cfg: dict, folder: Path) -> Prepared:
    """Read and verify the MNIST IDX files in ``folder`` and generate the three splits (:func:`moving_mnist`):
    frames uint8 (N, T, 1, 64, 64), labels -1, and per split ``digit_index_<split>`` (N, num_digits) (indices into
    that split's digits) and ``positions_<split>`` (N, num_digits, T, 2) as (y, x)."""
    arrays, sums = read_idx_files(source, folder)
    train_digits = arrays["train_images"]
    n_train_digits = len(train_digits) - cfg["n_validation_digits"]
    digits = {"train": train_digits[:n_train_digits], "val": train_digits[n_train_digits:],
              "test": arrays["test_images"]}
    counts = {"train": cfg["n_train"], "val": cfg["n_validation"], "test": cfg["n_test"]}
    lengths = {"train": cfg["sequence_length"], "val": cfg["sequence_length"], "test": cfg["test_sequence_length"]}
    splits, extra = {}, {}
    for split in ("train", "val", "test"):
        seqs = moving_mnist(resize_digits(digits[split]), counts[split], lengths[split], cfg["seed"],
                            cfg["num_digits"], start=SPLIT_OFFSET[split])
        splits[split] = (seqs["frames"], np.full(counts[split], -1, dtype=np.int64))
        extra[f"digit_index_{split}"] = seqs["digit_index"]
        extra[f"positions_{split}"] = seqs["positions"]
    split_meta = {
        "description": (f"generated (docs/methods.md 11.2): train sequences from official training digits "
                        f"0..{n_train_digits - 1}, validation sequences from digits {n_train_digits}..59999, test "
                        f"sequences from the official test digits; sequence i of a split is drawn by its own "
                        f"generator seeded by stream 'moving_mnist' of seed {cfg['seed']} at index i + "
                        "the split's offset (train 0, validation 2^40, test 2^41)"),
        "seed": cfg["seed"],
        "digit_ranges": {"train": [0, n_train_digits], "val": [n_train_digits, len(train_digits)],
                         "test": [0, len(arrays["test_images"])]},
    }
    more_meta = {"sequence_lengths": lengths}
    if cfg["fresh_train"]:
        extra["digits_train"] = resize_digits(digits["train"])
        more_meta["fresh_train"] = {key: cfg[key] for key in ("n_train", "num_digits", "seed")}
        split_meta["description"] += (f"; a fresh set of {cfg['n_train']} training sequences every epoch (epoch e: "
                                      f"indices (e - 1) {cfg['n_train']} .. e {cfg['n_train']} - 1), drawn from "
                                      "digits_train as the training stage needs them")
    return Prepared(splits, split_meta, sums, extra=extra, more_meta=more_meta)


def train_epoch(data: dict, epoch: int) -> np.ndarray:
    """The training sequences of ``epoch`` (1-based) from a prepared file's arrays ``data``: ``x_train`` for epoch 1
    or without ``fresh_train``; else sequences (epoch - 1) n_train .. epoch n_train - 1 of the training stream
    (:func:`moving_mnist` on ``digits_train``), uint8 (n_train, T, 1, 64, 64). Raises ValueError for epoch < 1."""
    if int(epoch) < 1:
        raise ValueError(f"train_epoch: epoch must be >= 1, got {epoch!r}")
    fresh = data["meta"].get("fresh_train")
    if not fresh or int(epoch) == 1:
        return data["x_train"]
    n = int(fresh["n_train"])
    return moving_mnist(data["digits_train"], n, data["x_train"].shape[1], fresh["seed"], fresh["num_digits"],
                        start=SPLIT_OFFSET["train"] + (int(epoch) - 1) * n)["frames"]


SOURCE = register_source(DatasetSource(
    name="moving_mnist",
    config=MovingMnistConfig,
    reader=prepare_moving_mnist,
    citation=("Stochastic Moving MNIST (Denton & Fergus 2018, \"Stochastic Video Generation with a Learned Prior\", "
              "Section 4.1; github.com/edenton/svg data/moving_mnist.py), generated from MNIST (LeCun & Cortes)"),
    mirror_subdir=MNIST.mirror_subdir,
    torchvision_class=MNIST.torchvision_class,
    gz_optional=MNIST.gz_optional,
    files=dict(MNIST.files),
    sha256=dict(MNIST.sha256),
    image_shape=(1, FRAME_SIZE, FRAME_SIZE),
    n_classes=None,
    sequence=True,
    train_epoch=train_epoch,
))
