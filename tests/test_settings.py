import pytest

from shared.settings import SettingsError, load_settings


def test_defaults_are_embedded_sqlite_with_secure_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("KEYTURN_DATA_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.embedded and settings.secure_mode
    assert settings.effective_database_url == f"sqlite:///{tmp_path.resolve()}/keyturn.db"


@pytest.mark.parametrize("name,value", [
    ("KEYTURN_SECURE_MODE", "maybe"),
    ("KEYTURN_DATABASE_URL", "mysql://x/y"),
    ("KEYTURN_BROKER_URL", "redis://localhost"),
    ("KEYTURN_WORKER_THREADS", "0"),
])
def test_a_bad_setting_is_named_in_one_line(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(name + ":") and "\n" not in message


def test_config_file_is_read_and_environment_wins(tmp_path, monkeypatch):
    config = tmp_path / "keyturn.toml"
    config.write_text('secure_mode = false\nbroker_url = "amqp://guest:guest@127.0.0.1:5672/"\n'
                      'worker_threads = 3\n')
    monkeypatch.setenv("KEYTURN_CONFIG", str(config))
    monkeypatch.setenv("KEYTURN_WORKER_THREADS", "5")
    settings = load_settings()
    assert settings.secure_mode is False
    assert settings.broker_url.startswith("amqp://")
    assert settings.worker_threads == 5


def test_missing_config_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("KEYTURN_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(SettingsError, match="KEYTURN_CONFIG"):
        load_settings()
