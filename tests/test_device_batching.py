"""Issue 27: the diffusion codec from several threads at once (the batched path's workers)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from test_codec_batch import _img


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
