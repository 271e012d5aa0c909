"""Where a transformers teacher's weights come from, and the checks made before any byte is loaded.

`teacher.source` is input from outside the project: a hub id, a `save_pretrained` directory, a
`.safetensors` file or a `.pt`/`.pth` state dict (each file with its `config.json` beside it). Loading
one must not run code (a pickle can), must not read files the user did not mean to expose (a `..` path
or a symlink that escapes the model folders), and must not turn a typo, a Git LFS pointer or a truncated
download into a traceback. Every refusal is an `EdgekdError` that names the file, says what is wrong
and how to fix it.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from edgekd.errors import EdgekdError

MIN_WEIGHTS_BYTES = 1024  # below this a "checkpoint" is a Git LFS pointer or an interrupted download
MAX_WEIGHTS_BYTES = 20 * 10**9  # far above any speech encoder a keyword spotter distils from
FILE_KINDS = {".safetensors": "safetensors", ".pt": "pt", ".pth": "pt"}
DIR_WEIGHT_SUFFIXES = (".safetensors", ".bin")  # what from_pretrained reads from a directory
# owner/name as the hub spells it; anything else that does not exist is a mistyped local path
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's spelling of a true environment flag

SourceKind = Literal["hub", "dir", "safetensors", "pt"]


@dataclass(frozen=True)
class WeightSource:
    """A checked `teacher.source`: how to load it, and from where (resolved, for local sources)."""

    source: str  # as the user wrote it, for messages
    kind: SourceKind
    location: str  # the hub id, or the resolved directory / file
    config_dir: str  # what holds config.json: the hub id, the directory or the file's folder


def allowed_roots(extra: Iterable[str] = ()) -> list[Path]:
    """Folders local weights may live in: cwd, $EDGEKD_MODELS, the Hugging Face cache and `extra`."""
    hf_home = os.environ.get("HF_HOME") or "~/.cache/huggingface"
    candidates = [
        os.getcwd(),
        *os.environ.get("EDGEKD_MODELS", "").split(os.pathsep),
        hf_home,
        os.environ.get("HF_HUB_CACHE", ""),
        *extra,
    ]
    roots: list[Path] = []
    for c in candidates:
        root = Path(c).expanduser().resolve() if c else None
        if root is not None and root not in roots:
            roots.append(root)
    return roots


def hub_offline() -> bool:
    """Whether huggingface_hub will refuse network access (the env flag, or its import-time constant)."""
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE:
        return True
    import huggingface_hub.constants

    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def hub_hint(source: str) -> str:
    """How to supply a hub model's weights on a machine that cannot download them."""
    return (
        "Supply the weights locally: download them where there is network (`hf download "
        f"{source} --local-dir <dir>`), copy that directory here and set teacher.source to the "
        "directory or to its model.safetensors (inside the working directory, $EDGEKD_MODELS or "
        "teacher.allowed_roots)"
    )


def resolve_source(source: str, extra_roots: Iterable[str] = ()) -> WeightSource:
    """Classify and check `teacher.source` without loading weights; raise `EdgekdError` on any problem."""
    path = Path(source).expanduser()
    if (
        not path.exists()
        and _HUB_ID.fullmatch(source)
        and ".." not in source
        and path.suffix.lower() not in FILE_KINDS
    ):
        return _hub_source(source, extra_roots)
    roots = allowed_roots(extra_roots)
    resolved = _inside_roots(source, path, roots)
    kind = FILE_KINDS.get(path.suffix.lower())
    if kind is not None:
        if not resolved.exists():
            raise EdgekdError(f"teacher.source {source!r}: file not found ({resolved})")
        if not resolved.is_file():
            raise EdgekdError(f"teacher.source {source!r}: {resolved} is not a file ({path.suffix} expected)")
        _check_size(source, resolved)
        config = path.absolute().parent / "config.json"
        if not _inside_roots(source, config, roots).is_file():
            raise EdgekdError(
                f"teacher.source {source!r}: a {path.suffix} checkpoint needs its config.json in the same "
                f"folder ({config} is missing); copy the config.json that save_pretrained wrote with it"
            )
        return WeightSource(source, kind, str(resolved), str(config.parent))
    if not resolved.exists():
        raise EdgekdError(
            f"teacher.source {source!r}: directory not found ({resolved}), and it is not a hub id "
            "(owner/name)"
        )
    if not resolved.is_dir():
        raise EdgekdError(
            f"teacher.source {source!r}: {resolved} is not usable; expected a hub id, a save_pretrained "
            "directory, a .safetensors file or a .pt/.pth state dict"
        )
    _check_directory(source, resolved, roots)
    return WeightSource(source, "dir", str(resolved), str(resolved))


def read_config_dict(src: WeightSource) -> dict[str, Any]:
    """The checkpoint's config.json as a dict (downloaded for a hub id), with clear errors."""
    if src.kind == "hub":
        from transformers import PretrainedConfig

        try:
            return PretrainedConfig.get_config_dict(src.location)[0]
        except OSError as exc:
            raise EdgekdError(
                f"teacher.source {src.source!r}: could not fetch its config.json from the hub "
                f"({str(exc).splitlines()[0]}). {hub_hint(src.source)}"
            ) from None
    path = Path(src.config_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgekdError(
            f"teacher.source {src.source!r}: {path} is not a readable JSON config ({exc}); use the "
            "config.json that save_pretrained wrote with the weights"
        ) from None
    if not isinstance(config, dict):
        raise EdgekdError(f"teacher.source {src.source!r}: {path} holds no JSON object, not a model config")
    return config


def load_state_dict(src: WeightSource) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` or `.pt`/`.pth` source; a pickle that needs code is refused unrun."""
    path = Path(src.location)
    if src.kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise EdgekdError(
                f"teacher.source {src.source!r}: {path} is not a valid safetensors file "
                f"({str(exc).splitlines()[0]}); it is probably truncated or corrupt: download it again"
            ) from None
    try:
        # weights_only: the unpickler only rebuilds tensors and containers and refuses any other global,
        # so a crafted checkpoint cannot execute code here.
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        needs = re.search(r"GLOBAL (\S+)", str(exc))
        if needs is not None:
            why = f"it needs the Python object {needs.group(1)}"
        else:  # an opcode the safe unpickler does not take: corrupt bytes, or a pickle not from torch.save
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            stop = next(
                (line for line in lines if line.startswith("Unsupported")), lines[-1] if lines else ""
            )
            why = f"the safe unpickler stopped at: {stop}; the file is corrupt or not written by torch.save"
        raise _not_a_state_dict(src, path, why) from None
    except Exception as exc:  # noqa: BLE001 -- random bytes make the unpickler fail in any way (IndexError, ...)
        raise _corrupt_pt(src, path, exc) from None
    if not isinstance(obj, Mapping) or not obj:
        raise _not_a_state_dict(src, path, f"it holds a {type(obj).__name__}, not a name -> tensor mapping")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise _not_a_state_dict(src, path, f"entries such as {bad[:3]} are not tensors")
    return dict(obj)


def _hub_source(source: str, extra_roots: Iterable[str]) -> WeightSource:
    """A hub id: its local snapshot when offline (fast refusal if there is none), else a download."""
    if not hub_offline():
        return WeightSource(source, "hub", source, source)
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(source, "config.json")
    except ValueError as exc:  # huggingface_hub's HFValidationError: e.g. "--" inside the name
        raise EdgekdError(
            f"teacher.source {source!r} is neither an existing local path nor a valid hub id ({exc})"
        ) from None
    if not isinstance(cached, str):  # None (not cached) or a sentinel for "known not to exist"
        raise EdgekdError(
            f"teacher.source {source!r} is a Hugging Face hub id, but this machine is offline "
            f"(HF_HUB_OFFLINE=1) and the model is not in the local cache. {hub_hint(source)}"
        )
    return resolve_source(str(Path(cached).parent), extra_roots)


def _inside_roots(source: str, path: Path, roots: list[Path]) -> Path:
    """`path` resolved (symlinks followed, `..` collapsed); refused unless it lies inside a root."""
    resolved = path.resolve()
    if any(resolved.is_relative_to(r) for r in roots):
        return resolved
    folder = resolved if resolved.is_dir() else resolved.parent
    raise EdgekdError(
        f"teacher.source {source!r}: {path} resolves to {resolved}, which is outside the folders teacher "
        f"weights may be loaded from: {', '.join(map(str, roots))}. If you trust that location, allow it: "
        f"add its folder to teacher.allowed_roots (e.g. --set 'teacher.allowed_roots=[\"{folder}\"]') or "
        f"to the EDGEKD_MODELS environment variable ({os.pathsep!r}-separated folders)"
    )


def _check_size(source: str, path: Path) -> None:
    size = path.stat().st_size
    if size == 0:
        raise EdgekdError(
            f"teacher.source {source!r}: {path} is empty (0 bytes); the download or copy was interrupted: "
            "fetch it again"
        )
    if size < MIN_WEIGHTS_BYTES:
        raise EdgekdError(
            f"teacher.source {source!r}: {path} is only {size} bytes, too small to hold model weights (a Git "
            "LFS pointer or an interrupted download?); fetch the real file (`git lfs pull` or `hf download`)"
        )
    if size > MAX_WEIGHTS_BYTES:
        raise EdgekdError(
            f"teacher.source {source!r}: {path} is {size / 1e9:.1f} GB, over the "
            f"{MAX_WEIGHTS_BYTES / 1e9:.0f} GB limit for a teacher checkpoint; speech encoders worth "
            "distilling from are far smaller: check that this is the right file"
        )


def _check_directory(source: str, folder: Path, roots: list[Path]) -> None:
    """A save_pretrained directory: its config.json and every weights file checked like a single file."""
    if not _inside_roots(source, folder / "config.json", roots).is_file():
        raise EdgekdError(
            f"teacher.source {source!r}: {folder} has no config.json, so it is not a save_pretrained "
            "directory; point teacher.source at the folder that save_pretrained (or `hf download`) wrote"
        )
    weights = sorted(p for p in folder.iterdir() if p.suffix in DIR_WEIGHT_SUFFIXES)
    if not weights:
        raise EdgekdError(
            f"teacher.source {source!r}: {folder} holds no weights (model.safetensors or pytorch_model.bin)"
        )
    for w in weights:
        resolved = _inside_roots(source, w, roots)
        if not resolved.is_file():
            raise EdgekdError(f"teacher.source {source!r}: {w} is not a readable file")
        _check_size(source, resolved)


def _corrupt_pt(src: WeightSource, path: Path, exc: BaseException) -> EdgekdError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
    return EdgekdError(
        f"teacher.source {src.source!r}: {path} could not be read as a PyTorch checkpoint ({first}); it is "
        "probably truncated or corrupt: save or download it again"
    )


def _not_a_state_dict(src: WeightSource, path: Path, why: str) -> EdgekdError:
    return EdgekdError(
        f"teacher.source {src.source!r}: {path} is not a plain tensor state dict ({why}). Such a pickle can "
        "run arbitrary code when loaded, so edgekd reads .pt/.pth files with torch.load(weights_only=True) "
        "only. If you trust the file, convert it once to safetensors (tensors only) and point "
        'teacher.source at the result, with config.json beside it: python -c "import torch; from '
        f"safetensors.torch import save_file; obj = torch.load('{path}', weights_only=False); "
        "sd = obj.state_dict() if hasattr(obj, 'state_dict') else obj; "
        "save_file({k: v.contiguous() for k, v in sd.items()}, 'model.safetensors')\""
    )
