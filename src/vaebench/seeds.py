"""Every random stream of the pipeline, seeded by ``numpy.random.SeedSequence([base, crc32(name), index])``."""
from __future__ import annotations

import zlib

import numpy as np

# stream -> (base seed, what it feeds)
STREAMS: dict[str, tuple[str, str]] = {
    "init": ("train seed", "the model's initial weights"),
    "minibatch_order": ("train seed", "the order of training minibatches"),
    "train_noise": ("train seed", "binarisation / dequantisation noise of training batches"),
    "validation_noise": ("train seed", "the validation images mapped once into the model's data space"),
    "test_curve": ("train seed", "the test images mapped once into the model's data space, and z ~ q(z|x), of the "
                                 "per-epoch test loss (train.test_curve)"),
    "epoch_grids": ("train seed", "the prior samples of the per-epoch MLflow image grids"),
    "calibration": ("train seed", "noise and z ~ q(z|x) of the pass over the training images after training"),
    "classifier_init": ("classifier.seed", "the FID classifier's initial weights"),
    "classifier_order": ("classifier.seed", "the order of the FID classifier's minibatches"),
    "fid_floor_subset": ("evaluate.seed", "the validation images of the FID floor (also blurred: a reference)"),
    "fid_noise": ("evaluate.seed", "the uniform-noise reference images of the FID"),
    "test_subset": ("evaluate.seed", "the fixed test images of every per-image estimate"),
    "test_noise": ("evaluate.seed", "the test images mapped once into the model's data space"),
    "posterior_samples": ("evaluate.seed", "z ~ q(z|x) of the ELBO and L_k estimates"),
    "latent_samples": ("evaluate.seed", "z ~ q(z|x) of the latent analysis"),
    "fid_samples": ("evaluate.seed", "z ~ p(z) of FID sample set i (index i) and of the sample grid (i = 0)"),
    "fid_draws": ("evaluate.seed", "z ~ p(z) and x ~ p(x|z) of the FID of draws"),
    "video_samples": ("evaluate.seed", "z_t of the sampled continuations of every test sequence (sequence models)"),
    "moving_mnist": ("the dataset's seed", "Stochastic Moving MNIST sequence i (index i): its digits, start "
                                           "positions, velocities and bounces"),
}


def stream_seed(base: int, stream: str, index: int = 0) -> int:
    """The 63-bit seed of the ``index``-th instance of ``stream`` for ``base``; KeyError if not in STREAMS."""
    if stream not in STREAMS:
        raise KeyError(f"unknown random stream {stream!r} (known: {', '.join(STREAMS)})")
    state = np.random.SeedSequence([int(base), zlib.crc32(stream.encode()), int(index)]).generate_state(2, np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def generator(base: int, stream: str, index: int = 0, device: str = "cpu"):
    """A ``torch.Generator`` on ``device`` seeded with :func:`stream_seed`; KeyError if not in STREAMS."""
    import torch

    return torch.Generator(device=device).manual_seed(stream_seed(base, stream, index))


def protocol_table() -> str:
    """:data:`STREAMS` as a Markdown table (stream, base seed, what it feeds)."""
    rows = ["| stream | base seed | feeds |", "|---|---|---|"]
    rows += [f"| `{name}` | {base} | {what} |" for name, (base, what) in STREAMS.items()]
    return "\n".join(rows)
