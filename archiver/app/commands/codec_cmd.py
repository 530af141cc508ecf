"""``archiver encode`` / ``archiver decode``: the codec on single files."""

from __future__ import annotations

import io
from pathlib import Path

import click
from PIL import Image

from ...codecs import codec_of_data
from ...errors import SafetyError, UsageError
from ...imageio import load_image
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
              help="DDIM steps (default: what the encoder wrote; 0 = plain autoencoder decode).")
@click.option("--backbone", "backbone_name", type=click.Choice(["tiny", "diffusers"]), default=None,
              help="Backbone (default: the one the file names).")
@click.option("--model", type=str, default=None, help="diffusers model directory or cached repo id.")
@click.option("--device", type=str, default=None, help="cpu, cuda or auto.")
@click.option("--adapter", type=str, default=None, help=_ADAPTER_HELP)
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_core
def decode(src, dst, steps, backbone_name, model, device, adapter, force, as_json, core):
    """Restore SRC — a .dlc, or a lossless .jxl/.axl written by archive — to the image DST (format
    from its suffix, PNG by default). No catalog is needed."""
    from ...codecs.diffusion.container import read_header  # heavy: torch (codecs.diffusion), not loaded by archiver --help
    from ...codecs.diffusion.files import decode_file, format_for  # heavy: torch (codecs.diffusion), not loaded by archiver --help

    fmt = format_for(dst)  # refuse an unwritable suffix before any work
    _check_output(dst)
    if (dst.exists() or dst.is_symlink()) and not force:
        raise SafetyError(f"{dst} exists; use --force to overwrite")  # as restore does
    if not src.is_file():
        raise UsageError(f"{src}: no such file")
    blob = src.read_bytes()
    if codec_of_data(blob) == "lossless":
        return _decode_lossless(src, dst, fmt, blob, as_json)
    header = read_header(blob)  # damaged files are refused before loading a model
    name = backbone_name or (None if model is None else "diffusers") or header.backbone_id
    backbone = _backbone(core.cfg, name, model, device, adapter)
    d = decode_file(src, dst, backbone=backbone, steps=steps)
    h = d.header
    data = {"input": str(src), "output": str(dst), "width": h.width, "height": h.height,
            "mode": d.image.mode, "original_mode": h.mode, "t": h.t, "steps": d.steps,
            "backbone": h.backbone_id, "weights_sha256": h.weights_sha256, "adapter_sha256": h.adapter_sha256,
            "bpp": src.stat().st_size * 8 / h.pixels, "seconds": d.seconds,
            "metadata": {"exif": bool(d.metadata.exif), "icc": bool(d.metadata.icc_profile), "xmp": bool(d.metadata.xmp)}}
    emit(data, as_json, lambda x: (f"{src} -> {dst}: {x['width']}x{x['height']} {x['mode']}, t={x['t']}, "
                                   f"{x['steps']} steps, {x['seconds']:.2f} s"))


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
