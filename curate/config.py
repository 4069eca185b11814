"""Job settings: frozen dataclasses that validate themselves and are never rewritten.

A YAML job file mirrors the CLI flags one to one (`question_field: problem` is `--question-field
problem`); `RunConfig.from_flat` builds a config from such a flat mapping and `to_flat` gives it
back, which is what the run manifest records.
"""

from __future__ import annotations

import types
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from curate.errors import ConfigError
from curate.redact import refuse_url_credentials

BUNDLED_JUDGE = "bundled:tiny-judge"
DEFAULT_TEMPLATE = "difficulty/intensity_score_only"
DEFAULT_RESPONSE_TEMPLATE = "solve/step_by_step"  # what `curate solve` and `curate respond` use unless told
DEFAULT_VERIFIER_TEMPLATE = "verify/equivalence"


def described(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class DataConfig:
    source: str = described("Input: .jsonl/.parquet/.csv file, datasets save_to_disk dir, Hub id, or bundled:NAME.")
    split: str = described("Split to read from a DatasetDict or Hub dataset.", default="train")
    question_field: str = described("Input field holding the problem text.", default="question")
    id_field: str | None = described("Input field holding a unique id; rows without one get a content hash.",
                                 default=None)
    reference_field: str | None = described("Input field holding the reference answer ('answer' if present).",
                                        default=None)
    choices_field: str | None = described(
        "Input field holding the answer options ('choices' if present): a list of strings or of {label, text} "
        "objects (also key/letter/aoVal/id and content/value/option, each optionally wrapped in a one-element list "
        "as in TAL), a {label: text} object, or comma-separated columns, one per option (A,B,C,D or "
        "opa,opb,opc,opd).", default=None)
    domain_field: str | None = described("Input field holding the domain or subject ('domain' if present).",
                                     default=None)
    on_bad_rows: Literal["error", "quarantine"] = described(
        "'error' stops on bad rows, naming them; 'quarantine' writes them with reasons to quarantine.jsonl.",
        default="error")
    limit: int | None = described("Score only the first N valid items.", default=None)

    def __post_init__(self) -> None:
        check(bool(self.source), "data source is empty")
        check(self.on_bad_rows in ("error", "quarantine"),
               f"on_bad_rows must be 'error' or 'quarantine', got {self.on_bad_rows!r}")
        check(self.limit is None or self.limit > 0, f"limit must be positive, got {self.limit}")


@dataclass(frozen=True)
class SamplingConfig:
    samples: int = described("Judgments per item (sample indices 0..samples-1).", default=1)
    temperature: float = described("Sampling temperature; 0 is greedy.", default=0.0)
    top_p: float = described("Nucleus sampling mass.", default=1.0)
    max_tokens: int = described("Most tokens a judgment may generate; longer ones are stored as truncated.",
                            default=512)
    seed: int = described("Base seed; each (item, sample) draws from its own seed derived from it.", default=0)
    top_logprobs: int = described(
        "Top logprobs returned per generated token, for logprob scoring: the distribution over the scores "
        "1..5 is read where the score digit was generated (the first answer token of a score-only template, "
        "the inside of a tagged one's final <score> tag, after any </think>). With a score-only template and "
        "--max-tokens 1 a judgment costs one forward pass. 0: off.", default=0)
    constrain_score: bool = described(
        "Allow only the score tokens 1..5 as the first answer token (transformers: an allowed-token mask; vllm: "
        "allowed_token_ids; openai: structured_outputs choice, which vLLM-served endpoints honour), so that a "
        "chat model that would start with a word still gives a score; score_mass records how much probability "
        "the model gave the score tokens unconstrained. Needs a score-only template, --max-tokens 1 and "
        "--top-logprobs.", default=False)

    def __post_init__(self) -> None:
        check(self.samples >= 1, f"samples must be >= 1, got {self.samples}")
        check(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}")
        check(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        check(self.max_tokens >= 1, f"max_tokens must be >= 1, got {self.max_tokens}")
        check(0 <= self.top_logprobs <= 20, f"top_logprobs must be in 0..20, got {self.top_logprobs}")
        check(not self.constrain_score or (self.max_tokens == 1 and self.top_logprobs > 0),
               "constrain_score answers with the one constrained token and reads its distribution from the top "
               f"logprobs: set --max-tokens 1 and --top-logprobs (e.g. 20); got max_tokens={self.max_tokens}, "
               f"top_logprobs={self.top_logprobs}")
        check(self.samples == 1 or self.temperature > 0,
               f"samples={self.samples} with temperature 0 gives {self.samples} identical greedy judgments; "
               "set a temperature > 0 (e.g. --temperature 1.0) or use --samples 1")


@dataclass(frozen=True)
class EndpointConfig:
    """How to reach an OpenAI-compatible server (backend 'openai'). The API key is read from the
    environment variable named here at request time and never stored anywhere."""

    base_url: str | None = described("Server URL ending in /v1 (default: $OPENAI_BASE_URL).", default=None)
    api_key_env: str = described("Environment variable holding the API key (may be unset for local servers).",
                             default="OPENAI_API_KEY")
    endpoint: Literal["chat", "completions"] = described(
        "'chat' sends messages; 'completions' sends the prompt rendered with --tokenizer's chat template.",
        default="chat")
    tokenizer: str | None = described("Tokenizer whose chat template renders prompts for --endpoint completions.",
                                  default=None)
    max_in_flight: int = described("Most requests open at once.", default=64)
    requests_per_minute: int | None = described("Client-side request rate limit.", default=None)
    tokens_per_minute: int | None = described("Client-side token rate limit (prompt estimate + max_tokens).",
                                          default=None)
    request_timeout: float = described("Seconds before a request is abandoned and retried.", default=120.0)
    max_retries: int = described("Retries after 429, 5xx, timeouts and dropped connections; then an error row.",
                             default=5)
    use_n: bool = described("Ask for an item's samples in one request with `n`; a server that returns fewer "
                        "choices gets the rest as separate seeded requests.", default=False)

    def __post_init__(self) -> None:
        refuse_url_credentials("--base-url", self.base_url)
        check(self.endpoint in ("chat", "completions"), f"endpoint must be 'chat' or 'completions', got "
                                                          f"{self.endpoint!r}")
        check(self.endpoint == "chat" or self.tokenizer is not None,
               "--endpoint completions needs --tokenizer (its chat template renders the prompt)")
        check(self.max_in_flight >= 1, f"max_in_flight must be >= 1, got {self.max_in_flight}")
        check(self.request_timeout > 0, f"request_timeout must be > 0, got {self.request_timeout}")
        check(self.max_retries >= 0, f"max_retries must be >= 0, got {self.max_retries}")
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            check(value is None or value > 0, f"{name} must be positive, got {value}")


@dataclass(frozen=True)
class JudgeVerifierConfig:
    """The judge model of `--verify model` (curate.verify.model). It shares the run's device, dtype, batch and
    endpoint settings (rate limits, retries, API key variable); what differs is set here."""

    verify_model: str | None = described(
        "Judge model for --verify model: local path, Hub id, bundled:NAME, or the served model's name.", default=None)
    verify_backend: str | None = described("Backend of the --verify model judge (default: the run's --backend).",
                                       default=None)
    verify_base_url: str | None = described(
        "Server URL of the --verify model judge, for an openai backend (default: the run's --base-url).",
        default=None)
    verify_template: str = described("Verifier template (kind: verifier) the --verify model judge is asked through.",
                                     default=DEFAULT_VERIFIER_TEMPLATE)
    verify_max_tokens: int = described("Most tokens the --verify model judge's answer (yes or no) may take.",
                                       default=16)

    def __post_init__(self) -> None:
        refuse_url_credentials("--verify-base-url", self.verify_base_url)
        check(self.verify_max_tokens >= 1, f"verify_max_tokens must be >= 1, got {self.verify_max_tokens}")


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig
    out: str = described("Run directory: manifest, judgments store, aggregates.")
    template: str = described(
        "Template name or path to a .jinja file: a judge template for score (default "
        f"{DEFAULT_TEMPLATE}), a response template for solve and respond (default {DEFAULT_RESPONSE_TEMPLATE}).",
        default=DEFAULT_TEMPLATE)
    template_dir: str | None = described("Extra directory searched for templates before the bundled ones.",
                                     default=None)
    model: str = described("Model: local path, Hub id or bundled:NAME; score defaults to the bundled tiny judge, "
                           "solve and respond need one.", default=BUNDLED_JUDGE)
    backend: str = described("Backend name (see curate.backends.BACKENDS).", default="transformers")
    verify: str | None = described(
        "Verifier that decides each response of `curate solve` and `curate respond` against the item's reference: "
        "math (math-verify on the last \\boxed{}), gsm8k (#### N), numeric, choice (an option's label or text) or "
        "exact, or model: a judge model (--verify-model) decides equivalence (see curate.verify).", default=None)
    verifier: JudgeVerifierConfig = field(default_factory=JudgeVerifierConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    engine_args: dict[str, Any] = described(
        "Extra vllm.LLM engine arguments, e.g. {tensor_parallel_size: 2, data_parallel_size: 4, "
        "gpu_memory_utilization: 0.85}.", default_factory=dict)
    batch_size: int | None = described(
        "Most rows per batch in the transformers backend; unset (the default), the token budget (--max-batch-tokens) "
        "alone sizes each batch.", default=None)
    max_batch_tokens: int = described(
        "Most tokens per batch in the transformers backend: rows x (longest prompt + longest generation allowed), "
        "padding included; a prompt over it runs alone. 16,384 fits beside an 8B bf16 model on a 24 GB GPU.",
        default=16_384)
    chunk_size: int = described("Judgments committed to the store per transaction.", default=64)
    device: str = described("Torch device for local backends: auto, cpu, cuda, cuda:N, mps.", default="auto")
    dtype: str = described("Torch dtype for local backends: auto, float32, bfloat16, float16.", default="auto")
    trust_remote_code: bool = described("Allow model repos to run their own code (off unless you trust them).",
                                    default=False)
    retry_failed: bool = described("Request again the judgments stored as error or truncated.", default=False)
    max_failure_fraction: float = described(
        "Exit with an error when more than this fraction of judgments failed (unparseable, truncated, error).",
        default=0.1)

    def __post_init__(self) -> None:
        check(bool(self.out), "out (run directory) is empty")
        check(self.batch_size is None or self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.max_batch_tokens >= 1, f"max_batch_tokens must be >= 1, got {self.max_batch_tokens}")
        check(self.chunk_size >= 1, f"chunk_size must be >= 1, got {self.chunk_size}")
        check(0 <= self.max_failure_fraction <= 1,
               f"max_failure_fraction must be in [0, 1], got {self.max_failure_fraction}")
        check(self.dtype in ("auto", "float32", "bfloat16", "float16"), f"unknown dtype {self.dtype!r}")
        judge_settings = [key for key, value in asdict(self.verifier).items()
                          if value != JudgeVerifierConfig.__dataclass_fields__[key].default]
        check(self.verify == "model" or not judge_settings,
              f"{', '.join('--' + key.replace('_', '-') for key in judge_settings)} set the judge of --verify model; "
              f"this run verifies with {self.verify!r}: drop them, or use --verify model")
        check(self.verify != "model" or self.verifier.verify_model is not None,
              "--verify model asks a judge model whether each answer equals the reference: name it with "
              "--verify-model (e.g. the served model's name, or a local path)")

    @property
    def out_path(self) -> Path:
        return Path(self.out)

    # Flat view: the keys a YAML job file and the CLI flags share.
    @staticmethod
    def flat_keys() -> dict[str, str]:
        """Flat key → section ('data', 'verifier', 'sampling', 'endpoint' or 'score')."""
        keys = {f.name: section for section, cls in SECTIONS.items() for f in fields(cls)}
        keys.update({f.name: "score" for f in fields(RunConfig) if f.name not in SECTIONS})
        return keys

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> RunConfig:
        keys = cls.flat_keys()
        unknown = sorted(set(values) - set(keys))
        check(not unknown, f"unknown setting(s) {unknown}; valid settings: {sorted(keys)}")
        sections: dict[str, dict[str, Any]] = {name: {} for name in (*SECTIONS, "score")}
        for key, value in values.items():
            sections[keys[key]][key] = value
        for key, value in values.items():
            check_type(key, value, _FIELD_TYPES[key])
        check("source" in sections["data"], "no input data given (DATA argument or `source:` in the job file)")
        check("out" in sections["score"], "no run directory given (--out or `out:` in the job file)")
        try:
            nested = {name: cls(**sections[name]) for name, cls in SECTIONS.items()}
            return cls(**nested, **sections["score"])
        except TypeError as exc:
            raise ConfigError(f"invalid settings: {exc}") from exc

    def to_flat(self) -> dict[str, Any]:
        flat = {k: v for k, v in asdict(self).items() if k not in SECTIONS}
        for name in SECTIONS:
            flat.update(asdict(getattr(self, name)))
        return flat


SECTIONS: dict[str, type] = {"data": DataConfig, "verifier": JudgeVerifierConfig, "sampling": SamplingConfig,
                             "endpoint": EndpointConfig}
# Flat key → type; section classes last, as in `flat_keys` (EndpointConfig.endpoint is the flat `endpoint`).
_FIELD_TYPES = {name: hint for cls in (RunConfig, *SECTIONS.values()) for name, hint in get_type_hints(cls).items()
                if cls is not RunConfig or name not in SECTIONS}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a mapping",
               type(None): "empty (null)"}


def _accepts(hint: Any, value: Any) -> bool:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_accepts(arm, value) for arm in get_args(hint))
    if origin is Literal:
        return value in get_args(hint)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or hint)


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arm) for arm in get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(hint))
    return _TYPE_NAMES.get(origin or hint, getattr(hint, "__name__", str(hint)))


def check_type(key: str, value: Any, hint: Any) -> None:
    """Name the setting whose value has the wrong type (a job file says `samples: three`)."""
    check(_accepts(hint, value), f"setting {key!r} must be {_describe(hint)}, got {value!r} "
                                  f"({type(value).__name__})")


def read_job_file(path: str | Path) -> dict[str, Any]:
    """A YAML job file: a flat mapping of the same settings the CLI flags take."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read job file {path}: {exc}") from exc
    check(isinstance(loaded, dict), f"job file {path} must hold a mapping of settings, got {type(loaded).__name__}")
    return {str(k).replace("-", "_"): v for k, v in loaded.items()}
