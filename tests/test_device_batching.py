"""Issue 27: the diffusion codec from several threads at once, and the cross-file batcher of its
device work. Several threads coding files at once, through one ``Batcher``, get the very bytes
and (to a level) the pixels of coding each file alone, and the batcher really batched; a failing
batch reaches only its own files and nobody waits forever (a closed batcher, a caller that died)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from archiver.codecs.diffusion.batching import Batcher, BatcherClosed, active_batcher, batching
from test_codec_batch import _img


def _pixels(img):
    return np.asarray(img, dtype=int)


def test_threads_coding_through_the_batcher_get_the_bytes_and_pixels_of_coding_alone():
    from archiver.codecs.diffusion import pipeline
    from archiver.codecs.diffusion.backbones import get_backbone

    tiny = get_backbone("tiny")
    # two sizes, so that the batcher must group by shape; three files of the larger one
    images = [_img(96, 64, 1), _img(80, 48, 2), _img(96, 64, 3), _img(80, 48, 4), _img(96, 64, 5)]
    quality = 40

    def code(img):
        probe = pipeline.QualityProbe(img, tiny)
        data = probe.file_at(quality)[0]
        return data, probe.decode(data).image, pipeline.decode_bytes(data, tiny).image

    alone = [code(img) for img in images]
    assert active_batcher() is None
    start = threading.Barrier(len(images))

    with batching(Batcher(max_batch=4, wait_seconds=2.0)) as batcher:
        def client(img):
            with batcher.client():
                start.wait(timeout=30)
                return code(img)

        with ThreadPoolExecutor(len(images)) as pool:
            together = list(pool.map(client, images, timeout=300))
        stats = batcher.stats()
    assert active_batcher() is None
    for (data_a, probe_a, full_a), (data_b, probe_b, full_b) in zip(alone, together):
        assert data_a == data_b  # the .dlc file: bit-exact
        for a, b in ((probe_a, probe_b), (full_a, full_b)):
            assert a.size == b.size and a.mode == b.mode
            assert np.abs(_pixels(a) - _pixels(b)).max() <= 1
    kinds = stats["by_kind"]
    # every call went through the batcher: one analysis and two decodes per file
    assert kinds["analyse"]["items"] == len(images) and kinds["decode"]["items"] == 2 * len(images)
    # and it batched across files (never across sizes: no batch holds more than 3 of one size)
    assert kinds["analyse"]["largest"] >= 2 and kinds["decode"]["largest"] >= 2
    assert stats["largest"] <= 3 and stats["batches"] < stats["items"]
    assert stats["mean_batch"] == pytest.approx(stats["items"] / stats["batches"], abs=0.01)


def _double(items):
    if any(i == "bad" for i in items):
        raise ValueError("bad item in the batch")
    return [2 * i for i in items]


def test_a_failing_batch_reaches_only_the_file_at_fault():
    """A batch that fails runs again file by file: the others get their results, the bad one
    its own error (and nothing hangs)."""
    with Batcher(max_batch=8, wait_seconds=5.0) as b:
        items = [1, 2, "bad", 3]
        start = threading.Barrier(len(items))

        def call(i):
            with b.client():
                start.wait(timeout=10)
                try:
                    return b.run(("double",), i, _double)
                except ValueError as e:
                    return str(e)

        with ThreadPoolExecutor(len(items)) as pool:
            got = list(pool.map(call, items, timeout=30))
        stats = b.stats()
    assert got == [2, 4, "bad item in the batch", 6]
    # the first batch held all four (every client was waiting), then each ran alone
    assert stats["by_kind"]["double"]["batches"] == 4 and stats["by_kind"]["double"]["items"] == 4


def test_a_batch_that_always_fails_fails_each_caller_without_hanging():
    def broken(items):
        raise RuntimeError("CUDA error: out of memory")

    with Batcher(max_batch=4, wait_seconds=0.05) as b:
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(b.run, ("decode",), i, broken) for i in range(3)]
            errors = [f.exception(timeout=30) for f in futures]
    assert all(isinstance(e, RuntimeError) and "out of memory" in str(e) for e in errors)


def test_closing_the_batcher_releases_every_waiting_caller():
    """An interrupted run closes its batcher: calls still waiting (and later ones) end with
    ``BatcherClosed`` at once, even when a client thread died and the batch would never fill."""
    b = Batcher(max_batch=4, wait_seconds=3600.0)

    def dies():
        with b.client():
            raise KeyError("a worker thread died")

    with pytest.raises(KeyError):
        dies()
    with ThreadPoolExecutor(2) as pool:
        waiting = [pool.submit(b.run, ("analyse", (1, 3, 8, 8)), i, _double) for i in range(2)]
        time.sleep(0.2)
        assert not any(f.done() for f in waiting)  # a batch that is not full waits for its hour
        t0 = time.monotonic()
        b.close()
        errors = [f.exception(timeout=10) for f in waiting]
    assert time.monotonic() - t0 < 5
    assert all(isinstance(e, BatcherClosed) for e in errors)
    with pytest.raises(BatcherClosed):
        b.run(("analyse",), 1, _double)
    assert b.stats()["batches"] == 0


def test_a_batcher_lets_no_second_one_in_and_checks_its_size():
    with pytest.raises(ValueError):
        Batcher(max_batch=0)
    with batching(Batcher()) as b:
        assert active_batcher() is b
        with pytest.raises(RuntimeError, match="already active"):
            with batching(Batcher()):
                pass
        assert active_batcher() is b
    assert active_batcher() is None


def test_entropy_coding_in_many_threads_at_once_gives_the_bytes_of_one_thread():
    """The batched path entropy-codes in its worker threads at once. compressai's checkerboard
    context convolution rewrote its own weights on every call, which garbled the bits of a
    thread coding at the same moment; archiver's replacement leaves them alone."""
    from archiver.codecs.diffusion import pipeline
    from archiver.codecs.diffusion.backbones import get_backbone

    tiny = get_backbone("tiny")
    probes = [pipeline.QualityProbe(_img(96, 64, 20 + i), tiny) for i in range(4)]
    qualities = list(range(10, 90, 8))
    want = {(i, q): p.file_at(q)[0] for i, p in enumerate(probes) for q in qualities}
    jobs = [(i, q) for _ in range(3) for i in range(len(probes)) for q in qualities]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda job: probes[job[0]].file_at(job[1])[0], jobs, timeout=300))
    assert [g == want[job] for g, job in zip(got, jobs)] == [True] * len(jobs)
