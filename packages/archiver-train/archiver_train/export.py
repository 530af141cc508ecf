"""Assembles ``tiny.safetensors`` + ``tiny.json`` from the best weights of each stage so far."""

from __future__ import annotations

import json
from pathlib import Path

from archiver.codecs.diffusion.backbones.tiny import CONFIG_FILE, SCHEDULER_CONFIG, UNET_CONFIG, WEIGHTS_FILE
from .common import read_safetensors, save_safetensors


#: kept in float32: GDN's reparametrised beta/gamma sit near their tiny pedestal, where float16
#: has no precision; the hyper-latent bottleneck's quantiles set its rounding medians; the
#: Gaussian's scale table and bounds are constants of the bitstream
_KEEP_FLOAT32 = ("beta", "gamma", "entropy_bottleneck.", "scale_table", "scale_bound", ".bound")


def _half(w: dict) -> dict:
    """Float16 storage halves the shipped size; weights are cast back to float32 on load (the
    encoder and the decoder both use the same rounded weights, so a file decodes exactly)."""
    return {k: v.half() if v.is_floating_point() and not any(m in k for m in _KEEP_FLOAT32) else v
            for k, v in w.items()}


def assemble(out: Path) -> Path | None:
    out = Path(out)
    ae = out / "ae_best.safetensors"
    if not ae.exists():
        return None
    tensors, meta_all = {}, {}
    w, meta = read_safetensors(ae)
    rd = meta["vae_config"].get("kind") == "rd"
    # the decoder fine-tuned on the decode path (stage "codec", or "realism" then "fidelity" for
    # release 3; the encoder is the same): the last stage's wins
    for tuned_ae in (out / "ae_codec_best.safetensors", out / "ae_realism_best.safetensors",
                     out / "ae_fidelity_best.safetensors"):
        if tuned_ae.exists():
            w, tuned_meta = read_safetensors(tuned_ae)
            meta = dict(meta, vae_config=tuned_meta.get("vae_config", meta["vae_config"]))
    tensors.update({f"vae.{k}": v for k, v in _half(w).items()})
    # release 3 stores its (much larger) entropy model in float16 too, bottleneck excepted
    storage = {"vae": "float16", "unet": "float16", "entropy": "float16" if rd else "float32"}
    cfg = {"format": "archiver-tiny", "version": 1, "storage_dtype": storage, "vae": meta["vae_config"], "scheduler": SCHEDULER_CONFIG}
    meta_all["ae"] = {k: v for k, v in meta.items() if k != "vae_config"}
    # the denoiser fine-tuned on the codec's decode path (stage "codec" or "realism") replaces stage 2's
    for stage, name in (("denoiser", "unet_best.safetensors"), ("codec", "unet_codec_best.safetensors"),
                        ("realism", "unet_realism_best.safetensors"), ("fidelity", "unet_fidelity_best.safetensors")):
        if (out / name).exists():
            w, meta = read_safetensors(out / name)
            tensors.update({f"unet.{k}": v for k, v in _half(w).items()})
            cfg["unet"] = meta.get("unet_config", UNET_CONFIG)
            meta_all[stage] = {k: v for k, v in meta.items() if k != "unet_config"}
    st = out / "latent_stats.safetensors"
    if st.exists():
        w, meta = read_safetensors(st)
        tensors["channel_steps"] = w["channel_steps"]
        cfg["latent_stats"] = meta.get("stats", {})
        # the backbone scales latents by the VAE config's factor: unit variance for the diffusion
        cfg["vae"] = dict(cfg["vae"], scaling_factor=float(cfg["latent_stats"]["scaling_factor"]))
    en = out / "entropy_best.safetensors"
    if en.exists():
        w, meta = read_safetensors(en)
        tensors.update({f"entropy.{k}": v for k, v in (_half(w) if rd else w).items()})
        cfg["entropy"] = meta.get("entropy_config")
        meta_all["entropy"] = {k: v for k, v in meta.items() if k != "entropy_config"}
    cal = out / "calibration.json"
    tuned3 = "fidelity" if "fidelity" in meta_all else "realism"
    if tuned3 in meta_all:  # release 3: its timestep rule, sampler noise and trained grid
        r = meta_all[tuned3]
        cfg["codec"] = {"t_scale": float(r["t_scale"]), "eta": float(r["eta"]), "quant": "trained"}
    elif "codec" in meta_all:  # fine-tuned for one timestep rule: that one
        cfg["codec"] = {"t_scale": float(meta_all["codec"]["t_scale"])}
    elif (out / "unpacked_from.json").exists():  # a shipped release's decoder and denoiser: its decode rule
        cfg["codec"] = json.loads((out / "unpacked_from.json").read_text())["codec"]
    elif rd:  # no realism stage yet: pure SNR matching, deterministic DDIM, the trained grid
        cfg["codec"] = {"t_scale": 1.0, "quant": "trained"}
    elif cal.exists():  # written by archiver_train.calibrate
        c = json.loads(cal.read_text())
        cfg["codec"] = {"t_scale": float(c["t_scale"])}
        meta_all["calibration"] = {k: v for k, v in c.items() if k != "t_scale"}
    cfg["training"] = meta_all
    (out / CONFIG_FILE).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    save_safetensors(out / WEIGHTS_FILE, tensors, {"config": cfg})
    return out / WEIGHTS_FILE


def unpack(weights_dir: Path, out: Path) -> list[str]:
    """The stage files of an assembled model (``tiny.safetensors`` + ``tiny.json``), so that a
    later stage can fine-tune a shipped release when only the assembled model exists (a GPU run
    brings back the model, not its checkpoints). Files already in ``out`` are kept. Returns the
    names written.

    The autoencoder file holds the shipped encoder *and* decoder, the denoiser file the shipped
    denoiser; weights stored in float16 come back as float32 (exactly: a float16 value is a
    float32 value, and ``assemble`` rounds them back to the same float16)."""
    weights_dir, out = Path(weights_dir), Path(out)
    cfg_path, w_path = weights_dir / "tiny.json", weights_dir / WEIGHTS_FILE
    if not cfg_path.is_file() or not w_path.is_file():
        from archiver.errors import UsageError

        raise UsageError(f"{weights_dir}: no assembled model here (tiny.json + {WEIGHTS_FILE})")
    cfg = json.loads(cfg_path.read_text())
    state, _ = read_safetensors(w_path)
    part = {p: {k[len(p) + 1:]: (v.float() if v.is_floating_point() else v)
                for k, v in state.items() if k.startswith(p + ".")} for p in ("vae", "unet", "entropy")}
    training = cfg.get("training", {})
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def put(name, tensors, meta):
        if not (out / name).exists():
            save_safetensors(out / name, tensors, meta)
            written.append(name)

    from_release = {"unpacked_from": str(weights_dir)}
    vae_cfg = {k: v for k, v in cfg["vae"].items() if k != "scaling_factor"}
    put("ae_best.safetensors", part["vae"],
        {**training.get("ae", {}), **from_release, "format": "archiver-tiny-vae", "vae_config": vae_cfg})
    from .latents import file_sha256

    ae_sha = file_sha256(out / "ae_best.safetensors")
    if part["entropy"]:
        put("entropy_best.safetensors", part["entropy"],
            {**training.get("entropy", {}), **from_release, "format": "archiver-tiny-entropy",
             "entropy_config": cfg["entropy"], "ae_sha256": ae_sha})
    # the denoiser the release decodes with, as the stage-2 denoiser later stages start from
    put("unet_best.safetensors", part["unet"],
        {**training.get("denoiser", {}), **from_release, "format": "archiver-tiny-unet",
         "unet_config": cfg["unet"], "ae_sha256": ae_sha})
    if "channel_steps" in state and cfg.get("latent_stats"):
        stats = dict(cfg["latent_stats"], ae_sha256=ae_sha)
        put("latent_stats.safetensors", {"channel_steps": state["channel_steps"].float()}, {"stats": stats})
    (out / "unpacked_from.json").write_text(json.dumps({"weights_dir": str(weights_dir), "codec": cfg.get("codec", {}),
                                                        "training": training}, indent=2, sort_keys=True) + "\n")
    return written
