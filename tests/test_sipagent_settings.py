"""Tests for sipagent.settings: sources, precedence and one-line errors."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pydantic
import pytest

from sipagent.settings import ConfigError, Settings, default_config_files, env_name, load_settings

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "sipagent.example.toml"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No SIPAGENT_*/OPENAI_* from the outside, and an empty working directory."""
    for name in list(os.environ):
        if name.upper().startswith(("SIPAGENT_", "OPENAI_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    settings = load_settings()
    assert settings.sip_host == "127.0.0.1"
    assert settings.sip_port == 5060
    assert settings.public_host is None
    assert settings.effective_public_host == "127.0.0.1"
    assert (settings.rtp_port_min, settings.rtp_port_max) == (10000, 20000)
    assert (settings.admin_host, settings.admin_port) == ("127.0.0.1", 8080)
    assert settings.model == "echo"
    assert settings.openai_api_key is None
    assert settings.ring_ms == 0
    assert settings.max_calls == 200
    assert settings.rtp_inactivity_timeout == 30.0
    assert settings.rtp_hold_inactivity_timeout == 3600.0
    assert settings.drain_timeout == 5.0
    assert settings.user_agent == "sipagent/0.1"
    assert settings.database_url == "sqlite:///data/sipagent.sqlite3"
    assert settings.log_level == "INFO"
    assert settings.openai_base_url is None
    assert settings.realtime_model == "gpt-realtime"
    assert settings.realtime_greet_on == "media"
    assert settings.realtime_append_ms == 40
    assert settings.realtime_tool_timeout == 5.0
    assert settings.realtime_open_timeout == 5.0
    assert settings.fallback_transfer_target is None
    assert settings.model_max_reconnects == 1


def test_realtime_defaults_are_the_bridges() -> None:
    """Settings repeat RealtimeConfig's defaults (to load without the SDK): keep them equal."""
    from bridge.openai_realtime import config_from_settings
    from bridge.realtime_config import RealtimeConfig

    settings = load_settings()
    mapped = [name for name in RealtimeConfig.__dataclass_fields__
              if f"realtime_{name}" in Settings.model_fields]
    assert len(mapped) == 12
    assert config_from_settings(settings) == RealtimeConfig()


def test_realtime_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPAGENT_REALTIME_VOICE", "cedar")
    monkeypatch.setenv("SIPAGENT_REALTIME_TURN_DETECTION", "semantic_vad")
    monkeypatch.setenv("SIPAGENT_REALTIME_EAGERNESS", "low")
    monkeypatch.setenv("SIPAGENT_REALTIME_NOISE_REDUCTION", "None")
    monkeypatch.setenv("SIPAGENT_REALTIME_TRANSCRIPTION_MODEL", "none")
    monkeypatch.setenv("SIPAGENT_REALTIME_AUDIO_FORMAT", "pcm")
    monkeypatch.setenv("SIPAGENT_REALTIME_APPEND_MS", "20")
    monkeypatch.setenv("SIPAGENT_REALTIME_TOOL_TIMEOUT", "2.5")
    monkeypatch.setenv("SIPAGENT_FALLBACK_TRANSFER_TARGET", " sip:operator@pbx.example.com ")
    monkeypatch.setenv("SIPAGENT_MODEL_MAX_RECONNECTS", "0")
    settings = load_settings()
    assert settings.realtime_voice == "cedar"
    assert settings.realtime_turn_detection == "semantic_vad"
    assert settings.realtime_eagerness == "low"
    assert settings.realtime_noise_reduction is None
    assert settings.realtime_transcription_model is None
    assert settings.realtime_audio_format == "pcm"
    assert settings.realtime_append_ms == 20
    assert settings.realtime_tool_timeout == 2.5
    assert settings.fallback_transfer_target == "sip:operator@pbx.example.com"
    assert settings.model_max_reconnects == 0


def test_empty_greeting_in_toml_means_the_caller_speaks_first(tmp_path: Path) -> None:
    write(tmp_path / "config" / "sipagent.toml", 'realtime_greeting = ""\n')
    assert load_settings().realtime_greeting is None


@pytest.mark.parametrize(
    "target", ["sip:operator@pbx.example.com", "sips:ops@10.0.0.5:5061", "tel:+15551234567",
               "+15551234567", "2000"]
)
def test_transfer_targets(target: str) -> None:
    assert load_settings(fallback_transfer_target=target).fallback_transfer_target == target


def test_openai_base_url_from_openai_variable_and_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / ".env", "OPENAI_BASE_URL=http://127.0.0.1:9/v1\n")
    assert load_settings().openai_base_url == "http://127.0.0.1:9/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "https://proxy.example.com/v1")
    assert load_settings().openai_base_url == "https://proxy.example.com/v1"
    assert load_settings(openai_base_url="http://other/v1").openai_base_url == "http://other/v1"


def test_database_url_from_plain_database_url_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://agent@db.example.com/calls")
    assert load_settings().database_url == "postgresql://agent@db.example.com/calls"
    # The product's own variable wins when both are set.
    monkeypatch.setenv("SIPAGENT_DATABASE_URL", "sqlite:///data/other.sqlite3")
    assert load_settings().database_url == "sqlite:///data/other.sqlite3"
    monkeypatch.delenv("SIPAGENT_DATABASE_URL")
    monkeypatch.setenv("DATABASE_URL", "calls.db")
    with pytest.raises(ConfigError, match=r"^SIPAGENT_DATABASE_URL: must be a URL"):
        load_settings()


def test_openai_model_is_created_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge import create_model
    from bridge.openai_realtime import OpenAIRealtimeModel

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-settings")
    monkeypatch.setenv("SIPAGENT_MODEL", "openai")
    monkeypatch.setenv("SIPAGENT_REALTIME_VOICE", "cedar")
    monkeypatch.setenv("SIPAGENT_REALTIME_OPEN_TIMEOUT", "1.5")
    settings = load_settings(openai_base_url="http://127.0.0.1:9/v1")
    assert settings.model == "openai"
    model = create_model(settings.model, settings)
    assert isinstance(model, OpenAIRealtimeModel)
    assert model.config.voice == "cedar"
    assert model._open_timeout == 1.5
    assert model._client_args["base_url"] == "http://127.0.0.1:9/v1"
    assert model._client_args["api_key"] == "sk-test-settings"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPAGENT_SIP_HOST", "0.0.0.0")
    monkeypatch.setenv("SIPAGENT_SIP_PORT", "5070")
    monkeypatch.setenv("SIPAGENT_PUBLIC_HOST", "sip.example.com")
    monkeypatch.setenv("SIPAGENT_RTP_PORT_MIN", "30000")
    monkeypatch.setenv("SIPAGENT_RTP_PORT_MAX", "30010")
    monkeypatch.setenv("SIPAGENT_ADMIN_HOST", "::1")
    monkeypatch.setenv("SIPAGENT_RING_MS", "1500")
    monkeypatch.setenv("SIPAGENT_MAX_CALLS", "5")
    monkeypatch.setenv("SIPAGENT_RTP_INACTIVITY_TIMEOUT", "12.5")
    monkeypatch.setenv("SIPAGENT_LOG_LEVEL", "debug")
    settings = load_settings()
    assert settings.sip_host == "0.0.0.0"
    assert settings.sip_port == 5070
    assert settings.effective_public_host == "sip.example.com"
    assert (settings.rtp_port_min, settings.rtp_port_max) == (30000, 30010)
    assert settings.admin_host == "::1"
    assert settings.ring_ms == 1500
    assert settings.max_calls == 5
    assert settings.rtp_inactivity_timeout == 12.5
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::"])
def test_wildcard_sip_host_needs_public_host(
    monkeypatch: pytest.MonkeyPatch, wildcard: str
) -> None:
    monkeypatch.setenv("SIPAGENT_SIP_HOST", wildcard)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == (
        f"SIPAGENT_PUBLIC_HOST: must be set when SIPAGENT_SIP_HOST is {wildcard} "
        "(peers cannot send to a wildcard address)"
    )
    assert load_settings(public_host="192.0.2.10").effective_public_host == "192.0.2.10"


def test_empty_environment_variable_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPAGENT_PUBLIC_HOST", "")
    monkeypatch.setenv("OPENAI_API_KEY", "")
    settings = load_settings()
    assert settings.public_host is None
    assert settings.model == "echo"


def test_default_config_files_are_read_in_name_order(tmp_path: Path) -> None:
    write(tmp_path / "config" / "10-base.toml", 'sip_port = 5070\nuser_agent = "base"\n')
    write(tmp_path / "config" / "20-site.toml", "sip_port = 5080\n")
    # The example file is documentation: it is never read, even when it is broken.
    write(tmp_path / "config" / "sipagent.example.toml", "sip_port = [not toml\n")
    assert default_config_files() == (
        Path("config/10-base.toml"),
        Path("config/20-site.toml"),
    )
    settings = load_settings()
    assert settings.sip_port == 5080
    assert settings.user_agent == "base"


def test_explicit_config_replaces_default_files(tmp_path: Path) -> None:
    write(tmp_path / "config" / "sipagent.toml", "sip_port = 5070\nmax_calls = 7\n")
    explicit = write(tmp_path / "elsewhere" / "prod.toml", "sip_port = 5090\n")
    settings = load_settings(str(explicit))
    assert settings.sip_port == 5090
    assert settings.max_calls == 200


def test_toml_values_of_every_type(tmp_path: Path) -> None:
    write(
        tmp_path / "config" / "sipagent.toml",
        'public_host = "198.51.100.7"\nrtp_inactivity_timeout = 10\n'
        'database_url = "postgresql://db/sipagent"\nmodel = "echo"\n',
    )
    settings = load_settings()
    assert settings.effective_public_host == "198.51.100.7"
    assert settings.rtp_inactivity_timeout == 10.0
    assert settings.database_url == "postgresql://db/sipagent"


def test_precedence_env_over_dotenv_over_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "config" / "sipagent.toml", "sip_port = 5001\nring_ms = 1\nmax_calls = 1\n")
    write(tmp_path / ".env", "SIPAGENT_SIP_PORT=5002\nSIPAGENT_RING_MS=2\nUNRELATED=1\n")
    monkeypatch.setenv("SIPAGENT_SIP_PORT", "5003")
    settings = load_settings()
    assert settings.sip_port == 5003  # environment
    assert settings.ring_ms == 2  # .env
    assert settings.max_calls == 1  # TOML
    monkeypatch.delenv("SIPAGENT_SIP_PORT")
    assert load_settings().sip_port == 5002
    (tmp_path / ".env").unlink()
    assert load_settings().sip_port == 5001


def test_overrides_win_and_none_means_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPAGENT_SIP_PORT", "5003")
    monkeypatch.setenv("SIPAGENT_ADMIN_PORT", "9000")
    settings = load_settings(sip_port=5004, admin_port=None)
    assert settings.sip_port == 5004
    assert settings.admin_port == 9000


def test_unknown_override_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'sip_prot'"):
        load_settings(sip_prot=5070)


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(pydantic.ValidationError):
        settings.sip_port = 1


BAD_SETTINGS = [
    ("SIPAGENT_SIP_PORT", "70000", "must be between 1 and 65535 (got 70000)"),
    ("SIPAGENT_SIP_PORT", "0", "must be between 1 and 65535 (got 0)"),
    ("SIPAGENT_SIP_PORT", "abc", "must be an integer (got 'abc')"),
    ("SIPAGENT_ADMIN_PORT", "65536", "must be between 1 and 65535 (got 65536)"),
    ("SIPAGENT_SIP_HOST", "not a host", "must be an IP address or hostname (got 'not a host')"),
    (
        "SIPAGENT_PUBLIC_HOST",
        "-bad-.example",
        "must be an IP address or hostname (got '-bad-.example')",
    ),
    ("SIPAGENT_PUBLIC_HOST", "0.0.0.0", "must not be a wildcard address (got '0.0.0.0')"),
    ("SIPAGENT_ADMIN_HOST", "999.1.1.1", "must be an IP address or hostname (got '999.1.1.1')"),
    ("SIPAGENT_RTP_PORT_MIN", "10001", "must be even (got 10001)"),
    ("SIPAGENT_RTP_PORT_MIN", "80", "must be between 1024 and 65535 (got 80)"),
    ("SIPAGENT_RTP_PORT_MAX", "70000", "must be between 1024 and 65535 (got 70000)"),
    ("SIPAGENT_RTP_PORT_MAX", "20001", "must be even (got 20001)"),
    (
        "SIPAGENT_RTP_PORT_MAX",
        "9000",
        "must be at least SIPAGENT_RTP_PORT_MIN + 2 = 10002 (got 9000)",
    ),
    (
        "SIPAGENT_RTP_PORT_MAX",
        "10000",
        "must be at least SIPAGENT_RTP_PORT_MIN + 2 = 10002 (got 10000)",
    ),
    ("SIPAGENT_MODEL", "gpt-4o", "must be 'echo' or 'openai' (got 'gpt-4o')"),
    ("SIPAGENT_MODEL", "openai", "'openai' needs OPENAI_API_KEY (set it, or use 'echo')"),
    ("SIPAGENT_RING_MS", "-1", "must be between 0 and 60000 (got -1)"),
    ("SIPAGENT_RING_MS", "60001", "must be between 0 and 60000 (got 60001)"),
    ("SIPAGENT_MAX_CALLS", "0", "must be at least 1 (got 0)"),
    ("SIPAGENT_RTP_INACTIVITY_TIMEOUT", "0", "must be a positive number of seconds (got 0.0)"),
    ("SIPAGENT_RTP_INACTIVITY_TIMEOUT", "nan", "must be a positive number of seconds (got nan)"),
    ("SIPAGENT_RTP_INACTIVITY_TIMEOUT", "soon", "must be a number (got 'soon')"),
    (
        "SIPAGENT_RTP_HOLD_INACTIVITY_TIMEOUT",
        "-5",
        "must be a positive number of seconds (got -5.0)",
    ),
    ("SIPAGENT_DRAIN_TIMEOUT", "-1", "must be between 0 and 3600 seconds (got -1.0)"),
    ("SIPAGENT_USER_AGENT", "bad\tagent", "must be non-empty printable text (got 'bad\\tagent')"),
    (
        "SIPAGENT_DATABASE_URL",
        "data.db",
        "must be a URL such as sqlite:///data/sipagent.sqlite3 (got 'data.db')",
    ),
    (
        "SIPAGENT_LOG_LEVEL",
        "loud",
        "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL (got 'loud')",
    ),
    (
        "OPENAI_BASE_URL",
        "localhost:8000",
        "must be an http(s):// or ws(s):// URL (got 'localhost:8000')",
    ),
    ("SIPAGENT_REALTIME_MODEL", "gpt 4", "must be a name without spaces (got 'gpt 4')"),
    ("SIPAGENT_REALTIME_VOICE", "?", "must be a name without spaces (got '?')"),
    ("SIPAGENT_REALTIME_INSTRUCTIONS", "  ", "must not be empty"),
    ("SIPAGENT_REALTIME_GREET_ON", "now", "must be 'ready' or 'media' (got 'now')"),
    (
        "SIPAGENT_REALTIME_TURN_DETECTION",
        "vad",
        "must be 'server_vad' or 'semantic_vad' (got 'vad')",
    ),
    ("SIPAGENT_REALTIME_EAGERNESS", "max", "must be 'low', 'medium', 'high' or 'auto' (got 'max')"),
    (
        "SIPAGENT_REALTIME_NOISE_REDUCTION",
        "loud",
        "must be 'near_field', 'far_field' or 'none' (got 'loud')",
    ),
    (
        "SIPAGENT_REALTIME_TRANSCRIPTION_MODEL",
        "whisper 1",
        "must be a model name or 'none' (got 'whisper 1')",
    ),
    ("SIPAGENT_REALTIME_AUDIO_FORMAT", "opus", "must be 'g711' or 'pcm' (got 'opus')"),
    ("SIPAGENT_REALTIME_APPEND_MS", "30", "must be 20 or 40 (got 30)"),
    ("SIPAGENT_REALTIME_APPEND_MS", "x", "must be an integer (got 'x')"),
    (
        "SIPAGENT_REALTIME_TOOL_TIMEOUT",
        "0",
        "must be more than 0 and at most 60 seconds (got 0.0)",
    ),
    (
        "SIPAGENT_REALTIME_OPEN_TIMEOUT",
        "inf",
        "must be more than 0 and at most 60 seconds (got inf)",
    ),
    (
        "SIPAGENT_FALLBACK_TRANSFER_TARGET",
        "operator",
        "must be a sip:, sips: or tel: URI or a phone number (got 'operator')",
    ),
    (
        "SIPAGENT_FALLBACK_TRANSFER_TARGET",
        "sip:ops@bad host",
        "must be a sip:, sips: or tel: URI or a phone number (got 'sip:ops@bad host')",
    ),
    ("SIPAGENT_MODEL_MAX_RECONNECTS", "11", "must be between 0 and 10 (got 11)"),
    ("SIPAGENT_MODEL_MAX_RECONNECTS", "-1", "must be between 0 and 10 (got -1)"),
]


@pytest.mark.parametrize(("variable", "value", "reason"), BAD_SETTINGS)
def test_bad_setting_gives_one_line_message(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == f"{variable}: {reason}"
    assert caught.value.setting == variable
    assert "\n" not in str(caught.value)


def test_bad_toml_value_is_named_by_its_environment_variable(tmp_path: Path) -> None:
    write(tmp_path / "config" / "sipagent.toml", "sip_port = 70000\n")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == "SIPAGENT_SIP_PORT: must be between 1 and 65535 (got 70000)"


def test_several_bad_settings_stay_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPAGENT_SIP_PORT", "70000")
    monkeypatch.setenv("SIPAGENT_MAX_CALLS", "0")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == (
        "SIPAGENT_SIP_PORT: must be between 1 and 65535 (got 70000); "
        "SIPAGENT_MAX_CALLS: must be at least 1 (got 0)"
    )
    assert caught.value.setting == "SIPAGENT_SIP_PORT"


def test_bad_override_is_named_like_the_environment_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(user_agent="a\r\nX-Injected: 1")
    assert str(caught.value).startswith("SIPAGENT_USER_AGENT: must be non-empty printable text")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sip_port = [1,\n", r"^config/sipagent\.toml: invalid TOML: .+"),
        ("sip_prot = 5070\n", r"^config/sipagent\.toml: unknown setting 'sip_prot'$"),
        ("[sipagent]\nsip_port = 5070\n", r"^config/sipagent\.toml: unknown setting 'sipagent'$"),
    ],
)
def test_bad_config_file(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path / "config" / "sipagent.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert re.match(message, str(caught.value))
    assert "\n" not in str(caught.value)


def test_missing_explicit_config_file() -> None:
    with pytest.raises(ConfigError, match=r"^missing\.toml: config file not found$"):
        load_settings("missing.toml")


def test_model_default_depends_on_openai_api_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings().model == "echo"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    settings = load_settings()
    assert settings.model == "openai"
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-test-123"
    assert "sk-test-123" not in repr(settings)
    monkeypatch.setenv("SIPAGENT_MODEL", "echo")
    assert load_settings().model == "echo"


def test_openai_api_key_from_dotenv(tmp_path: Path) -> None:
    write(tmp_path / ".env", "OPENAI_API_KEY=sk-from-dotenv\n")
    assert load_settings().model == "openai"


def test_model_name_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("SIPAGENT_MODEL", "OpenAI")
    assert load_settings().model == "openai"


def test_secret_is_never_echoed_in_errors(tmp_path: Path) -> None:
    write(tmp_path / "config" / "sipagent.toml", "openai_api_key = 12345\n")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith("OPENAI_API_KEY: ")
    assert "12345" not in str(caught.value)


def test_env_name() -> None:
    assert env_name("rtp_port_min") == "SIPAGENT_RTP_PORT_MIN"
    assert env_name("openai_api_key") == "OPENAI_API_KEY"
    assert env_name("openai_base_url") == "OPENAI_BASE_URL"
    assert env_name("realtime_voice") == "SIPAGENT_REALTIME_VOICE"


def test_example_config_documents_every_setting_with_its_default(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assignments = [
        line.removeprefix("# ") for line in text.splitlines() if re.match(r"# [a-z_]+ = ", line)
    ]
    assert set(tomllib.loads("\n".join(assignments))) == set(Settings.model_fields)
    # Uncommented, the example minus its placeholders loads and gives the defaults.
    placeholders = (
        "public_host", "openai_api_key", "openai_base_url", "fallback_transfer_target",
        "transfer_target", "registrar", "outbound_proxy", "tls_",
    )
    defaults = [line for line in assignments if not line.startswith(placeholders)]
    config = write(tmp_path / "example.toml", "\n".join(defaults))
    assert load_settings(str(config)) == load_settings()


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r": cannot read config file \(.+\)$"):
        load_settings(str(tmp_path))


def test_admin_token_is_secret_and_long_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPAGENT_ADMIN_TOKEN", "0123456789abcdef")
    settings = load_settings()
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "0123456789abcdef"
    assert "0123456789abcdef" not in repr(settings)
    monkeypatch.setenv("SIPAGENT_ADMIN_TOKEN", "short")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("SIPAGENT_ADMIN_TOKEN: must be at least 16 characters")
    assert "\n" not in str(info.value)
