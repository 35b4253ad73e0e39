"""Runtime settings of the sipagent server.

Sources, from lowest to highest priority:

1. built-in defaults;
2. TOML config files: every ``config/*.toml`` except ``*.example.toml`` (in name order, later
   files win), or only the file given with ``--config``; keys are the setting names at the
   top level of the file (``sip_port = 5070``), see ``config/sipagent.example.toml``;
3. a ``.env`` file in the working directory;
4. environment variables ``SIPAGENT_<NAME>`` (``OPENAI_API_KEY`` for the API key,
   ``OPENAI_BASE_URL`` for the API's base URL);
5. keyword overrides passed to :func:`load_settings` (command-line options).

A bad value raises :class:`ConfigError`, whose message is one line naming the setting by its
environment variable, e.g. ``SIPAGENT_SIP_PORT: must be between 1 and 65535 (got 70000)``.
"""

from __future__ import annotations

import contextvars
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .exceptions import RemoteProtocolError
from .headers import SipUri
from .policy import parse_cidrs, parse_numbers, preset_path

__all__ = [
    "parse_auth_users",
    "ENV_PREFIX",
    "AudioFormat",
    "Eagerness",
    "GreetOn",
    "ModelName",
    "NoiseReduction",
    "TurnDetection",
    "ConfigError",
    "Settings",
    "default_config_files",
    "env_name",
    "load_settings",
]

ENV_PREFIX = "SIPAGENT_"
_CONFIG_DIR = Path("config")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")

# Config files for the Settings being built; None means "discover config/*.toml".
_config_files: contextvars.ContextVar[tuple[Path, ...] | None] = contextvars.ContextVar(
    "sipagent_config_files", default=None
)


class ConfigError(ValueError):
    """A setting is missing or invalid; ``str()`` is one line naming it."""

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting
        """The environment variable name of the (first) bad setting, if it is one."""


def default_config_files(directory: Path = _CONFIG_DIR) -> tuple[Path, ...]:
    """The config files read when no ``--config`` is given, in the order they apply."""
    return tuple(
        path
        for path in sorted(directory.glob("*.toml"))
        if path.is_file() and not path.name.endswith(".example.toml")
    )


def _is_host(value: str) -> bool:
    """An IPv4/IPv6 address or an RFC 1123 host name (whose last label is not numeric)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        name = value.removesuffix(".")
        labels = name.split(".")
        return (
            0 < len(name) <= 253
            and all(_HOST_LABEL.match(label) for label in labels)
            and not labels[-1].isdigit()
        )
    return True


ModelName = Literal["echo", "openai"]
GreetOn = Literal["ready", "media"]
TurnDetection = Literal["server_vad", "semantic_vad"]
Eagerness = Literal["low", "medium", "high", "auto"]
NoiseReduction = Literal["near_field", "far_field"]
AudioFormat = Literal["g711", "pcm"]

# Settings named after an OpenAI environment variable rather than SIPAGENT_<NAME>.
_OPENAI_VARIABLES = {"openai_api_key": "OPENAI_API_KEY", "openai_base_url": "OPENAI_BASE_URL"}
# The bridge's defaults (bridge.realtime_config.RealtimeConfig), repeated here so that loading
# the settings does not import the openai SDK; a test keeps the two in step.
_DEFAULT_INSTRUCTIONS = (
    "You are a friendly voice assistant answering a phone call. Keep your answers short and "
    "conversational; the caller can only hear you."
)
_DEFAULT_GREETING = "Greet the caller in one short sentence and ask how you can help."
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*\Z")
_PHONE_NUMBER = re.compile(r"\+?[0-9][0-9-]*\Z")


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _default_model(data: dict[str, Any]) -> ModelName:
    return "openai" if data.get("openai_api_key") is not None else "echo"


class Settings(BaseSettings):
    """Every tunable of the server; build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )

    sip_host: str = "127.0.0.1"
    """Address SIP listens on (UDP and TCP)."""
    sip_port: int = 5060
    """SIP port (UDP and TCP)."""
    tls_port: int = 5061
    """TLS listener port; 0: no TLS. Used only when tls_cert is set."""
    tls_cert: str | None = None
    """PEM certificate chain (leaf first) presented over TLS; None: TLS off."""
    tls_key: str | None = None
    """PEM private key of tls_cert; None: it is in tls_cert."""
    tls_ca: str | None = None
    """PEM trust anchors for the certificates of TLS servers we connect to; None: system."""
    tls_verify_peer: bool = True
    """Verify certificate and host name of TLS servers we connect to (registrar, REFER)."""
    tls_require_client_cert: bool = False
    """Refuse inbound TLS callers without a certificate signed by tls_ca."""
    public_host: str | None = Field(default=None, validate_default=True)
    """Address put in Contact/Via/SDP when it differs from sip_host (NAT); None: sip_host."""
    rtp_port_min: int = 10000
    """Lowest RTP port (even; RTCP uses the next odd port)."""
    rtp_port_max: int = 20000
    """Highest RTP port (even)."""
    admin_host: str = "127.0.0.1"
    """Address of the admin HTTP API."""
    admin_port: int = 8080
    """Port of the admin HTTP API."""
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key")
    )
    """OpenAI API key, read from OPENAI_API_KEY (environment or .env)."""
    model: ModelName = Field(default_factory=_default_model)
    """Voice model: 'openai' when OPENAI_API_KEY is set, else the local 'echo'."""
    ring_ms: int = 0
    """How long to send 180 Ringing before answering, in milliseconds."""
    max_calls: int = 200
    """Concurrent calls accepted before answering 486/503."""
    rtp_inactivity_timeout: float = 30.0
    """Seconds without RTP before an active call is hung up."""
    rtp_hold_inactivity_timeout: float = 3600.0
    """Seconds without RTP before a call on hold is hung up."""
    drain_timeout: float = 5.0
    """Seconds live calls may go on after SIGTERM/SIGINT before they are hung up."""
    user_agent: str = "sipagent/0.1"
    """User-Agent / Server header value."""
    database_url: str = Field(
        default="sqlite:///data/sipagent.sqlite3",
        # "database_url" also matches DATABASE_URL in the environment (names ignore case).
        validation_alias=AliasChoices("SIPAGENT_DATABASE_URL", "database_url"),
    )
    """Where call history is stored (SIPAGENT_DATABASE_URL, or DATABASE_URL as on Heroku & co)."""
    admin_token: SecretStr | None = None
    """Bearer token the admin API requires on everything but /health; None: no auth."""
    log_level: str = "INFO"
    """Logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL."""
    log_format: Literal["auto", "json", "text"] = "auto"
    """Log lines: JSON objects, or text for people; auto: text when stderr is a terminal."""
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url")
    )
    """Base URL of the OpenAI API (OPENAI_BASE_URL); None: the SDK's default."""
    realtime_model: str = "gpt-realtime"
    """The Realtime model."""
    realtime_voice: str = "marin"
    """The voice the model speaks with."""
    realtime_instructions: str = _DEFAULT_INSTRUCTIONS
    """The session's system instructions."""
    realtime_greeting: str | None = _DEFAULT_GREETING
    """Instructions for the model's first words; None (empty text): wait for the caller."""
    realtime_greet_on: GreetOn = "media"
    """Greet once the session is ready ('ready') or once the caller's audio flows ('media')."""
    realtime_turn_detection: TurnDetection = "server_vad"
    """End of the caller's turn by volume ('server_vad') or by meaning ('semantic_vad')."""
    realtime_eagerness: Eagerness = "auto"
    """How quickly 'semantic_vad' ends the caller's turn."""
    realtime_noise_reduction: NoiseReduction | None = "near_field"
    """Input noise reduction: 'near_field' (handsets), 'far_field', or None ('none')."""
    realtime_transcription_model: str | None = "gpt-4o-mini-transcribe"
    """Model transcribing the caller for the call record; None ('none'): no caller transcripts."""
    realtime_audio_format: AudioFormat = "g711"
    """'g711': the call's PCMU/PCMA to the model untouched; 'pcm': 24 kHz PCM, resampled."""
    realtime_append_ms: int = 40
    """Caller audio per message to the model, 20 or 40 ms."""
    realtime_tool_timeout: float = 5.0
    """Seconds a tool may run before the model gets a timeout error instead."""
    realtime_open_timeout: float = 5.0
    """Seconds the Realtime session may take to open while the call rings."""
    registrar: str | None = None
    """Registrar to REGISTER with (sip:example.sip.twilio.com, a PBX); None: no registration."""
    registrar_user: str | None = None
    """User (and AoR user) for the registrar."""
    registrar_password: SecretStr | None = None
    """Password for the registrar's digest challenge."""
    registrar_expires: int = 3600
    """Registration lifetime asked for, in seconds."""
    outbound_proxy: str | None = None
    """Send REGISTER through this proxy (a sip: URI)."""
    auth_users: SecretStr | None = None
    """Digest users for inbound calls from sources off the allow-list: "alice:pw,bob:pw"."""
    srtp: Literal["off", "optional", "required"] = "off"
    """SRTP with SDES keys: 'optional' answers RTP/SAVP offers with SRTP and RTP/AVP with
    RTP; 'required' refuses plain RTP (488); 'off' refuses RTP/SAVP."""
    allow_cidrs: Annotated[tuple[str, ...], NoDecode] = ()
    """Sources (IPs or CIDRs, comma-separated) allowed to send SIP; empty: everyone."""
    allow_preset: str | None = None
    """A carrier's published signalling ranges added to allow_cidrs ('twilio')."""
    numbers: Annotated[tuple[str, ...], NoDecode] = ()
    """Dialled numbers/users we answer (comma-separated); empty: any."""
    rate_limit: float = 15.0
    """SIP requests per second allowed per source (0: no limit)."""
    rate_burst: int = 30
    """Requests a source may send at once before rate_limit applies."""
    max_new_calls_per_second: float = 20.0
    """New calls accepted per second (0: no limit)."""
    rate_limit_exempt: Annotated[tuple[str, ...], NoDecode] = ("127.0.0.0/8", "::1/128")
    """Sources (IPs or CIDRs, comma-separated) never rate-limited; empty: none."""
    drop_unknown_sources: bool = True
    """Drop (rather than answer 403) requests from sources not allowed."""
    agents_path: str = "config/agents"
    """Directory (or file) of the agent definitions the openai model uses."""
    transfer_target: str | None = None
    """sip:/tel: URI that transfer_to_human and the admin's default transfer go to."""
    fallback_transfer_target: str | None = None
    """Where to send callers when the model is unavailable (SIP/tel URI); None: hang up."""
    model_max_reconnects: int = 1
    """New model sessions tried per call after the model failed mid-call."""
    recordings_dir: Path | None = None
    """Directory of per-call stereo WAV recordings (caller left, agent right); None: off."""
    recording_max_mb: float = 50.0
    """Largest recording file in megabytes (10^6 bytes); the recording stops there."""

    @field_validator("tls_port")
    @classmethod
    def _check_tls_port(cls, value: int) -> int:
        if not 0 <= value <= 65535:
            raise ValueError(f"must be between 0 (off) and 65535 (got {value})")
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> Settings:
        if self.tls_cert is None:
            for name in ("tls_key", "tls_ca"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: needs SIPAGENT_TLS_CERT")
            if self.tls_require_client_cert:
                raise ValueError("tls_require_client_cert: needs SIPAGENT_TLS_CERT")
        elif self.tls_port and self.tls_port == self.sip_port:
            raise ValueError("tls_port: must differ from SIPAGENT_SIP_PORT")
        if self.tls_require_client_cert and self.tls_ca is None:
            raise ValueError("tls_require_client_cert: needs SIPAGENT_TLS_CA")
        return self

    @model_validator(mode="after")
    def _check_registration(self) -> Settings:
        if self.registrar is not None and (
            not self.registrar_user or self.registrar_password is None
        ):
            missing = "registrar_user" if not self.registrar_user else "registrar_password"
            raise ValueError(f"{missing}: must be set when SIPAGENT_REGISTRAR is")
        return self

    @property
    def effective_public_host(self) -> str:
        """The address peers should reach us at: public_host, else sip_host."""
        return self.public_host or self.sip_host

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        paths = _config_files.get()
        toml = _TomlFilesSource(settings_cls, default_config_files() if paths is None else paths)
        return init_settings, env_settings, dotenv_settings, toml

    @field_validator("sip_host", "admin_host", "public_host")
    @classmethod
    def _check_host(cls, value: str | None) -> str | None:
        if value is not None and not _is_host(value):
            raise ValueError(f"must be an IP address or hostname (got {value!r})")
        return value

    @field_validator("public_host")
    @classmethod
    def _check_public_host(cls, value: str | None, info: ValidationInfo) -> str | None:
        # SDP c=0.0.0.0 means "on hold": a wildcard bind needs a routable address to announce.
        announced = value if value is not None else info.data.get("sip_host")
        if announced is not None and _is_wildcard(announced):
            if value is None:
                raise ValueError(
                    f"must be set when {ENV_PREFIX}SIP_HOST is {announced} "
                    "(peers cannot send to a wildcard address)"
                )
            raise ValueError(f"must not be a wildcard address (got {value!r})")
        return value

    @field_validator("sip_port", "admin_port")
    @classmethod
    def _check_port(cls, value: int) -> int:
        return _check_range(value, 1, 65535)

    @field_validator("rtp_port_min", "rtp_port_max")
    @classmethod
    def _check_rtp_port(cls, value: int, info: ValidationInfo) -> int:
        _check_range(value, 1024, 65535)
        if value % 2:
            raise ValueError(f"must be even (got {value})")
        low = info.data.get("rtp_port_min")
        if info.field_name == "rtp_port_max" and low is not None and value < low + 2:
            raise ValueError(
                f"must be at least {ENV_PREFIX}RTP_PORT_MIN + 2 = {low + 2} (got {value})"
            )
        return value

    @field_validator("model", mode="before")
    @classmethod
    def _normalize_model(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str, info: ValidationInfo) -> str:
        if value == "openai" and info.data.get("openai_api_key") is None:
            raise ValueError("'openai' needs OPENAI_API_KEY (set it, or use 'echo')")
        return value

    @field_validator("ring_ms")
    @classmethod
    def _check_ring(cls, value: int) -> int:
        return _check_range(value, 0, 60000)

    @field_validator("max_calls")
    @classmethod
    def _check_max_calls(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1 (got {value})")
        return value

    @field_validator("rtp_inactivity_timeout", "rtp_hold_inactivity_timeout")
    @classmethod
    def _check_timeout(cls, value: float) -> float:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"must be a positive number of seconds (got {value})")
        return value

    @field_validator("drain_timeout")
    @classmethod
    def _check_drain_timeout(cls, value: float) -> float:
        if not (math.isfinite(value) and 0 <= value <= 3600):
            raise ValueError(f"must be between 0 and 3600 seconds (got {value})")
        return value

    @field_validator("user_agent")
    @classmethod
    def _check_user_agent(cls, value: str) -> str:
        if not value.strip() or not value.isprintable():
            raise ValueError(f"must be non-empty printable text (got {value!r})")
        return value

    @field_validator("admin_token")
    @classmethod
    def _check_admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (or unset for no auth)")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        scheme, separator, _ = value.partition("://")
        if not scheme or not separator:
            raise ValueError(
                f"must be a URL such as sqlite:///data/sipagent.sqlite3 (got {value!r})"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in _LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)} (got {value!r})")
        return level

    @field_validator("openai_base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme, separator, rest = value.partition("://")
        host = rest.split("/", 1)[0]
        if scheme.lower() not in ("http", "https", "ws", "wss") or not separator or not host:
            raise ValueError(f"must be an http(s):// or ws(s):// URL (got {value!r})")
        return value

    @field_validator("realtime_model", "realtime_voice")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"must be a name without spaces (got {value!r})")
        return value

    @field_validator("realtime_instructions")
    @classmethod
    def _check_instructions(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("realtime_greeting", "realtime_transcription_model", mode="before")
    @classmethod
    def _empty_means_none(cls, value: object, info: ValidationInfo) -> object:
        # TOML has no null: "" turns these off, and so does "none" for a model name.
        if isinstance(value, str):
            text = value.strip()
            if not text or (info.field_name != "realtime_greeting" and text.lower() == "none"):
                return None
        return value

    @field_validator("realtime_noise_reduction", mode="before")
    @classmethod
    def _check_noise_reduction(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip().lower()
            if text in ("", "none"):
                return None
            if text not in ("near_field", "far_field"):
                raise ValueError(f"must be 'near_field', 'far_field' or 'none' (got {value!r})")
            return text
        return value

    @field_validator("realtime_transcription_model")
    @classmethod
    def _check_transcription_model(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(f"must be a model name or 'none' (got {value!r})")
        return value

    @field_validator("realtime_append_ms")
    @classmethod
    def _check_append_ms(cls, value: int) -> int:
        if value not in (20, 40):
            raise ValueError(f"must be 20 or 40 (got {value})")
        return value

    @field_validator("realtime_tool_timeout", "realtime_open_timeout")
    @classmethod
    def _check_model_timeout(cls, value: float) -> float:
        if not (math.isfinite(value) and 0 < value <= 60):
            raise ValueError(f"must be more than 0 and at most 60 seconds (got {value})")
        return value

    @field_validator("registrar", "outbound_proxy")
    @classmethod
    def _check_sip_uri(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        try:
            uri = SipUri.parse(value)
        except RemoteProtocolError as exc:
            raise ValueError(f"not a SIP URI: {exc.reason}") from None
        if not uri.is_sip:
            raise ValueError(f"must be a sip: or sips: URI (got {value!r})")
        return value

    @field_validator("registrar_expires")
    @classmethod
    def _check_registrar_expires(cls, value: int) -> int:
        if not 60 <= value <= 86400:
            raise ValueError(f"must be between 60 and 86400 seconds (got {value})")
        return value

    @field_validator("auth_users")
    @classmethod
    def _check_auth_users(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        parse_auth_users(value.get_secret_value())
        return value

    @field_validator("allow_cidrs", "rate_limit_exempt", mode="before")
    @classmethod
    def _check_allow_cidrs(cls, value: Any) -> tuple[str, ...]:
        return parse_cidrs(value)

    @field_validator("numbers", mode="before")
    @classmethod
    def _check_numbers(cls, value: Any) -> tuple[str, ...]:
        return parse_numbers(value)

    @field_validator("allow_preset")
    @classmethod
    def _check_allow_preset(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        preset_path(value)  # ValueError for an unknown preset, FileNotFoundError if missing
        return value.strip().lower()

    @field_validator("rate_limit", "max_new_calls_per_second")
    @classmethod
    def _check_rate(cls, value: float) -> float:
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"must be a number >= 0 (got {value})")
        return value

    @field_validator("rate_burst")
    @classmethod
    def _check_burst(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1 (got {value})")
        return value

    @field_validator("transfer_target", "fallback_transfer_target")
    @classmethod
    def _check_transfer_target(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not _is_transfer_target(value):
            raise ValueError(
                f"must be a sip:, sips: or tel: URI or a phone number (got {value!r})"
            )
        return value

    @field_validator("model_max_reconnects")
    @classmethod
    def _check_reconnects(cls, value: int) -> int:
        return _check_range(value, 0, 10)

    @field_validator("recordings_dir", mode="before")
    @classmethod
    def _empty_dir_is_off(cls, value: object) -> object:
        # TOML has no null: "" turns recording off.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("recording_max_mb")
    @classmethod
    def _check_recording_max_mb(cls, value: float) -> float:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"must be a number of megabytes > 0 (got {value})")
        return value


def _check_range(value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ValueError(f"must be between {low} and {high} (got {value})")
    return value


def _is_transfer_target(value: str) -> bool:
    """A ``sip:``/``sips:`` URI with a host, a ``tel:`` URI, or a bare phone number."""
    if _PHONE_NUMBER.match(value):
        return True
    try:
        uri = SipUri.parse(value)
    except RemoteProtocolError:
        return False
    if uri.is_sip:
        return bool(uri.host) and _is_host(uri.host)
    number = (uri.opaque or "").split(";")[0]
    return uri.scheme == "tel" and bool(_PHONE_NUMBER.match(number))


class _TomlFilesSource(PydanticBaseSettingsSource):
    """Settings from TOML files, top-level keys named like the fields; unknown keys are errors."""

    def __init__(self, settings_cls: type[BaseSettings], paths: Sequence[Path]) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        for path in paths:
            self._data.update(_read_config_file(path, settings_cls))

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _read_config_file(path: Path, settings_cls: type[BaseSettings]) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {_one_line(str(exc))}") from None
    for key in data:
        if key not in settings_cls.model_fields:
            raise ConfigError(f"{path}: unknown setting {key!r}")
    return data


def _one_line(text: str) -> str:
    return " ".join(text.split())


def env_name(field_name: str) -> str:
    """The environment variable that sets a field (a name that already is one is kept)."""
    if field_name.startswith(ENV_PREFIX):  # an alias such as SIPAGENT_DATABASE_URL
        return field_name
    return _OPENAI_VARIABLES.get(field_name) or ENV_PREFIX + field_name.upper()


_TYPE_MESSAGES = {
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "string_type": "must be text",
}


def _describe(error: ErrorDetails) -> tuple[str, str]:
    """(environment variable name, reason) of one pydantic error."""
    loc = str(error["loc"][0]) if error["loc"] else ""
    field = loc.lower() if loc.lower() in _OPENAI_VARIABLES else loc
    context = error.get("ctx") or {}
    if not loc and error["type"] == "value_error":
        # A check across settings names the one to fix: "field: reason".
        name, _, reason = str(context.get("error", error["msg"])).partition(": ")
        return env_name(name), _one_line(reason)
    if error["type"] == "value_error":
        return env_name(field), _one_line(str(context.get("error", error["msg"])))
    if error["type"] == "literal_error":
        reason = f"must be {context.get('expected', 'one of the allowed values')}"
    else:
        message = error["msg"]
        reason = _TYPE_MESSAGES.get(error["type"], message[:1].lower() + message[1:])
    if field != "openai_api_key":  # never echo a secret
        shown = repr(error["input"])
        reason += f" (got {shown if len(shown) <= 80 else shown[:77] + '...'})"
    return env_name(field), _one_line(reason)


def _config_error(exc: ValidationError) -> ConfigError:
    # A default computed from other fields is not computed once one of them failed; that
    # follow-up error says nothing about the user's input.
    errors = [error for error in exc.errors() if error["type"] != "default_factory_not_called"]
    described = [_describe(error) for error in errors or exc.errors()]
    message = "; ".join(f"{name}: {reason}" for name, reason in described)
    return ConfigError(message, described[0][0] if described else None)


def load_settings(config_path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from all sources; raise ConfigError naming the first bad setting.

    ``config_path`` replaces the default ``config/*.toml`` files. ``overrides`` (field names,
    e.g. ``sip_port=5070`` from the command line) win over everything; a None value means
    "not given" and is skipped.
    """
    for name in overrides:
        if name not in Settings.model_fields:
            raise ConfigError(f"unknown setting {name!r}")
    values = {name: value for name, value in overrides.items() if value is not None}
    token = _config_files.set(None if config_path is None else (Path(config_path),))
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise _config_error(exc) from None
    finally:
        _config_files.reset(token)


def parse_auth_users(text: str) -> dict[str, str]:
    """``"alice:pw,bob:pw"`` → ``{"alice": "pw", "bob": "pw"}`` (ValueError when malformed)."""
    users: dict[str, str] = {}
    for item in text.split(","):
        name, sep, password = item.strip().partition(":")
        if not sep or not name or not password:
            raise ValueError("must be user:password pairs separated by commas")
        users[name] = password
    return users
