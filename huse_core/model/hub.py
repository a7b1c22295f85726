"""Pretrained encoders from the model hubs (open_clip, timm, sentence-transformers): names, weights, loading."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import file_sha

log = logging.getLogger(__name__)

INSTALL = "pip install -r requirements-pretrained.txt"
IMAGE_LIBRARIES, TEXT_LIBRARIES = ("openclip", "timm"), ("openclip", "st")
PACKAGES = {"openclip": "open_clip", "timm": "timm", "st": "sentence_transformers"}
# A folder given as weights: the file each library saves its weights in, preferred first.
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.safetensors",
                "pytorch_model.bin", "model.pth", "model.pt")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
_LOCK = threading.RLock()  # one load per encoder, even when app sessions ask at once
_LOADED: dict[tuple, object] = {}  # (library, model, weights file) -> the library's model, loaded once per process
_SHAS: dict[tuple, str] = {}  # (path, size, mtime) -> fingerprint


class EncoderMissing(FileNotFoundError):
    """An encoder's package or weights are not on this machine; the one-line message says how to provide them.

    A FileNotFoundError, so the CLI prints it as one line and load_run passes it on unchanged."""


@dataclass(frozen=True)
class EncoderSpec:
    """One hub encoder as named on the command line: `openclip:MODEL[/TAG]`, `timm:NAME` or `st:NAME`."""

    library: str  # openclip | timm | st
    model: str  # ViT-B-32 | convnext_tiny.fb_in22k | all-mpnet-base-v2
    tag: str = ""  # open_clip's pretrained tag (laion2b_s34b_b79k)
    weights: str = ""  # a local file or folder (--image-weights / --text-weights); "" = the hub cache
    role: str = "image"  # image | text: which flag the messages name

    @property
    def name(self) -> str:
        return f"{self.library}:{self.model}" + (f"/{self.tag}" if self.tag else "")

    @property
    def flag(self) -> str:
        return f"--{self.role}-weights"


def is_hub(backbone: str) -> bool:
    """True for backbone names this module loads (`openclip:`, `timm:`, `st:`)."""
    return backbone.partition(":")[0] in PACKAGES and ":" in backbone


def parse(backbone: str, weights: str = "", role: str = "image") -> EncoderSpec:
    """The EncoderSpec a backbone name stands for; ValueError names the accepted forms."""
    library, _, rest = backbone.partition(":")
    allowed = IMAGE_LIBRARIES if role == "image" else TEXT_LIBRARIES
    model, _, tag = rest.partition("/") if library == "openclip" else (rest, "", "")
    if library not in allowed or not model:
        forms = {"openclip": "openclip:MODEL[/TAG]", "timm": "timm:NAME", "st": "st:NAME"}
        raise ValueError(f"unknown {role} backbone {backbone!r}: hub encoders are named "
                         f"{' or '.join(forms[lib] for lib in allowed)}")
    return EncoderSpec(library, model, tag, weights, role)


def library(name: str):
    """The optional package (open_clip, timm or sentence_transformers), imported through huse_core.compat."""
    from ..compat import import_torchvision

    import_torchvision()  # all three import torchvision; this keeps a build with unloadable C++ ops importable
    try:
        return __import__(PACKAGES[name])
    except ImportError as err:
        raise EncoderMissing(f"{name}: encoders need the optional package {PACKAGES[name]} ({err.name} is not "
                             f"installed): run `{INSTALL}`") from None


def offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, now or when huggingface_hub was imported."""
    flags = [os.environ.get(v, "").upper() for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")]
    hub = sys.modules.get("huggingface_hub.constants")
    return any(f in ("1", "ON", "YES", "TRUE") for f in flags) or bool(getattr(hub, "HF_HUB_OFFLINE", False))


def fetch_command(spec: EncoderSpec, repo: str = "", filename: str = "") -> str:
    """The library's own command that puts the weights into the hub cache on a connected machine."""
    if repo:
        return f"hf download {repo}" + (f" {filename}" if filename else "")
    if spec.library == "openclip":
        return f"python -c \"import open_clip; open_clip.create_model('{spec.model}', pretrained='{spec.tag}')\""
    return f"python -c \"import timm; timm.create_model('{spec.model}', pretrained=True)\""


def missing(spec: EncoderSpec, repo: str = "", filename: str = "", why: str = "") -> EncoderMissing:
    """The one-line message for weights that are neither cached nor given (the same in train and load_run)."""
    state = "HF_HUB_OFFLINE is set" if offline() else (why or "not in the hub cache")
    return EncoderMissing(
        f"no weights for {spec.name} on this machine ({state}): download them on a connected machine with "
        f"`{fetch_command(spec, repo, filename)}` and copy its hub cache (~/.cache/huggingface) here, "
        f"or pass a weights file or folder with {spec.flag}")


def local_weights(spec: EncoderSpec) -> Path:
    """The weights file (open_clip, timm) or folder (sentence-transformers) the user gave."""
    path = Path(spec.weights).expanduser()
    if spec.library == "st" and path.is_dir():
        return path
    if path.is_dir():
        found = [path / n for n in WEIGHT_NAMES if (path / n).is_file()]
        found += sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
        if found:
            return found[0]
    elif path.is_file():
        return path
    raise EncoderMissing(f"{spec.flag} {spec.weights}: no such {'folder' if spec.library == 'st' else 'file'}"
                         f"{' with a .safetensors/.bin/.pth file' if path.is_dir() else ''}; give the weights of "
                         f"{spec.name}, or leave {spec.flag} out to use the hub cache")


def hub_file(spec: EncoderSpec, repo: str, filenames: list[str]) -> Path:
    """A file of a Hugging Face repo: from the hub cache, else downloaded (only when not offline)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    for filename in filenames:
        hit = try_to_load_from_cache(repo, filename)
        if isinstance(hit, str):
            return Path(hit)
    if offline():
        raise missing(spec, repo, filenames[-1])
    log.info(f"downloading {spec.name} weights from the Hugging Face hub ({repo}) into its cache")
    errors = []
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo, filename))
        except Exception as err:  # noqa: BLE001 - a missing variant, no network, a gated repo: one message
            errors.append(type(err).__name__)
    raise missing(spec, repo, filenames[-1], why=f"download failed: {', '.join(errors)}")


def url_file(spec: EncoderSpec, url: str, folder: Path) -> Path:
    """A weights file from a plain URL, cached in `folder` as the library does; downloaded only when not offline."""
    cached = folder / os.path.basename(url)
    if cached.is_file():
        return cached
    if offline():
        raise missing(spec)
    import torch

    log.info(f"downloading {spec.name} weights from {url}")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(cached))
    except Exception as err:  # noqa: BLE001
        raise missing(spec, why=f"download failed: {type(err).__name__}") from None
    return cached


def weights_path(spec: EncoderSpec) -> Path:
    """Where `spec`'s weights are on this machine: the file (or st folder) given, else the hub cache; an
    uncached file is downloaded unless offline. Raises EncoderMissing with the one-line message."""
    lib = library(spec.library)
    if spec.weights:
        return local_weights(spec)
    if spec.library == "openclip":
        if not spec.tag:
            tags = lib.list_pretrained_tags_by_model(spec.model)
            raise ValueError(f"{spec.name} names no weights: add a tag ({spec.name}/{tags[0] if tags else 'TAG'}) "
                             f"or pass {spec.flag} FILE")
        cfg = lib.get_pretrained_cfg(spec.model, spec.tag)
        if not cfg:
            raise ValueError(f"open_clip has no weights {spec.tag!r} for {spec.model}; its tags: "
                             f"{', '.join(lib.list_pretrained_tags_by_model(spec.model)) or 'none'}")
        if cfg.get("hf_hub"):  # "org/repo/" (open_clip's default file) or "org/repo/file"
            repo, filename = os.path.split(cfg["hf_hub"])
            filename = filename or "open_clip_pytorch_model.bin"
            safe = ("open_clip_model.safetensors" if filename == "open_clip_pytorch_model.bin"
                    else str(Path(filename).with_suffix(".safetensors")))
            return hub_file(spec, repo, [safe, filename] if safe != filename else [filename])
        return url_file(spec, cfg["url"], Path("~/.cache/clip").expanduser())
    if spec.library == "timm":
        try:
            cfg = lib.models.get_pretrained_cfg(spec.model, allow_unregistered=False)
        except RuntimeError as err:
            raise ValueError(f"{spec.name}: {err} Pass {spec.flag} FILE for weights timm does not list.") from None
        if cfg.hf_hub_id:
            return hub_file(spec, cfg.hf_hub_id, [cfg.hf_hub_filename] if cfg.hf_hub_filename
                            else ["model.safetensors", "pytorch_model.bin"])
        import torch

        url = cfg.url[0] if isinstance(cfg.url, (list, tuple)) else cfg.url
        return url_file(spec, url, Path(torch.hub.get_dir()) / "checkpoints")
    return st_folder(spec)


def st_folder(spec: EncoderSpec) -> Path:
    """A sentence-transformers model's folder in the hub cache (downloaded when not offline)."""
    from huggingface_hub import snapshot_download

    repo = spec.model if "/" in spec.model else f"sentence-transformers/{spec.model}"
    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError and its kin)
        if offline():
            raise missing(spec, repo) from None
    log.info(f"downloading {spec.name} from the Hugging Face hub ({repo}) into its cache")
    try:  # sentence-transformers fetches just the files the model needs; then the cache has its folder
        library("st").SentenceTransformer(repo, device="cpu")
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception as err:  # noqa: BLE001
        raise missing(spec, repo, why=f"download failed: {type(err).__name__}") from None


def check_weights(cfg) -> None:
    """Fail now, before any photo is decoded, when a hub encoder's package or weights (ModelConfig `cfg`) are not
    on this machine (the one-line EncoderMissing); an uncached file is downloaded here unless offline."""
    for backbone, weights, role in ((cfg.backbone, cfg.image_weights, "image"),
                                    (cfg.text_backbone, cfg.text_weights, "text")):
        if is_hub(backbone):
            weights_path(parse(backbone, weights, role))


def fingerprint(path: Path) -> str:
    """16 hex digits of the weights' SHA-256. Hub cache files are named by it (blobs/<sha256>): no read needed.
    A folder: over the names and fingerprints of its weight files."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.suffix in WEIGHT_SUFFIXES):
            h.update(f"{f.relative_to(path)}:{fingerprint(f)}\n".encode())
        return h.hexdigest()[:16]
    real = path.resolve()
    if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name):
        return real.name[:16]
    stat = real.stat()
    key = (str(real), stat.st_size, stat.st_mtime_ns)
    if key not in _SHAS:
        _SHAS[key] = file_sha(real)
    return _SHAS[key]


def load(spec: EncoderSpec):
    """(the library's model, its record) for `spec`, loaded once per process; frozen and in eval mode.

    open_clip gives the whole CLIP model (its image and text towers share one load); timm the network without
    its classifier; sentence-transformers its SentenceTransformer. The record (name, library version, weights
    file, fingerprint) goes into model.pt, so a run refuses other weights later."""
    path = weights_path(spec)
    sha = fingerprint(path)
    key = (spec.library, spec.model, spec.tag, str(path), sha)  # new weights at the same path load anew
    with _LOCK:
        if key not in _LOADED:
            lib = library(spec.library)
            if spec.library == "openclip":
                tag_cfg = lib.get_pretrained_cfg(spec.model, spec.tag) if spec.tag else {}
                keep = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
                net = lib.create_model(spec.model, pretrained=str(path), force_preprocess_cfg=keep,
                                       **({"force_quick_gelu": True} if tag_cfg.get("quick_gelu") else {}))
            elif spec.library == "timm":
                net = lib.create_model(spec.model, pretrained=True, num_classes=0,
                                       pretrained_cfg_overlay={"file": str(path)})
            else:
                net = lib.SentenceTransformer(str(path), device="cpu")
            net.requires_grad_(False)
            _LOADED[key] = net.eval()
        record = {"encoder": spec.name, "library": f"{PACKAGES[spec.library]} {lib_version(spec.library)}",
                  "weights": str(path), "sha256": sha}
        return _LOADED[key], record


def lib_version(name: str) -> str:
    return str(getattr(library(name), "__version__", "?"))
