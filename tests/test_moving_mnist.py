"""Stochastic Moving MNIST (``vaebench.data.moving_mnist``): deterministic per (seed, sequence index); every frame
is the clipped sum of the digits drawn at the recorded positions, which stay inside the frame; the velocities
follow svg-code's rules (|v| <= 4, a wall hit puts the digit at the wall and turns the velocity away from it);
the resize is Pillow's bilinear; the real MNIST digits of the mirror give sensible frame statistics."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vaebench.data.moving_mnist import DIGIT_SIZE, FRAME_SIZE, LIMIT, MAX_SPEED, moving_mnist, resize_digits


def synthetic_digits(n: int = 20, seed: int = 0) -> np.ndarray:
    """uint8 (n, 32, 32): random blobs with values up to 255 (overlaps then clip)."""
    rng = np.random.default_rng(seed)
    d = np.zeros((n, DIGIT_SIZE, DIGIT_SIZE), np.uint8)
    d[:, 6:26, 8:24] = rng.integers(100, 256, (n, 20, 16), dtype=np.uint8)
    return d


def test_same_seed_same_bytes_and_each_sequence_depends_on_its_index_only():
    digits = synthetic_digits()
    a = moving_mnist(digits, 6, 12, seed=3)
    b = moving_mnist(digits, 6, 12, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = moving_mnist(digits, 6, 12, seed=4)
    assert not np.array_equal(a["frames"], c["frames"])
    tail = moving_mnist(digits, 3, 12, seed=3, start=3)          # sequences 3..5 alone
    assert np.array_equal(tail["frames"], a["frames"][3:]) and np.array_equal(tail["positions"], a["positions"][3:])
    assert a["frames"].shape == (6, 12, 1, FRAME_SIZE, FRAME_SIZE) and a["frames"].dtype == np.uint8


def test_frames_are_the_clipped_sum_of_the_digits_at_their_positions_inside_the_frame():
    digits = synthetic_digits()
    out = moving_mnist(digits, 8, 20, seed=1, num_digits=2)
    pos = out["positions"]
    assert pos.min() >= 0 and pos.max() <= LIMIT - 1               # the 32x32 digit always fits in the 64x64 frame
    for i in range(8):
        for t in range(20):
            ref = np.zeros((FRAME_SIZE, FRAME_SIZE), np.int64)
            for j in range(2):
                y, x = pos[i, j, t]
                ref[y: y + DIGIT_SIZE, x: x + DIGIT_SIZE] += digits[out["digit_index"][i, j]]
            assert np.array_equal(out["frames"][i, t, 0], np.minimum(ref, 255))


def test_velocities_and_bounces_follow_svg_code():
    """|v| <= 4 per component; the position advances by the velocity unless it would leave [0, 31], in which case
    the digit stops at that wall and the velocity component points away from it (strictly); x is checked after y
    and its bounce redraws dy, so at a corner only dx is sure to point away."""
    out = moving_mnist(synthetic_digits(), 40, 30, seed=2, num_digits=2)
    pos, vel = out["positions"].reshape(-1, 30, 2), out["velocities"].reshape(-1, 30, 2)
    assert np.abs(vel).max() <= MAX_SPEED
    bounces = 0
    for p, v in zip(pos, vel):
        for t in range(1, 30):
            raw = p[t - 1] + v[t - 1]
            x_bounced = not 0 <= raw[1] < LIMIT
            for axis in (0, 1):
                redrawn = axis == 0 and x_bounced
                if raw[axis] < 0:
                    assert p[t, axis] == 0 and (redrawn or v[t, axis] >= 1)
                    bounces += 1
                elif raw[axis] >= LIMIT:
                    assert p[t, axis] == LIMIT - 1 and (redrawn or v[t, axis] <= -1)
                    bounces += 1
            if (raw >= 0).all() and (raw < LIMIT).all():
                assert np.array_equal(p[t], raw)
    assert bounces > 50                                  # the rule was exercised, both walls and both axes


def test_resize_is_pillows_bilinear_and_bad_input_is_rejected():
    rng = np.random.default_rng(0)
    d = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    r = resize_digits(d)
    assert r.shape == (3, 32, 32) and r.dtype == np.uint8
    assert np.array_equal(r[1], np.asarray(Image.fromarray(d[1]).resize((32, 32), Image.BILINEAR)))
    with pytest.raises(ValueError, match="uint8"):
        resize_digits(d.astype(np.float32))
    with pytest.raises(ValueError, match=r"digits must be uint8 \(N, 32, 32\)"):
        moving_mnist(d, 2, 5, seed=0)
    with pytest.raises(ValueError, match="length must be >= 1"):
        moving_mnist(r, 2, 0, seed=0)


@pytest.mark.mirror("mnist")
def test_real_mnist_digits_give_two_digit_frames(mirror):
    """From the mirror's MNIST test digits: 2-digit sequences whose frames carry about twice one digit's ink
    (less where they overlap), never an empty frame, and whose digits are real test digits."""
    from vaebench.data.fetch import read_maybe_gz
    from vaebench.data.idx import parse_idx

    path = mirror / "mnist" / "t10k-images-idx3-ubyte.gz"
    images = parse_idx(read_maybe_gz(path), path.name)[:500]
    digits = resize_digits(images)
    out = moving_mnist(digits, 20, 15, seed=0)
    ink = out["frames"].astype(np.int64).sum((2, 3, 4))                                 # (n, T)
    one = digits.astype(np.int64).sum((1, 2))[out["digit_index"]].sum(1)                 # both digits, (n,)
    assert (ink > 0).all() and (ink <= one[:, None]).all()
    assert np.median(ink / one[:, None]) > 0.9
