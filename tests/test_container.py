"""The .dlc container: exact round trip, and every kind of damage refused before decoding."""

import hashlib
import struct

import fuzzing  # tests/ is on sys.path (pytest's rootdir conftest)
import pytest

from archiver.codecs.diffusion import container
from archiver.errors import ContainerError


#: a small v1 header; the fuzz target (tests/fuzzing.py) mutates files built from the same one
_header = fuzzing._dlc_header


SECTIONS = {container.LATENT: b"\x01\x02\x03latent", container.ALPHA: b"alpha-png",
            container.EXIF: b"Exif\x00\x00MM", container.ICC: b"icc", container.XMP: b"<x:xmpmeta/>"}


def test_round_trip_keeps_every_field_and_section():
    data = container.pack(_header(), SECTIONS)
    h, sections = container.unpack(data)
    assert sections == SECTIONS
    assert (h.backbone_id, h.weights_sha256, h.width, h.height, h.mode) == ("tiny", "ab" * 32, 7, 5, "RGBA")
    assert (h.t, h.steps, h.s, h.entropy_kind, h.stride) == (42, 4, 0.5, 0, 8)
    assert h.mu == pytest.approx([0.1, -0.2, 0.3, 0.0])
    assert h.delta == [1.0, 1.5, 0.5, 2.0]
    assert h.roi == [(0, 0, 1, 1)] and h.roi_factor == 2.0
    assert h.section_sizes["latent"] == len(SECTIONS[container.LATENT])
    assert container.read_header(data) == h


def test_layout_starts_with_magic_version_and_ends_with_sha256():
    data = container.pack(_header(), SECTIONS)
    assert data[:8] == b"\x89DLC\r\n\x1a\n"
    assert data[8] == 1
    (hlen,) = struct.unpack_from("<I", data, 9)
    assert data[13:13 + hlen][0] == len("tiny") and data[14:18] == b"tiny"
    assert data[-32:] == hashlib.sha256(data[:-32]).digest()


def test_empty_sections_are_left_out():
    data = container.pack(_header(mode="RGB"), {container.LATENT: b"q", container.EXIF: b""})
    _, sections = container.unpack(data)
    assert set(sections) == {container.LATENT}


@pytest.mark.parametrize("cut", [0, 1, 5, 8, 9, 12, 20, 60, -33, -32, -1])
def test_truncated_files_are_refused(cut):
    data = container.pack(_header(), SECTIONS)
    with pytest.raises(ContainerError):
        container.read_header(data[:cut])


@pytest.mark.parametrize("adapter", [None, "cd" * 32])
def test_every_altered_byte_is_detected(adapter):
    data = container.pack(_header(adapter_sha256=adapter), SECTIONS)
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x40
        with pytest.raises(ContainerError):
            container.unpack(bytes(bad))


def test_appended_bytes_are_refused():
    data = container.pack(_header(), SECTIONS)
    with pytest.raises(ContainerError, match="checksum"):
        container.unpack(data + b"\x00")


def _resealed(data: bytes) -> bytes:
    body = bytes(data[:-32])
    return body + hashlib.sha256(body).digest()


def test_unknown_version_is_named():
    data = bytearray(container.pack(_header(), SECTIONS))
    data[8] = 3
    with pytest.raises(ContainerError, match="unknown .dlc format version 3"):
        container.read_header(_resealed(data))  # even a well-formed future file


def test_without_an_adapter_the_file_is_version_1_as_before():
    """Files that need no optional field are byte-identical to what earlier releases wrote."""
    data = container.pack(_header(), SECTIONS)
    assert data[8] == 1
    assert container.read_header(data).adapter_sha256 is None


def test_adapter_digest_makes_a_version_2_file():
    data = container.pack(_header(adapter_sha256="cd" * 32), SECTIONS)
    assert data[8] == 2
    h, sections = container.unpack(data)
    assert h.adapter_sha256 == "cd" * 32 and h.version == 2 and sections == SECTIONS
    v1 = container.pack(_header(), SECTIONS)
    (hlen1,) = struct.unpack_from("<I", v1, 9)
    (hlen2,) = struct.unpack_from("<I", data, 9)
    assert hlen2 == hlen1 + 1 + 1 + 3 + 32, "v2 = v1 header + qmode + count + (tag, u16 length) + digest"
    at = v1.index(struct.pack("<f", 0.5), 13) + 4  # the qmode byte follows f32 s
    assert data[13:at] == v1[13:at] and data[at] == container.QMODE_HEADER
    assert data[at + 1:13 + hlen1 + 1] == v1[at:13 + hlen1], "then v1's fields"


def test_quantization_mode_1_stores_no_mu_or_delta():
    h = _header(qmode=container.QMODE_BACKBONE, mu=[], delta=[])
    data = container.pack(h, SECTIONS)
    assert data[8] == 2
    back = container.read_header(data)
    assert back.qmode == 1 and back.mu == [] and back.delta == [] and back.adapter_sha256 is None
    (hlen,) = struct.unpack_from("<I", data, 9)
    (hlen1,) = struct.unpack_from("<I", container.pack(_header(), SECTIONS), 9)
    assert hlen == hlen1 + 1 + 1 - 2 * 4 * 4, "qmode + field count, minus mu and delta"
    with pytest.raises(ValueError):
        container.pack(_header(qmode=1), SECTIONS)  # mu/delta given with mode 1


def test_unknown_quantization_mode_is_refused():
    data = bytearray(container.pack(_header(qmode=container.QMODE_BACKBONE, mu=[], delta=[]), SECTIONS))
    at = data.index(struct.pack("<f", 0.5), 13) + 4
    assert data[at] == 1
    data[at] = 7
    with pytest.raises(ContainerError, match="unknown quantization mode 7"):
        container.read_header(_resealed(data))


def test_unknown_optional_field_is_refused():
    data = bytearray(container.pack(_header(adapter_sha256="cd" * 32), SECTIONS))
    (hlen,) = struct.unpack_from("<I", data, 9)
    tag_at = 13 + hlen - 32 - 3
    assert data[tag_at] == container.FIELD_ADAPTER
    data[tag_at] = 99
    with pytest.raises(ContainerError, match="unknown .dlc header field 99"):
        container.read_header(_resealed(data))


def test_version_1_file_with_a_v2_tail_is_refused():
    data = bytearray(container.pack(_header(adapter_sha256="cd" * 32), SECTIONS))
    data[8] = 1  # read as v1, the fields no longer line up
    with pytest.raises(ContainerError):
        container.read_header(_resealed(data))


def test_not_a_container():
    with pytest.raises(ContainerError, match="not a .dlc"):
        container.read_header(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)


def test_consistent_checksum_but_inconsistent_geometry_is_refused():
    """A file rewritten with a valid checksum but impossible fields must still not decode."""
    h = _header(latent_height=9)
    data = container.pack(h, SECTIONS)
    with pytest.raises(ContainerError, match="latent size"):
        container.unpack(data)


# -- fuzzing (issue 11): no exception but ContainerError, whatever the bytes -----------------------
def _fuzz(n):
    import sys

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    import fuzzing

    rep = fuzzing.fuzz_dlc(n, seed=n)
    assert rep["other"] == {}, rep["other"]
    assert rep["inputs"] == n and rep["documented_errors"] > n // 4 and rep["accepted"] > 0
    return rep


def test_fuzz_dlc_parser_short():
    _fuzz(20_000)


@pytest.mark.slow
def test_fuzz_dlc_parser_100k():
    print(_fuzz(100_000))
