"""The settings of a run (`curate score`, `curate solve`, `curate respond`, `curate pairs`, and curate.engine's
functions).

RunConfig groups them in sections (curate.settings: a section's fields are keys of the same flat mapping); a YAML
job file mirrors the flags one to one (`question_field: problem` is `--question-field problem`). The four commands
share RunConfig: a field or section that only some of them take says so (`commands`), and so does a default that
differs by command (`defaults`), so that each command's flags are its own (curate.cli.score).
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from curate.redact import refuse_url_credentials
from curate.settings import check, described, from_flat, to_flat

BUNDLED_JUDGE = "bundled:tiny-judge"
DEFAULT_TEMPLATE = "difficulty/intensity_score_only"
DEFAULT_RESPONSE_TEMPLATE = "solve/step_by_step"  # what `curate solve` and `curate respond` use unless told
DEFAULT_VERIFIER_TEMPLATE = "verify/equivalence"
DEFAULT_PAIRWISE_TEMPLATE = "pairwise/harder_prefilled"  # what `curate pairs` uses unless told
RESPONSE_COMMANDS = ("solve", "respond")  # the commands whose model answers, and a verifier may decide
MODEL_NEEDED = (*RESPONSE_COMMANDS, "pairs")  # the commands with no default model: the bundled judge answers digits


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
                            default=512, defaults={"pairs": 1})
    seed: int = described("Base seed; each (item, sample) draws from its own seed derived from it.", default=0)
    top_logprobs: int = described(
        "Top logprobs returned per generated token, for logprob scoring: the distribution over the scores "
        "1..5 is read where the score digit was generated (the first answer token of a score-only template, "
        "the inside of a tagged one's final <score> tag, after any </think>). With a score-only template and "
        "--max-tokens 1 a judgment costs one forward pass (`curate pairs`: P(A harder) is read where the letter "
        "stands). 0: off.", default=0, defaults={"pairs": 20})
    constrain_score: bool = described(
        "Allow only the score tokens 1..5 as the first answer token (transformers: an allowed-token mask; vllm: "
        "allowed_token_ids; openai: structured_outputs choice, which vLLM-served endpoints honour), so that a "
        "chat model that would start with a word still gives a score; score_mass records how much probability "
        "the model gave the score tokens unconstrained (a vLLM server constrains before it reports logprobs: "
        "there it is 1). Needs a score-only template, --max-tokens 1 and --top-logprobs. `curate pairs`: the "
        "letters A and B instead.", default=False, commands=("score", "pairs"))

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

    base_url: list[str] = described(
        "Server URL ending in /v1. Several spread the requests over servers of the same model: each goes to the one "
        "with the fewest in flight, and one that fails is backed off while the others carry on. Not part of the "
        "run's identity: a run resumes on other servers.",
        default_factory=list, unset="$OPENAI_BASE_URL")
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
        for url in self.base_url:
            refuse_url_credentials("--base-url", url)
        repeated = sorted({url for url in self.base_url if self.base_url.count(url) > 1})
        check(not repeated, f"--base-url {', '.join(repeated)} is given more than once: give each server once")
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
class BackendConfig:
    """All a backend receives (curate.backends): the model, the backend that runs it, and that backend's settings.
    Each backend reads the ones it needs and states which of them its answers depend on (its identity)."""

    model: str = described("Model: local path, Hub id or bundled:NAME; score defaults to the bundled tiny judge, "
                           "solve, respond and pairs need one.", default=BUNDLED_JUDGE,
                           defaults=dict.fromkeys(MODEL_NEEDED, MISSING))
    backend: str = described("Backend name (see curate.backends.BACKENDS).", default="transformers")
    endpoint: EndpointConfig = described("How to reach a server (backend openai).", default_factory=EndpointConfig)
    engine_args: dict[str, Any] = described(
        "Extra vllm.LLM engine arguments, e.g. {tensor_parallel_size: 2, gpu_memory_utilization: 0.85}.",
        default_factory=dict)
    batch_size: int | None = described(
        "Most rows per batch in the transformers backend.", default=None,
        unset="the token budget (--max-batch-tokens) alone sizes each batch")
    max_batch_tokens: int = described(
        "Most tokens per batch in the transformers backend: rows x (longest prompt + longest generation allowed), "
        "padding included; a prompt over it runs alone. 16,384 fits beside an 8B bf16 model on a 24 GB GPU.",
        default=16_384)
    device: str = described("Torch device for local backends: auto, cpu, cuda, cuda:N, mps.", default="auto")
    dtype: str = described("Torch dtype for local backends: auto, float32, bfloat16, float16.", default="auto")
    trust_remote_code: bool = described("Allow model repos to run their own code (off unless you trust them).",
                                    default=False)

    def __post_init__(self) -> None:
        check(self.batch_size is None or self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.max_batch_tokens >= 1, f"max_batch_tokens must be >= 1, got {self.max_batch_tokens}")
        check(self.dtype in ("auto", "float32", "bfloat16", "float16"), f"unknown dtype {self.dtype!r}")


@dataclass(frozen=True)
class ExecutionConfig:
    """Where the backend runs (curate.executors): in this process, or on a Ray actor pool that the driver feeds and
    whose answers it alone stores. Not part of a run's identity: a run begun in one process resumes on Ray."""

    executor: Literal["local", "ray"] = described(
        "'local' runs the backend in this process; 'ray' runs --ray-actors copies of it on a Ray actor pool (Ray "
        "Data map_batches), this process alone writing the store: pip install 'dereason[ray]'.", default="local")
    ray_address: str | None = described(
        "Ray cluster to join (ray.init's address: 'auto', or ray://HEAD:10001); its workers need the --api-key-env "
        "variable in their own environment.", default=None,
        unset="ray.init's own choice: $RAY_ADDRESS, or a cluster `ray start` began on this machine, else a local Ray "
              "started for the run and stopped after it")
    ray_actors: int = described("Actors in the pool, each holding one backend: a model copy or an endpoint client.",
                                default=1)
    ray_batch_size: int = described(
        "Requests an actor answers per batch: what an actor that dies loses, and is asked again.", default=64)
    ray_actor_cpus: float = described("CPUs Ray reserves for each actor (below 1 for endpoint clients).", default=1.0)
    ray_actor_gpus: float = described("GPUs Ray reserves for each actor: 1 gives each model copy a GPU of its own.",
                                      default=0.0)
    ray_actor_restarts: int = described(
        "Times an actor that dies is restarted and its batch asked again; past that the run stops, keeping every "
        "answer stored (rerun to go on).", default=3)

    def __post_init__(self) -> None:
        check(self.executor in ("local", "ray"), f"executor must be 'local' or 'ray', got {self.executor!r}")
        refuse_url_credentials("--ray-address", self.ray_address)
        check(self.ray_actors >= 1, f"ray_actors must be >= 1, got {self.ray_actors}")
        check(self.ray_batch_size >= 1, f"ray_batch_size must be >= 1, got {self.ray_batch_size}")
        check(self.ray_actor_cpus >= 0 and self.ray_actor_gpus >= 0,
              f"ray_actor_cpus and ray_actor_gpus must be >= 0, got {self.ray_actor_cpus} and {self.ray_actor_gpus}")
        check(self.ray_actor_restarts >= 0, f"ray_actor_restarts must be >= 0, got {self.ray_actor_restarts}")
        ray_settings = [key for key, value in asdict(self).items()
                        if key != "executor" and value != ExecutionConfig.__dataclass_fields__[key].default]
        check(self.executor == "ray" or not ray_settings,
              f"{', '.join('--' + key.replace('_', '-') for key in ray_settings)} set the Ray executor; this run's "
              "executor is 'local': add --executor ray, or drop them")


@dataclass(frozen=True)
class PairwiseConfig:
    """Which items a pairs run (`curate pairs`, curate.engine.pairs) compares: curate.tasks.schedule."""

    comparisons: int = described(
        "Comparisons per item: each item is compared with K others, each pair asked in both orders (A/B, then B/A), "
        "so the run makes K requests per item (K x items in all, times --samples) and shows each item in 2K of "
        "them. Raising it later asks only the new pairs.", default=4)
    schedule_seed: int = described("Seed of the schedule: which items meet (the same items, K and seed give the same "
                                   "pairs).", default=0)

    def __post_init__(self) -> None:
        check(self.comparisons >= 1, f"comparisons must be >= 1, got {self.comparisons}")


@dataclass(frozen=True)
class JudgeVerifierConfig:
    """The judge model of `--verify model` (curate.verify.model). It shares the run's device, dtype, batch and
    endpoint settings (rate limits, retries, API key variable); what differs is set here."""

    verify_model: str | None = described(
        "Judge model for --verify model: local path, Hub id, bundled:NAME, or the served model's name.", default=None)
    verify_backend: str | None = described("Backend of the --verify model judge.", default=None,
                                           unset="the run's --backend")
    verify_base_url: str | None = described(
        "Server URL of the --verify model judge, for an openai backend.", default=None, unset="the run's --base-url")
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
    out: str = described("Run directory: manifest, judgments store, aggregates.",
                         unset="runs/DATA__TEMPLATE__MODEL")
    template: str = described("Template name or path to a .jinja file: a judge template for score, a response "
                              "template for solve and respond, a pairwise template for pairs.",
                              default=DEFAULT_TEMPLATE, defaults={**dict.fromkeys(RESPONSE_COMMANDS,
                                                                                  DEFAULT_RESPONSE_TEMPLATE),
                                                                  "pairs": DEFAULT_PAIRWISE_TEMPLATE})
    template_dir: str | None = described("Extra directory searched for templates before the bundled ones.",
                                         default=None)
    verify: str | None = described(
        "Verifier that decides each response against the item's reference: math (math-verify on the last "
        "\\boxed{}), gsm8k (#### N), numeric, choice (an option's label or text) or exact, or model: a judge model "
        "(--verify-model) decides equivalence (see curate.verify).", default=None, commands=RESPONSE_COMMANDS)
    verifier: JudgeVerifierConfig = described("The judge of --verify model.", default_factory=JudgeVerifierConfig,
                                              commands=RESPONSE_COMMANDS)
    pairwise: PairwiseConfig = described("Which items a pairs run compares.", default_factory=PairwiseConfig,
                                         commands=("pairs",))
    sampling: SamplingConfig = described("How each answer is sampled.", default_factory=SamplingConfig)
    backend_config: BackendConfig = described("The model that answers and the backend that runs it.",
                                              default_factory=BackendConfig)
    execution: ExecutionConfig = described("Where the backend runs.", default_factory=ExecutionConfig)
    chunk_size: int = described("Judgments committed to the store per transaction.", default=64)
    retry_failed: bool = described("Request again the judgments stored as error or truncated.", default=False)
    max_failure_fraction: float = described(
        "Exit with an error when more than this fraction of judgments failed (unparseable, truncated, error).",
        default=0.1)

    def __post_init__(self) -> None:
        check(bool(self.out), "out (run directory) is empty")
        check(self.chunk_size >= 1, f"chunk_size must be >= 1, got {self.chunk_size}")
        check(0 <= self.max_failure_fraction <= 1,
               f"max_failure_fraction must be in [0, 1], got {self.max_failure_fraction}")
        judge_settings = [key for key, value in asdict(self.verifier).items()
                          if value != JudgeVerifierConfig.__dataclass_fields__[key].default]
        check(self.verify == "model" or not judge_settings,
              f"{', '.join('--' + key.replace('_', '-') for key in judge_settings)} set the judge of --verify model; "
              f"this run verifies with {self.verify!r}: drop them, or use --verify model")

    @property
    def out_path(self) -> Path:
        return Path(self.out)

    @classmethod
    def from_flat(cls, values: dict[str, Any], where: str | None = None) -> RunConfig:
        """A run's settings from the flat mapping of a job file (curate.settings.from_flat)."""
        return from_flat(cls, values, where)

    def to_flat(self) -> dict[str, Any]:
        """The flat mapping of every setting: what the manifest and invocations.jsonl record."""
        return to_flat(self)
