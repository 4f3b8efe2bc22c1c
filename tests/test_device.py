"""Which device a job computes on: the study's setting, the log line, ``device: cuda`` failing instead of
falling back, and one GPU per job from the node's slot locks (checked on a CPU by the slots and the GPU index
each job would use)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from conftest import REPO, tiny_params
from vaebench import device as dev
from vaebench.cli import main

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")


def test_cpu_setting_logs_the_device(capsys):
    assert dev.pick_device("cpu") == torch.device("cpu")
    assert "[device] cpu (the study says device: cpu)" in capsys.readouterr().err


@no_gpu
def test_auto_falls_back_to_cpu_and_says_why(capsys):
    assert dev.pick_device("auto") == torch.device("cpu")
    err = capsys.readouterr().err
    assert err.startswith("[device] cpu (device: auto and torch ") and torch.__version__ in err


@no_gpu
def test_cuda_setting_fails_instead_of_falling_back(tmp_path, monkeypatch, capsys):
    with pytest.raises(dev.DeviceError, match=r"device: cuda, but torch .* (CPU-only build|sees no usable GPU)"):
        dev.pick_device("cuda")
    # through the CLI: the job stops with exit code 1 and one line, before reading any data
    params = tiny_params()
    params["device"] = "cuda"
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(REPO)
    code = main(["train", "--dataset", "mnist", "--model", "vae_bernoulli", "--seed", "0",
                 "--params", str(tmp_path / "study.yaml")])
    assert code == 1
    assert "vaebench: DeviceError: the study says device: cuda" in capsys.readouterr().err


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="'gpu'"):
        dev.pick_device("gpu")


@no_gpu
def test_no_gpu_slots_without_a_gpu():
    assert dev.visible_gpus("auto") == 0 and dev.visible_gpus("cpu") == 0


def test_gpu_for_slot_spreads_jobs_over_the_gpus():
    assert [dev.gpu_for_slot(j, 2) for j in range(5)] == [0, 1, 0, 1, 0]
    with pytest.raises(ValueError, match="n_gpus"):
        dev.gpu_for_slot(0, 0)


# a job: claim a slot, print it and the GPU it would use on a 2-GPU node, then hold the slot until killed
_JOB = ("import sys, time; from vaebench import device as d; j = d.claim_slot(sys.argv[1]); "
        "print(j, d.gpu_for_slot(j, 2), flush=True); time.sleep(60)")


def _start(slots):
    return subprocess.Popen([sys.executable, "-c", _JOB, str(slots)], stdout=subprocess.PIPE, text=True)


def test_concurrent_jobs_get_distinct_slots_and_a_killed_job_frees_its_slot(tmp_path):
    jobs = []
    try:
        for _ in range(4):              # one after another, each holding its slot: 0, 1, 2, 3
            jobs.append(_start(tmp_path))
            jobs[-1].stdout_line = jobs[-1].stdout.readline().split()
        got = [tuple(map(int, j.stdout_line)) for j in jobs]
        assert got == [(0, 0), (1, 1), (2, 0), (3, 1)]          # two jobs per GPU
        jobs[1].send_signal(signal.SIGKILL)                      # a job dies without cleaning up
        jobs[1].wait()
        time.sleep(0.1)
        new = _start(tmp_path)
        jobs.append(new)
        assert tuple(map(int, new.stdout.readline().split())) == (1, 1)   # its slot (and GPU) is free again
    finally:
        for j in jobs:
            j.kill()
            j.wait()


def test_a_process_keeps_its_slot(tmp_path):
    code = ("import sys; from vaebench import device as d; "
            "print(d.claim_slot(sys.argv[1]), d.claim_slot(sys.argv[1]))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "0"]


def test_slot_folder_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(dev.SLOT_DIR_ENV, str(tmp_path / "slots"))
    assert dev.slot_dir() == tmp_path / "slots"
    monkeypatch.delenv(dev.SLOT_DIR_ENV)
    assert dev.slot_dir().name == f"vaebench-gpu-slots-{os.getuid()}"
