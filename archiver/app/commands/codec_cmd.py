"""``archiver encode`` / ``archiver decode``: the codec on single files."""

from __future__ import annotations

import io
from pathlib import Path

import click
from PIL import Image, UnidentifiedImageError

from ...codecs import codec_of_data, get_codec, suffixes
from ...catalog.urls import may_exist
from ...errors import ContainerError, SafetyError, UnknownArtifactError, UsageError
from ...imageio import load_image
from ...reconstruction import PNG_CHUNKS_PARAM, is_marked, lossy_note, marked_bytes
from ..core import with_core
from ..output import emit, human_bytes


def _check_output(dst: Path) -> None:
    parent = dst.parent if str(dst.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{dst}: the output directory {parent} does not exist")


def _box(text: str) -> tuple[int, int, int, int]:
    try:
        left, top, right, bottom = (int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--roi {text!r}: expected four integers LEFT,TOP,RIGHT,BOTTOM") from None
    if right <= left or bottom <= top:
        raise UsageError(f"--roi {text!r}: right/bottom must be beyond left/top")
    return left, top, right, bottom


def _backbone(cfg, name, model, device, adapter=None):
    """The backbone the options name, the rest from the config (the codec itself reads none)."""
    from ...codecs.diffusion.backbones.lookup import configured_backbone  # heavy: torch (codecs.diffusion), not loaded by archiver --help

    if model and not name:
        name = "diffusers"
    return configured_backbone(cfg, name=name, model=model, device=device, adapter=adapter)


_ADAPTER_HELP = ("adapter folder for the diffusers model (default: adapter in the config, with its model); "
                 "'none' for the generic entropy model")


@click.command()
@click.argument("src", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--bpp", type=float, default=None, help="Target bits per pixel (rate control on the real file size).")
@click.option("--quality", type=float, default=None, help="Fixed quality 0..100 instead of a target rate (default 50).")
@click.option("--steps", type=click.IntRange(0, 255), default=None, help="DDIM steps the decoder will use (0 = no diffusion).")
@click.option("--backbone", "backbone_name", type=click.Choice(["tiny", "diffusers"]), default=None,
              help="Backbone (default from the config: tiny).")
@click.option("--model", type=str, default=None, help="diffusers model directory or cached repo id.")
@click.option("--device", type=str, default=None, help="cpu, cuda or auto.")
@click.option("--adapter", type=str, default=None, help=_ADAPTER_HELP)
@click.option("--search-t", is_flag=True, help="Try timesteps around the SNR match and keep the best (slower).")
@click.option("--roi", multiple=True, metavar="L,T,R,B",
              help="Protected region in pixels, coded with finer steps (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_core
def encode(src, dst, bpp, quality, steps, backbone_name, model, device, adapter, search_t, roi, as_json, core):
    """Compress image SRC into the .dlc file DST."""
    from ...storage.atomic import write_bytes  # heavy: storage.atomic (~9 ms), not loaded by archiver --help
    from ...codecs.diffusion.files import output_file_mode  # heavy: torch (codecs.diffusion), not loaded by archiver --help
    from ...codecs.diffusion.pipeline import encode_image  # heavy: torch (codecs.diffusion), not loaded by archiver --help

    if bpp is not None and quality is not None:
        raise UsageError("give --bpp or --quality, not both")
    _check_output(dst)
    cfg = core.cfg
    boxes = [_box(b) for b in roi]
    img = load_image(src, max_pixels=cfg.max_pixels)  # bad input fails before a model loads
    backbone = _backbone(cfg, backbone_name, model, device, adapter)
    r = encode_image(img, backbone, bpp=bpp, quality=quality, search_t=search_t, roi=boxes or None,
                     steps=cfg.decode_steps if steps is None else steps)
    write_bytes(dst, r.data, mode=output_file_mode())
    data = {"input": str(src), "output": str(dst), **r.summary(), "backbone": backbone.id,
            "weights_sha256": backbone.weights_digest, "adapter_sha256": getattr(backbone, "adapter_digest", None)}

    def human(d):
        lines = [f"{src} -> {dst}: {human_bytes(d['size_bytes'])}, {d['bpp']:.4f} bpp "
                 f"({d['width']}x{d['height']}), quality {d['quality']:.1f}, t={d['t']}, "
                 f"{d['steps']} steps, {d['seconds']:.2f} s"]
        if d["rate_note"]:
            lines.append(f"note: {d['rate_note']}")
        lines += [f"note: {n}" for n in d["notes"]]
        return "\n".join(lines)

    emit(data, as_json, human)


@click.command()
@click.argument("src", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--steps", type=click.IntRange(0, 1000), default=None,
              help="DDIM steps for a .dlc (default: what the encoder wrote; 0 = plain autoencoder decode).")
@click.option("--backbone", "backbone_name", type=click.Choice(["tiny", "diffusers"]), default=None,
              help="Backbone for a .dlc (default: the one the file names).")
@click.option("--model", type=str, default=None, help="diffusers model directory or cached repo id.")
@click.option("--device", type=str, default=None, help="cpu, cuda or auto.")
@click.option("--adapter", type=str, default=None, help=_ADAPTER_HELP)
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_core
def decode(src, dst, steps, backbone_name, model, device, adapter, force, as_json, core):
    """Decode SRC, any file archive wrote (a .dlc, .avif or .jxl, a lossless .jxl/.axl), to the
    image DST (format from its suffix, PNG by default). A lossless file gives the original back;
    a lossy one an approximation, marked as such in its XMP and EXIF, with the original's
    metadata (and, when the catalog knows the file, a PNG's text chunks). No catalog is needed."""
    from ...codecs.diffusion.files import format_for  # heavy: torch (codecs.diffusion), not loaded by archiver --help

    fmt = format_for(dst)  # refuse an unwritable suffix before any work
    _check_output(dst)
    if (dst.exists() or dst.is_symlink()) and not force:
        raise SafetyError(f"{dst} exists; use --force to overwrite")  # as restore does
    if not src.is_file():
        raise UsageError(f"{src}: no such file")
    blob = src.read_bytes()
    name = codec_of_data(blob)
    if name is None and src.suffix.lower() == ".dlc":
        name = "diffusion"  # named as one but without its mark: the container check says what is wrong
    elif name is None and src.suffix.lower() in suffixes():
        raise ContainerError(f"{src}: damaged {src.suffix} file: not readable as one ({_what(blob)})")
    elif name is None:
        raise UnknownArtifactError(f"{src}: not a file archiver wrote ({_what(blob)}); decode reads "
                                   f"{', '.join(suffixes())} files from archive, migrate and encode")
    if name == "lossless":
        return _decode_lossless(src, dst, fmt, blob, as_json)
    row = _row_of(core, src)
    if name == "diffusion":
        img, data = _decode_dlc(core, blob, steps, backbone_name, model, device, adapter)
    else:
        try:
            img = get_codec(name).decode(blob)
        except (OSError, ValueError, SyntaxError) as e:  # Pillow's ways of saying "cut short" or "garbled"
            why = "truncated or garbled" if isinstance(e, UnidentifiedImageError) else str(e)
            raise ContainerError(f"{src}: damaged {name} file ({why})") from None
        data = {"codec": name, "width": img.width, "height": img.height}
    _write_approx(src, dst, fmt, img, name, row, data)
    emit(data, as_json, lambda x: (f"{src} -> {dst}: approximate reconstruction ({x['codec']} codec), "
                                   f"{x['width']}x{x['height']} {x['mode']}"
                                   + (f", t={x['t']}, {x['steps']} steps, {x['seconds']:.2f} s" if "t" in x else "")
                                   + ("; marked in its XMP and EXIF" if x["marked"] else
                                      f"; NOT marked ({fmt} cannot carry the note: prefer .png)")
                                   + f"; metadata: {', '.join(k for k, v in x['metadata'].items() if v) or 'none'}"))


def _what(blob: bytes) -> str:
    """What a file that no codec claims looks like, in words."""
    try:
        with Image.open(io.BytesIO(blob)) as im:
            return f"a {im.format} image"
    except Exception:  # noqa: BLE001 - anything unreadable is simply "not an image"
        return "not an image archiver knows"


def _row_of(core, src: Path):
    """The catalog row whose archived file ``src`` is, when a catalog exists and knows it
    (decode needs none: any catalog failure is no row)."""
    url = core.cfg.resolved_catalog_url()
    if not may_exist(url):  # no catalog: nothing to ask, and no database library to load
        return None
    from ...catalog import queries as q  # heavy: sqlalchemy (catalog), not loaded by archiver --help
    from ...catalog.db import open_existing  # heavy: sqlalchemy (catalog), not loaded by archiver --help

    try:
        cat = open_existing(url)
        if cat is None:
            return None
        try:
            with cat.read_session() as s:
                row = q.by_compressed_path(s, str(src.resolve()))
                if row is not None:
                    s.expunge(row)  # kept as read: the read-only transaction is rolled back
                return row
        finally:
            cat.close()
    except Exception:  # noqa: BLE001 - the catalog only adds what it knows (a broken one: nothing)
        return None


def _decode_dlc(core, blob, steps, backbone_name, model, device, adapter):
    """A .dlc's image (its EXIF/ICC/XMP in ``.info``) and what the JSON output says of it."""
    from ...codecs.diffusion.container import read_header  # heavy: torch (codecs.diffusion), not loaded by archiver --help
    from ...codecs.diffusion.pipeline import decode_bytes  # heavy: torch (codecs.diffusion), not loaded by archiver --help

    header = read_header(blob)  # damaged files are refused before loading a model
    name = backbone_name or (None if model is None else "diffusers") or header.backbone_id
    backbone = _backbone(core.cfg, name, model, device, adapter)
    d = decode_bytes(blob, backbone, steps=steps)
    h = d.header
    img = d.image
    img.info.update(d.metadata.pil_save_kwargs())
    return img, {"codec": "diffusion", "width": h.width, "height": h.height, "original_mode": h.mode, "t": h.t,
                 "steps": d.steps, "backbone": h.backbone_id, "weights_sha256": h.weights_sha256,
                 "adapter_sha256": h.adapter_sha256, "bpp": len(blob) * 8 / h.pixels, "seconds": d.seconds}


def _write_approx(src: Path, dst: Path, fmt: str, img, codec: str, row, data: dict) -> None:
    """Write a lossy codec's image to ``dst`` as ``restore`` writes a reconstruction: marked, with
    the artifact's metadata and, when the catalog knows the file, the original's PNG chunks."""
    from ...storage.atomic import write_bytes  # heavy: storage.atomic (~9 ms), not loaded by archiver --help
    from ...codecs.diffusion.files import output_file_mode  # heavy: torch (codecs.diffusion), not loaded by archiver --help

    note = lossy_note(row) if row is not None else (
        f"Approximate reconstruction by archiver of {src.name} ({codec} codec); not the original pixels")
    chunks = (row.codec_params or {}).get(PNG_CHUNKS_PARAM) if row is not None else None
    out = marked_bytes(img, fmt, note, chunks=chunks, name=str(src))
    with Image.open(io.BytesIO(out)) as back:
        if back.format != fmt:
            raise UsageError(f"{dst}: {fmt} cannot hold this image; name the output .png")
    write_bytes(dst, out, mode=output_file_mode())
    data.update(input=str(src), output=str(dst), mode=img.mode, exact="approx", marked=is_marked(out),
                catalog_id=row.id if row is not None else None,
                metadata={"exif": bool(img.info.get("exif")), "icc": bool(img.info.get("icc_profile")),
                          "xmp": bool(img.info.get("xmp")), "png_chunks": len(chunks or [])})


def _decode_lossless(src: Path, dst: Path, fmt: str, blob: bytes, as_json: bool) -> None:
    """The original back from a lossless file (checked against the record it carries): its own
    bytes when DST asks for its own format, else its pixels in DST's format."""
    from ...codecs.lossless import format as lossless  # heavy: the JPEG XL container (lossless.format, ~5 ms), not loaded by archiver --help
    from ...storage.atomic import write_bytes  # heavy: storage.atomic (~9 ms), not loaded by archiver --help
    from ...codecs.diffusion.files import output_file_mode  # heavy: torch (codecs.diffusion), not loaded by archiver --help

    back = lossless.restore(blob)  # ArchiverError (exit 1) on any damage
    with Image.open(io.BytesIO(back)) as im:
        orig_fmt, size, mode = im.format, im.size, im.mode
        if orig_fmt == fmt:
            out = back
        else:
            buf = io.BytesIO()
            keep = {k: v for k, v in im.info.items() if k in ("icc_profile", "exif") and v}
            try:
                im.save(buf, fmt, **keep)
            except (OSError, ValueError, KeyError):
                buf = io.BytesIO()
                im.convert("RGBA" if "A" in im.mode else "RGB").save(buf, fmt, **keep)
            out = buf.getvalue()
    write_bytes(dst, out, mode=output_file_mode())
    kind = lossless.kind_of(blob) or "jpeg"
    data = {"input": str(src), "output": str(dst), "kind": f"lossless-{kind}", "original_format": orig_fmt,
            "width": size[0], "height": size[1], "mode": mode, "exact": orig_fmt == fmt}
    emit(data, as_json, lambda x: (f"{src} -> {dst}: lossless ({x['original_format']}, {x['width']}x{x['height']} "
                                   f"{x['mode']}){'' if x['exact'] else ', converted to ' + fmt}"))
