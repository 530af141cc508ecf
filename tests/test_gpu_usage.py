"""Issue 27: the GPU utilisation sampler of migrate's batched path, against a stand-in
``nvidia-smi`` (no GPU here): it parses the tool's CSV per GPU, summarises mean and max, and says
nothing (None) where there is no tool."""

from __future__ import annotations

import os
import time

from archiver.service import gpu_usage
from archiver.service.gpu_usage import GpuSampler


def _fake_smi(tmp_path, monkeypatch, body: str):
    exe = tmp_path / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(gpu_usage, "_nvml_reader", lambda: None)  # whatever is installed: the tool


def test_the_sampler_reads_nvidia_smi_per_gpu(tmp_path, monkeypatch):
    # the arguments are the documented query; the second GPU's reading alternates 40 / 80
    _fake_smi(tmp_path, monkeypatch, 'test "$*" = "--query-gpu=utilization.gpu --format=csv,noheader,nounits" || exit 3\n'
              'n=$(ls "$0".* 2>/dev/null | wc -l); touch "$0.$n"\n'
              'if [ $((n % 2)) = 0 ]; then printf "5\\n40\\n"; else printf "5\\n80\\n"; fi\n')
    with GpuSampler(interval=0.01, index=1) as gpu:
        deadline = time.monotonic() + 20
        while len(gpu.samples) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    s = gpu.summary()
    assert s["samples"] >= 4 and s["max_pct"] == 80.0 and 40.0 < s["mean_pct"] < 80.0 and s["source"] == "nvidia-smi"
    assert set(gpu.samples) == {40.0, 80.0}


def test_no_tool_or_a_broken_one_means_no_figure(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_usage, "_nvml_reader", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi at all
    with GpuSampler(interval=0.01) as gpu:
        time.sleep(0.1)
    assert gpu.summary() is None and gpu.source is None
    _fake_smi(tmp_path, monkeypatch, 'echo 50; exit 9\n')  # it failed, whatever it printed
    with GpuSampler(interval=0.01) as gpu:
        time.sleep(0.1)
    assert gpu.summary() is None
