"""Typed settings of the stages: training, the FID feature classifier and evaluation."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from vaebench.registry import StrictConfig


class TrainConfig(StrictConfig):
    """Training settings (Adam; per-epoch validation)."""

    epochs: PositiveInt = Field(10, description="Passes over the training split.")
    batch_size: PositiveInt = Field(128, description="Images per step.")
    lr: float = Field(1e-3, gt=0, le=1, description="Adam learning rate.")
    test_curve: bool = Field(False, description="Also log the loss on the whole test split after every epoch "
                                                "(test_loss, the curves of the rho-VAE paper's figures); never used "
                                                "to select or stop a model.")


class ClassifierConfig(StrictConfig):
    """Training settings of the FID feature classifier."""

    epochs: PositiveInt = Field(2, description="Passes over the training split.")
    batch_size: PositiveInt = Field(256, description="Images per step.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate at the start, annealed to 0 by a cosine "
                                                "schedule over the training steps (Loshchilov & Hutter 2017, SGDR).")
    feature_dim: int = Field(128, ge=2, description="Width of the penultimate layer (the FID feature size).")
    seed: NonNegativeInt = Field(0, description="Initialisation and batch-order seed.")


class EvaluateConfig(StrictConfig):
    """Evaluation settings: the test images and sample sizes of every estimate."""

    n_images: PositiveInt | None = Field(
        None, description="Test images of every per-image estimate (ELBO, its terms, L_k, latent analysis): a "
                          "fixed random subset drawn with `seed`, the same for every model (null = the whole test split).")
    iwae_k: int = Field(5000, ge=10, description="Importance samples k of the L_k estimate of log p(x) (>= 10: the "
                                                  "diagnostic L_k - L_{k/10} uses k/10).")
    lk_tolerance_nats: float = Field(1.0, gt=0, description="A model whose L_k - L_{k/10} (nats/image) exceeds this "
                                                             "is flagged: its L_k has not converged.")
    latent_n: int = Field(1000, ge=2, description="Images of the aggregate posterior in the latent analysis (the "
                                                  "first of the evaluation images; MI is bounded by log latent_n).")
    fid_n: int = Field(10000, ge=2, description="Prior samples per FID estimate (and validation images of the floor).")
    fid_seeds: PositiveInt = Field(3, description="Sample seeds of the FID of decoder means (its spread).")
    inception: Literal["required", "if_available", "off"] = Field(
        "if_available", description="Inception-v3 FID (TF-ported 2015-12-05 weights via torch-fidelity) of the first "
        "sample seed against the test split: 'required' fails before any job runs when the weights cannot be had "
        "(after trying the download), 'if_available' computes it only when the weights file is present, 'off' never.")
    inception_weights: str | None = Field(
        None, description="Path of weights-inception-2015-12-05-6726825d.pth; else $VAEBENCH_FID_WEIGHTS, else the "
                          "torch hub cache (torch-fidelity's download location).")
    grid_n: int = Field(64, ge=1, le=400, description="Images in the sample and reconstruction grids.")
    video_samples: int = Field(100, ge=2, description="Sequence models: continuations sampled per test sequence, "
                                                      "of which the best scores (SVG's nsample: 100).")
    batch_size: PositiveInt = Field(500, description="Images per forward pass (capped by memory_mb).")
    memory_mb: float = Field(256.0, gt=0, description="Working memory of one forward pass (MiB): sets how many "
                                                      "decoded samples a pass holds, whatever the decoder.")
    seed: NonNegativeInt = Field(1234, description="Base seed of the evaluation's random streams (test subset, its "
                                                   "binarisation/dequantisation, posterior and prior samples; "
                                                   "vaebench.seeds.STREAMS), the same for every model.")
