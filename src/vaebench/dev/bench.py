"""``python -m vaebench bench``: the train stage's loop against the sigma-VAE reference loop shape (Rybkin et al.
2021, github.com/orybkin/sigma-vae-pytorch, ``train_vae.py``) on MNIST from the same weights, their test ELBOs,
and the time of the evaluate stage's L_k; per-phase peak memory. Method: docs/implementation-notes.md."""
from __future__ import annotations

import copy
import math
import os
import platform
import resource
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveInt

from vaebench import paths
from vaebench.registry import StrictConfig

MNIST_TRAIN_IMAGES = 60_000
MNIST_TEST_IMAGES = 10_000
IMAGE_SHAPE = (1, 28, 28)

TARGET_THROUGHPUT_RATIO = 20.0     # on a GPU: ours / reference images per second, at least
TARGET_ELBO_RELATIVE = 0.01        # |ELBO_ours - ELBO_reference| / |ELBO_reference|, at most


class BenchConfig(StrictConfig):
    """Benchmark settings; the defaults are the full benchmark."""

    models: list[str] = Field(["vae_bernoulli", "sigma_vae_conv"], min_length=1,
                              description="Catalogue models to benchmark (their catalogue definition).")
    epochs: PositiveInt = Field(3, description="Timed epochs of each loop (the default study's train.epochs).")
    batch_size: PositiveInt = Field(128, description="Images per step, both loops (the train stage's and the "
                                                     "reference's default).")
    lr: float = Field(1e-3, gt=0, le=1, description="Adam learning rate, both loops (as the reference).")
    n_train: PositiveInt | None = Field(None, le=MNIST_TRAIN_IMAGES,
                                        description="Train on the first N official training images (null = all 60,000).")
    n_test: PositiveInt | None = Field(None, le=MNIST_TEST_IMAGES,
                                       description="Test ELBO on the first N official test images (null = all 10,000).")
    eval_images: PositiveInt = Field(MNIST_TEST_IMAGES, le=MNIST_TEST_IMAGES,
                                     description="Test images of the timed L_k evaluation (the whole-test-set time "
                                                 "is extrapolated from fewer).")
    k: int = Field(5000, ge=10, description="Importance samples of the L_k evaluation (>= 10).")
    memory_mb: float = Field(256.0, gt=0, description="Working memory of one L_k forward pass, MiB (the evaluate "
                                                      "stage's memory_mb default).")
    eval_batch_size: PositiveInt = Field(500, description="Images per forward pass of the test ELBO (capped by "
                                                          "memory_mb, as in the evaluate stage).")
    warmup_steps: NonNegativeInt = Field(5, description="Untimed steps of each loop on a throw-away copy of its "
                                                        "model before the timed epochs.")
    num_workers: NonNegativeInt | None = Field(
        None, description="DataLoader workers of the reference loop (null = the reference's own choice: 10 with "
                          "pin_memory on CUDA, 0 without on the CPU).")
    seed: NonNegativeInt = Field(0, description="Seed of the initial weights, the batch order and the training noise.")
    eval_seed: NonNegativeInt = Field(1234, description="Seed of the test data's binarisation/dequantisation and "
                                                        "of the posterior samples of the ELBO and L_k.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when available.")
    mirror: str | None = Field(None, description="Offline mirror root holding mnist/ (IDX files, optionally "
                                                 "gzipped); null = download into raw_dir.")
    raw_dir: str = Field("data/raw", description="Where torchvision's MNIST reads its files (<raw_dir>/MNIST/raw/).")
    out: str = Field(paths.BENCH_JSON, description="The JSON report.")


def _clock(device: torch.device) -> float:
    """time.perf_counter() in seconds after the device's queued work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def host_peak_method() -> str:
    """``"vmhwm"`` when VmHWM can be reset per phase (``/proc/self/clear_refs``), else ``"getrusage"``."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        with open("/proc/self/status") as f:
            if any(line.startswith("VmHWM:") for line in f):
                return "vmhwm"
    except OSError:
        pass
    return "getrusage"


HOST_PEAK_DESCRIPTION = {
    "vmhwm": "VmHWM of /proc/self/status, reset at the start of each phase by writing 5 to /proc/self/clear_refs "
             "(this process only; DataLoader worker processes are not included)",
    "getrusage": "resource.getrusage(RUSAGE_SELF).ru_maxrss: the process's peak since it started, which cannot be "
                 "reset, so a phase's figure may be an earlier phase's peak (this process only)",
}


def _proc_status_mib(field: str) -> float | None:
    """A memory line of /proc/self/status (``VmHWM``, ``VmRSS``) in MiB; None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _host_peak_mib(method: str) -> float:
    if method == "vmhwm":
        peak = _proc_status_mib("VmHWM")
        if peak is not None:
            return peak
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if platform.system() == "Darwin" else rss / 1024


class PeakMemory:
    """A phase's memory, MiB: ``result`` = {host_rss_start_mib, host_rss_peak_mib, cuda_max_allocated_mib}."""

    def __init__(self, device: torch.device, method: str):
        self.device, self.method = device, method
        self.result: dict = {}

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        if self.method == "vmhwm":
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        self._start = _proc_status_mib("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        cuda = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            cuda = torch.cuda.max_memory_allocated(self.device) / 2**20
        self.result = {"host_rss_start_mib": None if self._start is None else round(self._start, 1),
                       "host_rss_peak_mib": round(_host_peak_mib(self.method), 1),
                       "cuda_max_allocated_mib": None if cuda is None else round(cuda, 1)}


class StepCounter:
    """Counts a training loop's optimiser steps and training images with hooks; :meth:`remove` detaches them."""

    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer):
        self.steps = self.images = 0
        self._handles = [model.encoder.register_forward_pre_hook(self._on_encode),
                         opt.register_step_post_hook(self._on_step)]

    def _on_encode(self, module, args) -> None:
        if module.training and torch.is_grad_enabled():
            self.images += int(args[0].shape[0])

    def _on_step(self, opt, args, kwargs) -> None:
        self.steps += 1

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def load_mnist(mirror: str | os.PathLike | None, raw_dir: str | os.PathLike) -> dict:
    """MNIST for both loops from ``<mirror>/mnist/`` or downloaded into ``raw_dir``, SHA-256 checked: {``train``,
    ``test``: torchvision datasets; ``train_uint8``, ``test_uint8``: (N, 1, 28, 28) uint8; ``source``; ``sha256``}.
    Raises FileNotFoundError, DatasetDownloadError or DataIntegrityError.
    """
    from torchvision import datasets, transforms

    from vaebench.atomic import atomic_path
    from vaebench.data import SOURCES, DataIntegrityError
    from vaebench.data.fetch import find_file, read_maybe_gz, resolve_source
    from vaebench.data.idx import read_idx_files
    from vaebench.tracking import file_sha256

    spec = SOURCES["mnist"]
    folder, source = resolve_source(spec, mirror, raw_dir)
    arrays, sums = read_idx_files(spec, folder)
    raw = Path(raw_dir) / spec.torchvision_class / "raw"
    if folder.resolve() != raw.resolve():
        for fname, digest in spec.sha256.items():
            target = raw / fname
            if target.is_file() and file_sha256(target) == digest:
                continue
            buf = read_maybe_gz(find_file(folder, fname))
            with atomic_path(target) as tmp:
                tmp.write_bytes(buf)
    to_tensor = transforms.ToTensor()
    train = datasets.MNIST(str(raw_dir), train=True, transform=to_tensor, download=False)
    test = datasets.MNIST(str(raw_dir), train=False, transform=to_tensor, download=False)
    out = {"train": train, "test": test, "source": source, "sha256": sums}
    for split, ds in (("train", train), ("test", test)):
        verified = torch.from_numpy(arrays[f"{split}_images"])
        if not torch.equal(ds.data, verified):
            raise DataIntegrityError(f"torchvision's MNIST in {raw} holds other {split} images than the verified "
                                     f"files of {folder}")
        out[f"{split}_uint8"] = verified.unsqueeze(1)
    return out


def build_models(name: str, seed: int, device: torch.device) -> tuple:
    """(model for our loop, model for the reference loop, resolved config as JSON): two VAEs of catalogue model
    ``name`` with the same initial weights. Raises ConfigError for an unknown or invalid model."""
    from vaebench.config import ConfigError, load_catalogue, resolve_model
    from vaebench.vae import build_model

    entries = load_catalogue(paths.CATALOGUE)
    if name not in entries:
        raise ConfigError(f"bench: model {name!r} is not in the catalogue {paths.CATALOGUE} "
                          f"(defined: {', '.join(sorted(entries))})")
    cfg = resolve_model(name, entries[name], None, None, paths.CATALOGUE, paths.CATALOGUE)
    models = []
    for _ in range(2):
        torch.manual_seed(seed)
        models.append(build_model(cfg, IMAGE_SHAPE).to(device))
    return models[0], models[1], cfg.model_dump(mode="json", by_alias=True, exclude_none=True)


def _timed_epochs(model, opt, epoch, cfg: BenchConfig, device: torch.device, mem_method: str, tag: str,
                  warmup_seconds: float) -> dict:
    """Time ``epoch(e)`` (returns its step losses) for each epoch, checking losses and counting steps, images and
    peak memory. Returns the loop's record. Raises DivergenceError on a non-finite loss."""
    from vaebench.stages.train import check_finite

    counter = StepCounter(model, opt)
    epoch_seconds, step, last_finite = [], 0, float("nan")
    with PeakMemory(device, mem_method) as mem:
        for e in range(1, cfg.epochs + 1):
            t0 = _clock(device)
            losses = epoch(e)
            last_finite = check_finite(losses, step, last_finite, where=f"{tag}: epoch {e}")
            epoch_seconds.append(_clock(device) - t0)
            step += len(losses)
    counter.remove()
    seconds = sum(epoch_seconds)
    return {
        "steps": counter.steps,
        "images": counter.images,
        "epochs": len(epoch_seconds),
        "seconds": seconds,
        "epoch_seconds": epoch_seconds,
        "seconds_per_epoch": seconds / len(epoch_seconds),
        "images_per_s": counter.images / seconds,
        "warmup_seconds": warmup_seconds,
        "last_epoch_mean_step_loss": float(losses.double().mean()),
        "memory": mem.result,
    }


def train_ours(model, x_train: torch.Tensor, cfg: BenchConfig, device: torch.device, mem_method: str,
               tag: str) -> dict:
    """Train ``model`` in place with the train stage's ``train_epoch`` on uint8 ``x_train`` (N, 1, 28, 28) on the
    device, after an untimed warm-up on a copy. Returns the loop's record. Raises DivergenceError."""
    from vaebench.stages.train import check_finite, train_epoch

    bs = cfg.batch_size
    n_warm = min(len(x_train), cfg.warmup_steps * bs)
    t0 = _clock(device)
    if n_warm:
        warm = copy.deepcopy(model)
        warm_opt = torch.optim.Adam(warm.parameters(), lr=cfg.lr)
        warm.train()
        _, losses = train_epoch(warm, warm_opt, x_train[:n_warm], bs, torch.Generator().manual_seed(cfg.seed),
                                torch.Generator(device=device).manual_seed(cfg.seed + 1))
        check_finite(losses, 0, float("nan"), where=f"{tag}: warm-up")
        del warm, warm_opt, losses
    warmup_seconds = _clock(device) - t0

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    torch.manual_seed(cfg.seed + 2)
    batch_gen = torch.Generator().manual_seed(cfg.seed)
    data_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)

    def epoch(e: int) -> torch.Tensor:
        model.train()
        _, losses = train_epoch(model, opt, x_train, bs, batch_gen, data_gen, desc=f"{tag} epoch {e}/{cfg.epochs}")
        model.end_epoch()
        return losses

    return _timed_epochs(model, opt, epoch, cfg, device, mem_method, tag, warmup_seconds)


def reference_loader_settings(cfg: BenchConfig, device: torch.device) -> dict:
    """The reference's DataLoader ``num_workers`` (default 10 on CUDA, 0 on the CPU) and ``pin_memory``."""
    cuda = device.type == "cuda"
    workers = cfg.num_workers if cfg.num_workers is not None else (10 if cuda else 0)
    return {"num_workers": workers, "pin_memory": cuda}


def _reference_epoch(model, opt, loader, device: torch.device, data_gen: torch.Generator) -> list[float]:
    """One epoch of the reference loop shape; returns the step losses read on the host."""
    model.train()
    step_losses = []
    for data, _ in loader:
        data = data.to(device)
        # back to the exact 8-bit values, then into the model's data space
        xb = model.preprocess((data * 255).round().to(torch.uint8), generator=data_gen)
        opt.zero_grad()
        loss, _ = model.training_loss(xb)
        loss.backward()
        step_losses.append(loss.item())
        opt.step()
    model.end_epoch()
    return step_losses


def train_reference(model, train_ds, n_train: int, cfg: BenchConfig, device: torch.device, mem_method: str,
                    tag: str) -> dict:
    """Train ``model`` in place with the reference loop shape over the first ``n_train`` images of torchvision's
    ``train_ds``, after an untimed warm-up on a copy. Returns the loop's record with the DataLoader settings.
    Raises DivergenceError."""
    from torch.utils.data import DataLoader, Subset

    from vaebench.stages.train import check_finite

    kwargs = reference_loader_settings(cfg, device)
    ds = train_ds if n_train == len(train_ds) else Subset(train_ds, range(n_train))
    n_warm = min(n_train, cfg.warmup_steps * cfg.batch_size)
    t0 = _clock(device)
    if n_warm:
        warm = copy.deepcopy(model)
        warm_opt = torch.optim.Adam(warm.parameters(), lr=cfg.lr)
        warm_loader = DataLoader(Subset(train_ds, range(n_warm)), batch_size=cfg.batch_size, shuffle=True,
                                 generator=torch.Generator().manual_seed(cfg.seed), **kwargs)
        losses = _reference_epoch(warm, warm_opt, warm_loader, device,
                                  torch.Generator(device=device).manual_seed(cfg.seed + 1))
        check_finite(torch.tensor(losses, dtype=torch.float64), 0, float("nan"), where=f"{tag}: warm-up")
        del warm, warm_opt, warm_loader
    warmup_seconds = _clock(device) - t0

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    torch.manual_seed(cfg.seed + 2)
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(cfg.seed), **kwargs)
    data_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)

    def epoch(e: int) -> torch.Tensor:
        return torch.tensor(_reference_epoch(model, opt, loader, device, data_gen), dtype=torch.float64)

    return {**_timed_epochs(model, opt, epoch, cfg, device, mem_method, tag, warmup_seconds), **kwargs}


@torch.no_grad()
def elbo_per_image(model, x: torch.Tensor, batch_size: int, seed: int) -> torch.Tensor:
    """Single-sample ELBO of data-space x (N, C, H, W) in eval mode, seeded: (N,) float64 CPU, nats/image."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([model.elbo_terms(x[i : i + batch_size], generator=gen)["elbo"].double().cpu()
                      for i in range(0, len(x), batch_size)])


def _mean_se(v: torch.Tensor) -> dict:
    return {"mean": float(v.mean()), "se": float(v.std(unbiased=True) / math.sqrt(len(v))) if len(v) > 1 else None}


def time_lk(model, x: torch.Tensor, x_uint8: torch.Tensor, cfg: BenchConfig, device: torch.device,
            mem_method: str) -> dict:
    """Time ``per_image_estimates`` (k = ``cfg.k``) on data-space x (n, C, H, W) after one untimed call; the
    10,000-image time is measured or extrapolated. Raises FloatingPointError on a non-finite L_k."""
    from vaebench.metrics.bounds import per_image_estimates, samples_per_pass

    model.eval()
    per_image_estimates(model, x[:1], x_uint8[:1], 10, cfg.memory_mb, torch.Generator().manual_seed(cfg.eval_seed))
    with PeakMemory(device, mem_method) as mem:
        t0 = _clock(device)
        est = per_image_estimates(model, x, x_uint8, cfg.k, cfg.memory_mb,
                                  torch.Generator().manual_seed(cfg.eval_seed))
        seconds = _clock(device) - t0
    lk = est["L_k"]
    if not torch.isfinite(lk).all():
        raise FloatingPointError(f"bench: L_k is not finite for {int((~torch.isfinite(lk)).sum())} image(s)")
    n = len(x)
    return {
        "k": cfg.k,
        "images": n,
        "seconds": seconds,
        "images_x_samples_per_s": n * cfg.k / seconds,
        "full_test_images": MNIST_TEST_IMAGES,
        "full_test_seconds": seconds if n == MNIST_TEST_IMAGES else seconds * MNIST_TEST_IMAGES / n,
        "full_test_seconds_kind": "measured" if n == MNIST_TEST_IMAGES else "extrapolated",
        "samples_per_pass": samples_per_pass(model, cfg.memory_mb),
        "L_k_mean_nats": float(lk.mean()),
        "memory": mem.result,
    }


def bench_model(name: str, data: dict, cfg: BenchConfig, device: torch.device, mem_method: str) -> dict:
    """Both training loops, both test ELBOs (paired) and the L_k timing of catalogue model ``name``. Raises
    ConfigError, DivergenceError or FloatingPointError."""
    from vaebench.metrics.bounds import samples_per_pass

    ours_model, ref_model, model_config = build_models(name, cfg.seed, device)
    if any(not torch.equal(a, b) for a, b in zip(ours_model.state_dict().values(), ref_model.state_dict().values())):
        raise RuntimeError(f"bench: the two {name} models do not start from the same weights")
    n_train = cfg.n_train or len(data["train"])
    x_train = data["train_uint8"][:n_train].to(device)
    ours = train_ours(ours_model, x_train, cfg, device, mem_method, tag=f"bench {name} ours")
    del x_train
    ref = train_reference(ref_model, data["train"], n_train, cfg, device, mem_method,
                          tag=f"bench {name} reference")

    n_test = cfg.n_test or len(data["test"])
    test_u8 = data["test_uint8"][:n_test].to(device)
    bs = max(1, min(cfg.eval_batch_size, samples_per_pass(ours_model, cfg.memory_mb)))
    x_test = ours_model.preprocess_fixed(test_u8, seed=cfg.eval_seed, batch_size=bs)
    elbo = {}
    with PeakMemory(device, mem_method) as mem:
        for loop, model in (("ours", ours_model), ("reference", ref_model)):
            t0 = _clock(device)
            elbo[loop] = elbo_per_image(model, x_test, bs, cfg.eval_seed)
            if not torch.isfinite(elbo[loop]).all():
                raise FloatingPointError(f"bench: {name} ({loop} loop): the test ELBO is not finite")
            elbo[f"{loop}_seconds"] = _clock(device) - t0
    del x_test, test_u8
    diff = elbo["ours"] - elbo["reference"]
    ref_mean = float(elbo["reference"].mean())
    relative = float(diff.mean()) / abs(ref_mean)

    eval_u8 = data["test_uint8"][: cfg.eval_images].to(device)
    x_eval = ours_model.preprocess_fixed(eval_u8, seed=cfg.eval_seed, batch_size=bs)
    lk = time_lk(ours_model, x_eval, eval_u8, cfg, device, mem_method)

    ratio = ours["images_per_s"] / ref["images_per_s"]
    return {
        "model_config": model_config,
        "parameters": sum(p.numel() for p in ours_model.parameters()),
        "train": {"n_train": n_train, "ours": ours, "reference": ref, "throughput_ratio": ratio},
        "test_elbo": {
            "n_images": n_test,
            "ours": {**_mean_se(elbo["ours"]), "seconds": elbo["ours_seconds"]},
            "reference": {**_mean_se(elbo["reference"]), "seconds": elbo["reference_seconds"]},
            "difference": _mean_se(diff),
            "relative_difference": relative,
            "memory": mem.result,
        },
        "lk_evaluation": lk,
        "target": {
            "description": (f"on a GPU: ours >= {TARGET_THROUGHPUT_RATIO:g}x the reference's images/s at equal test "
                            f"ELBO +-{TARGET_ELBO_RELATIVE:.0%}"),
            "throughput_ratio": ratio,
            "relative_elbo_difference": relative,
            "met": bool(ratio >= TARGET_THROUGHPUT_RATIO and abs(relative) <= TARGET_ELBO_RELATIVE),
        },
    }


def run(cfg: BenchConfig) -> dict:
    """Run the benchmark, write ``cfg.out`` (JSON, atomically) and return it. Raises FileNotFoundError,
    DatasetDownloadError, DataIntegrityError, DeviceError, ConfigError, DivergenceError, FloatingPointError."""
    import torchvision

    from vaebench.atomic import write_json
    from vaebench.device import device_name, pick_device

    device = pick_device(cfg.device)
    mem_method = host_peak_method()
    t_start = time.perf_counter()
    data = load_mnist(cfg.mirror, cfg.raw_dir)
    if len(data["train"]) != MNIST_TRAIN_IMAGES or len(data["test"]) != MNIST_TEST_IMAGES:
        raise ValueError(f"bench: expected the official {MNIST_TRAIN_IMAGES} training and {MNIST_TEST_IMAGES} "
                         f"test images, got {len(data['train'])} and {len(data['test'])}")
    result = {
        "benchmark": "vaebench bench: our train loop vs the sigma-VAE reference loop shape; L_k evaluation cost",
        "device": str(device),
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "cuda_version": torch.version.cuda if device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python_version": platform.python_version(),
        "config": cfg.model_dump(mode="json"),
        "data": {"dataset": "mnist", "source": data["source"], "sha256": data["sha256"],
                 "train_images": cfg.n_train or MNIST_TRAIN_IMAGES, "test_images_elbo": cfg.n_test or MNIST_TEST_IMAGES,
                 "test_images_lk": cfg.eval_images},
        "host_memory_method": HOST_PEAK_DESCRIPTION[mem_method],
        "timing": ("each loop: warmup_steps untimed steps on a throw-away copy, then every epoch timed "
                   "(clock read after torch.cuda.synchronize() on CUDA); images_per_s = images counted / timed "
                   "seconds; L_k: one untimed call (1 image, k = 10), then timed"),
        "units": {"seconds": "s", "images_per_s": "images/s", "test_elbo": "nats/image",
                  "memory": "MiB (2^20 bytes)"},
        "models": {},
    }
    for name in cfg.models:
        result["models"][name] = bench_model(name, data, cfg, device, mem_method)
    result["total_seconds"] = time.perf_counter() - t_start
    write_json(cfg.out, result)
    return result


def _mib(v) -> str:
    return "-" if v is None else f"{v:,.0f}"


def format_table(result: dict) -> str:
    """The benchmark as a readable text table (what ``python -m vaebench bench`` prints)."""
    cfg = result["config"]
    lines = [f"vaebench bench on {result['device']} ({result['device_name']}), torch {result['torch_version']}, "
             f"{result['torch_threads']} threads; batch {cfg['batch_size']}, {cfg['epochs']} epoch(s), "
             f"{result['data']['train_images']} training images, test ELBO on {result['data']['test_images_elbo']}",
             "",
             f"{'model':<16} {'loop':<10} {'steps':>6} {'images/s':>10} {'s/epoch':>9} {'test ELBO':>11} "
             f"{'+-se':>6} {'RSS MiB':>8} {'CUDA MiB':>9}"]
    for name, m in result["models"].items():
        for loop in ("ours", "reference"):
            t, e = m["train"][loop], m["test_elbo"][loop]
            lines.append(f"{name:<16} {loop:<10} {t['steps']:>6} {t['images_per_s']:>10,.0f} "
                         f"{t['seconds_per_epoch']:>9.2f} {e['mean']:>11.2f} {e['se'] or 0:>6.2f} "
                         f"{_mib(t['memory']['host_rss_peak_mib']):>8} {_mib(t['memory']['cuda_max_allocated_mib']):>9}")
        lines.append(f"{'':<16} {'ours/ref':<10} {'':>6} {m['train']['throughput_ratio']:>9.2f}x {'':>9} "
                     f"{m['test_elbo']['relative_difference']:>+10.2%} (paired diff "
                     f"{m['test_elbo']['difference']['mean']:+.2f} +- {m['test_elbo']['difference']['se'] or 0:.2f} nats); "
                     f"target met: {m['target']['met']}")
    lines += ["", f"{'model':<16} {'L_k k':>6} {'images':>7} {'seconds':>9} {'img*samples/s':>14} "
                  f"{'10k test s':>11} {'':<12} {'RSS MiB':>8} {'CUDA MiB':>9}"]
    for name, m in result["models"].items():
        lk = m["lk_evaluation"]
        lines.append(f"{name:<16} {lk['k']:>6} {lk['images']:>7} {lk['seconds']:>9.2f} "
                     f"{lk['images_x_samples_per_s']:>14,.0f} {lk['full_test_seconds']:>11,.0f} "
                     f"{lk['full_test_seconds_kind']:<12} {_mib(lk['memory']['host_rss_peak_mib']):>8} "
                     f"{_mib(lk['memory']['cuda_max_allocated_mib']):>9}")
    lines += ["", f"total {result['total_seconds']:.1f} s; written to {result['config']['out']}"]
    return "\n".join(lines)
