"""Settings from the environment and the agent YAML, validated once at start-up.

Bad configuration refuses to start and names file, line and field (`ConfigError`).
"""
from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from voicegw.cpus import usable_cpus
from voicegw.realtime.events import SessionConfig, ToolDecl, TurnDetection
from voicegw.yamlsrc import ConfigError, Locator, load_yaml, validation_error

# ---------------------------------------------------------------------------------------------
# Agent file
# ---------------------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: Any) -> float:
    """'90s', '30m', '1h', '250ms', '7d' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 10m or 1h")
    if isinstance(value, (int, float)):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"expected a duration like 30s, 10m or 1h, got {value!r}")
    n = float(m.group(1))
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[m.group(2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TurnDetectionConfig(_Strict):
    type: Literal["server_vad", "semantic_vad", "none"] = "server_vad"
    threshold: float | None = Field(default=0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int | None = Field(default=300, ge=0, le=5000)
    silence_duration_ms: int | None = Field(default=500, ge=0, le=10000)
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = Field(default=None, ge=5000, le=30000)


class TranscriptionConfig(_Strict):
    model: str | None = "whisper-1"
    language: str | None = None


class GreetingConfig(_Strict):
    text: str | None = None  # said verbatim (sent as instructions asking to say exactly this)
    instructions: str | None = None  # or: how to greet, in the model's own words


class VoicemailMessage(_Strict):
    leave_message: str = Field(min_length=1, max_length=1000)  # said verbatim after the beep


class PostCallConfig(_Strict):
    summary: bool = False  # a short summary of the call, in the call record and call.ended
    extract: dict[str, Any] | None = None  # a JSON Schema (type: object) the model fills from the call
    timeout: float = 15.0  # the longest the model session stays open for them after the call

    @field_validator("extract")
    @classmethod
    def _schema(cls, v: Any) -> Any:
        if v is None:
            return v
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(v)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        if v.get("type") != "object":
            raise ValueError('must be a JSON Schema with type: object')
        return v

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, v: Any) -> float:
        secs = parse_duration(v)
        if not 1 <= secs <= 120:
            raise ValueError("must be between 1s and 2m")
        return secs

    @property
    def wanted(self) -> bool:
        return self.summary or self.extract is not None


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def placeholders(text: str | None) -> set[str]:
    """The `{{name}}` context variables a text uses (outbound calls fill them)."""
    return set(_PLACEHOLDER.findall(text or ""))


def fill_placeholders(text: str, context: Mapping[str, str]) -> str:
    """`{{name}}` -> context[name]; a variable the context lacks becomes empty text."""
    return _PLACEHOLDER.sub(lambda m: str(context.get(m.group(1), "")), text)


class AgentConfig(_Strict):
    name: str = "agent"
    instructions: str = "You are a helpful, concise phone support agent."
    voice: str = "alloy"
    temperature: float | None = Field(default=0.8, ge=0.0, le=2.0)
    greeting: GreetingConfig | None = GreetingConfig(text="Hello! How can I help you today?")
    # g711_ulaw by default: every Realtime model takes audio/pcmu, and passthrough forwards the
    # phone's payload strings untouched (no decode, resample or re-encode on either side).
    audio_mode: Literal["pcm16", "g711_ulaw"] = "g711_ulaw"
    turn_detection: TurnDetectionConfig = TurnDetectionConfig()
    transcription: TranscriptionConfig | None = TranscriptionConfig()
    max_call_duration: float = 1800.0  # seconds
    max_output_tokens: int | Literal["inf"] | None = None
    language: str | None = None
    # kinds of values masked in caller and agent transcripts (cards by Luhn check)
    redact_transcripts: list[Literal["phone", "card", "email"]] = Field(default_factory=list)
    # the call as a WAV (docs/RECORDING.md): mixed (mono) or dual (stereo: caller left, agent right)
    recording: Literal["off", "mixed", "dual"] = "off"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    # outbound calls answered by a machine (Twilio answering-machine detection): hang up, or
    # {leave_message: "..."} said after the beep, then hang up
    voicemail: Literal["hang_up"] | VoicemailMessage = "hang_up"
    post_call: PostCallConfig = PostCallConfig()

    @field_validator("greeting", mode="before")
    @classmethod
    def _greeting_str(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"text": v}
        return v

    @field_validator("recording", mode="before")
    @classmethod
    def _recording(cls, v: Any) -> Any:
        if v is False:  # YAML reads a bare `off` as false
            return "off"
        if v is True:
            raise ValueError("expected off, mixed or dual (a bare on/yes/true reads as true: say mixed or dual)")
        return v

    @field_validator("max_call_duration", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        secs = parse_duration(v)
        if secs <= 0 or secs > 4 * 3600:
            raise ValueError("must be between 1s and 4h")
        return secs

    def session_config(self, tools: tuple[ToolDecl, ...] = ()) -> SessionConfig:
        td = self.turn_detection
        return SessionConfig(
            instructions=self.instructions,
            voice=self.voice,
            temperature=self.temperature,
            audio_format="g711_ulaw" if self.audio_mode == "g711_ulaw" else "pcm16",
            turn_detection=TurnDetection(
                type=td.type,
                threshold=td.threshold,
                prefix_padding_ms=td.prefix_padding_ms,
                silence_duration_ms=td.silence_duration_ms,
                eagerness=td.eagerness,
                create_response=td.create_response,
                interrupt_response=td.interrupt_response,
                idle_timeout_ms=td.idle_timeout_ms,
            ),
            transcription_model=self.transcription.model if self.transcription else None,
            tools=tools,
            max_output_tokens=self.max_output_tokens,
        )


@dataclass(frozen=True)
class LoadedAgent:
    config: AgentConfig
    path: Path | None
    locator: Locator | None

    @property
    def directory(self) -> Path:
        return self.path.parent if self.path else Path.cwd()


def load_agent(path: str | Path) -> LoadedAgent:
    data, loc = load_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise loc.error((), "an agent file must be a mapping of fields")
    try:
        cfg = AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, loc, model=AgentConfig) from None
    return LoadedAgent(cfg, Path(path), loc)


def default_agent() -> LoadedAgent:
    return LoadedAgent(AgentConfig(), None, None)


# ---------------------------------------------------------------------------------------------
# Environment settings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelTarget:
    """Where the Realtime model lives and how to reach it."""

    provider: Literal["azure", "openai", "local"]
    url: str  # full ws(s) URL including path and query
    dialect: Literal["preview", "ga"]
    api_key: str | None = field(default=None, repr=False)
    use_entra: bool = False  # Azure without a key: DefaultAzureCredential bearer tokens
    model: str = ""

    def describe(self) -> str:
        auth = "api-key" if self.api_key else ("entra-id" if self.use_entra else "none")
        u = urlparse(self.url)
        return f"{self.provider} {self.dialect} {u.scheme}://{u.netloc}{u.path} ({self.model}, auth={auth})"


def _ws(url: str) -> str:
    u = url.rstrip("/")
    if u.startswith("https://"):
        return "wss://" + u[len("https://"):]
    if u.startswith("http://"):
        return "ws://" + u[len("http://"):]
    return u


def model_target_from_env(env: Mapping[str, str]) -> ModelTarget | None:
    """The configured cloud model, or None for the embedded local model."""
    from urllib.parse import urlencode

    endpoint = env.get("AZURE_OPENAI_ENDPOINT", "").strip()
    if endpoint:
        deployment = env.get("AZURE_OPENAI_DEPLOYMENT", "").strip()
        if not deployment:
            raise ConfigError("environment", None, "AZURE_OPENAI_DEPLOYMENT", "required with AZURE_OPENAI_ENDPOINT")
        version = env.get("AZURE_OPENAI_API_VERSION", "").strip() or "v1"
        key = env.get("AZURE_OPENAI_API_KEY", "").strip() or None
        base = _ws(endpoint)
        if version in ("v1", "ga", "GA"):
            url = f"{base}/openai/v1/realtime?" + urlencode({"model": deployment})
            dialect: Literal["preview", "ga"] = "ga"
        else:
            url = f"{base}/openai/realtime?" + urlencode({"api-version": version, "deployment": deployment})
            dialect = "preview"
        return ModelTarget("azure", url, dialect, key, use_entra=key is None, model=deployment)
    key = env.get("OPENAI_API_KEY", "").strip()
    if key:
        model = env.get("OPENAI_REALTIME_MODEL", "").strip() or "gpt-realtime"
        base = _ws(env.get("OPENAI_BASE_URL", "").strip() or "https://api.openai.com/v1")
        if not base.endswith("/v1"):
            base += "/v1"
        url = f"{base}/realtime?" + urlencode({"model": model})
        return ModelTarget("openai", url, "ga", key, model=model)
    return None


def _bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    v = env.get(name)
    if v is None or v == "":
        return default
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError("environment", None, name, f"expected true or false, got {v!r}")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    v = env.get(name)
    if not v:
        return default
    try:
        return int(v)
    except ValueError:
        raise ConfigError("environment", None, name, f"expected an integer, got {v!r}") from None


def _duration(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    v = env.get(name, "").strip()
    if not v:
        return default
    try:
        secs = parse_duration(v)
    except ValueError as exc:
        raise ConfigError("environment", None, name, str(exc)) from None
    if secs <= 0:
        raise ConfigError("environment", None, name, f"must be a positive duration, got {v!r}")
    return secs


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    n = _int(env, name, default)
    if n < 1:
        raise ConfigError("environment", None, name, f"must be at least 1, got {n}")
    return n


def _phone(env: Mapping[str, str], name: str) -> str | None:
    v = env.get(name, "").strip()
    if not v:
        return None
    if not re.match(r"^(\+?[0-9]{2,15}|sips?:\S+)$", v.replace(" ", "").replace("-", "")):
        raise ConfigError("environment", None, name, f"expected an E.164 number or a sip: URI, got {v!r}")
    return v.replace(" ", "").replace("-", "")


def _base_url(env: Mapping[str, str], name: str) -> str | None:
    v = env.get(name, "").strip().rstrip("/")
    if not v:
        return None
    if urlparse(v).scheme not in ("http", "https", "ws", "wss") or not urlparse(v).netloc:
        raise ConfigError("environment", None, name, f"expected a base URL like http://10.0.0.7:8080, got {v!r}")
    return v


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated IP addresses or CIDR networks, normalised ('10.0.0.7' -> '10.0.0.7/32')."""
    import ipaddress

    out = []
    for item in env.get(name, "").split(","):
        if item.strip():
            try:
                out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                raise ConfigError("environment", None, name,
                                  f"expected IP addresses or CIDR networks, got {item.strip()!r}") from None
    return tuple(out)


def _events(env: Mapping[str, str]) -> dict[str, str | None]:
    """VOICEGW_EVENTS_URL (http or https) and the VOICEGW_EVENTS_SECRET it needs, a Standard
    Webhooks `whsec_<base64>` key. Neither value is echoed in an error: both may hold secrets."""
    from voicegw.events.signing import parse_secret

    url = env.get("VOICEGW_EVENTS_URL", "").strip() or None
    secret = env.get("VOICEGW_EVENTS_SECRET", "").strip() or None
    if url is not None:
        u = urlparse(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ConfigError("environment", None, "VOICEGW_EVENTS_URL",
                              "expected an http(s) URL like https://example.com/hooks/voicegw")
        if secret is None:
            raise ConfigError("environment", None, "VOICEGW_EVENTS_SECRET",
                              "required with VOICEGW_EVENTS_URL: whsec_ followed by base64 (events are signed)")
    if secret is not None:
        try:
            parse_secret(secret)
        except ValueError as exc:
            raise ConfigError("environment", None, "VOICEGW_EVENTS_SECRET", str(exc)) from None
    return {"events_url": url, "events_secret": secret}


@dataclass(frozen=True)
class Settings:
    public_url: str | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = field(default=None, repr=False)
    dev_mode: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    model: ModelTarget | None = None  # None: embedded local model
    agent_path: Path | None = None
    routing_path: Path | None = None
    data_dir: Path = Path("data")
    database_url: str | None = None
    operator_tokens: tuple[str, ...] = field(default=(), repr=False)
    stream_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    stream_token_ttl: float = 300.0
    prewarm_timeout: float = 15.0
    model_connect_timeout: float = 10.0
    tool_hosts: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()  # networks whose X-Forwarded-For is believed
    model_session_max: float | None = None  # None: the service's documented lifetime for the dialect
    model_connect_budget: float = 4.0  # the whole time to a usable model session, retries included
    workers: int = 1  # worker processes (`serve --workers`; VOICEGW_WORKERS, default: the CPUs it may use, voicegw.cpus)
    max_calls: int = 50  # per worker process, pre-warms included: the measured capacity of one core
    overflow_number: str | None = None  # where callers go when the gateway is full or draining
    drain_timeout: float = 900.0  # on SIGTERM/SIGINT, how long live calls may go on
    replica_url: str | None = None  # this replica's own base URL, for streams relayed from other replicas
    events_url: str | None = None  # where post-call events are POSTed (voicegw.events)
    events_secret: str | None = field(default=None, repr=False)  # whsec_<base64>: their signing key
    events_retry: tuple[float, ...] | None = None  # delays between attempts; None: voicegw.events' schedule
    recordings_dir: Path | None = None  # None: <data_dir>/recordings

    @property
    def model_session_lifetime(self) -> float:
        """How long a model session lives before the service ends it: VOICEGW_MODEL_SESSION_MAX,
        else 30 min for the preview dialect and 60 min for GA and OpenAI (the embedded local model
        also says when its sessions expire, and the earlier of the two counts)."""
        if self.model_session_max is not None:
            return self.model_session_max
        return 1800.0 if self.model is not None and self.model.dialect == "preview" else 3600.0

    @property
    def recordings_path(self) -> Path:
        """Where call recordings are written and served from (VOICEGW_RECORDINGS_DIR)."""
        return self.recordings_dir if self.recordings_dir is not None else self.data_dir / "recordings"

    @property
    def webhook_auth_enabled(self) -> bool:
        return bool(self.twilio_auth_token)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'voicegw.db'}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        env = os.environ if env is None else env
        secret_txt = env.get("VOICEGW_STREAM_SECRET", "")
        token = env.get("TWILIO_AUTH_TOKEN", "").strip() or None
        tokens = tuple(t.strip() for t in env.get("VOICEGW_OPERATOR_TOKENS", "").split(",") if t.strip())
        public = env.get("VOICEGW_PUBLIC_URL", "").strip().rstrip("/") or None
        if public and urlparse(public).scheme not in ("http", "https"):
            raise ConfigError("environment", None, "VOICEGW_PUBLIC_URL", "must be an http(s) URL")
        values: dict[str, Any] = dict(
            public_url=public,
            twilio_account_sid=env.get("TWILIO_ACCOUNT_SID", "").strip() or None,
            twilio_auth_token=token,
            dev_mode=_bool(env, "VOICEGW_DEV_MODE"),
            host=env.get("VOICEGW_HOST", "").strip() or "127.0.0.1",
            port=_int(env, "VOICEGW_PORT", 8080),
            model=model_target_from_env(env),
            agent_path=Path(env["VOICEGW_AGENT"]) if env.get("VOICEGW_AGENT") else None,
            routing_path=Path(env["VOICEGW_ROUTING"]) if env.get("VOICEGW_ROUTING") else None,
            data_dir=Path(env.get("VOICEGW_DATA_DIR", "").strip() or "data"),
            database_url=env.get("VOICEGW_DATABASE_URL", "").strip() or None,
            operator_tokens=tokens,
            stream_token_ttl=float(_int(env, "VOICEGW_STREAM_TOKEN_TTL", 300)),
            prewarm_timeout=float(_int(env, "VOICEGW_PREWARM_TIMEOUT", 15)),
            tool_hosts=tuple(h.strip() for h in env.get("VOICEGW_TOOL_HOSTS", "").split(",") if h.strip()),
            trusted_proxies=_networks(env, "VOICEGW_TRUSTED_PROXIES"),
            model_session_max=_duration(env, "VOICEGW_MODEL_SESSION_MAX", None),
            model_connect_budget=_duration(env, "VOICEGW_MODEL_CONNECT_BUDGET", 4.0) or 4.0,
            workers=_positive(env, "VOICEGW_WORKERS", usable_cpus()),
            max_calls=_positive(env, "VOICEGW_MAX_CALLS", 50),
            overflow_number=_phone(env, "VOICEGW_OVERFLOW_NUMBER"),
            drain_timeout=_duration(env, "VOICEGW_DRAIN_TIMEOUT", 900.0) or 900.0,
            replica_url=_base_url(env, "VOICEGW_REPLICA_URL"),
            recordings_dir=Path(env["VOICEGW_RECORDINGS_DIR"]) if env.get("VOICEGW_RECORDINGS_DIR", "").strip() else None,
        )
        values.update(_events(env))
        if secret_txt:
            values["stream_secret"] = secret_txt.encode()
        elif token:
            # stable across replicas that share the auth token, distinct from it
            import hashlib

            values["stream_secret"] = hashlib.sha256(b"voicegw-stream-token:" + token.encode()).digest()
        values.update(overrides)
        return cls(**values)
