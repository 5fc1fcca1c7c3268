"""Environment handling an operator meets: Kubernetes service links, typed env values, labels."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from luna_sender.config import ConfigError, load_settings
from luna_sender.runtime.metrics import OWN_LABELS, Metrics

from .helpers import REPO, Service, run_cli

# What Kubernetes injects into every pod of a namespace holding a Service named luna-sender
# (port named "http") and one named luna-sender-redis.
SERVICE_LINKS = {
    "LUNA_SENDER_PORT": "tcp://10.96.0.12:5080",
    "LUNA_SENDER_PORT_5080_TCP": "tcp://10.96.0.12:5080",
    "LUNA_SENDER_PORT_5080_TCP_ADDR": "10.96.0.12",
    "LUNA_SENDER_PORT_5080_TCP_PORT": "5080",
    "LUNA_SENDER_PORT_5080_TCP_PROTO": "tcp",
    "LUNA_SENDER_SERVICE_HOST": "10.96.0.12",
    "LUNA_SENDER_SERVICE_PORT": "5080",
    "LUNA_SENDER_SERVICE_PORT_HTTP": "5080",
    "LUNA_SENDER_REDIS_PORT": "udp://10.96.0.13:6379",
    "LUNA_SENDER_REDIS_PORT_6379_UDP_ADDR": "10.96.0.13",
    "LUNA_SENDER_REDIS_SERVICE_HOST": "10.96.0.13",
}


def test_service_links_are_ignored_with_one_warning_by_check_config() -> None:
    result = run_cli("check-config", env=SERVICE_LINKS)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["port"] == 5080  # the tcp:// value did not become the port
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "warning" in lines[0] and "enableServiceLinks" in lines[0]
    assert all(name in lines[0] for name in SERVICE_LINKS)


def test_service_runs_beside_service_links_and_logs_one_warning() -> None:
    svc = Service(env={**SERVICE_LINKS, "LUNA_SENDER_CHANNEL_PREFIX": "2024"})
    try:
        with urllib.request.urlopen(svc.url + "/config", timeout=5) as r:
            assert json.loads(r.read())["channel_prefix"] == "2024"
        deadline = time.monotonic() + 10
        while "luna-sender ready" not in svc.log():
            assert time.monotonic() < deadline, svc.log()
            time.sleep(0.05)
        warnings = [line for line in svc.log().splitlines() if " WARNING " in line]
        assert len(warnings) == 1, svc.log()
        assert "LUNA_SENDER_PORT_5080_TCP_ADDR" in warnings[0]
    finally:
        assert svc.terminate() == 0


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"LUNA_SENDER_WS__HEARTBEET": "3"}, "ws.heartbeet"),
        ({"LUNA_SENDER_PORT": "80a"}, "port"),
        ({"LUNA_SENDER_HEARTBEAT": "3"}, "heartbeat"),
        ({"LUNA_SENDER_REDIS_URL": "tcp://10.0.0.1:6379"}, "redis_url"),
    ],
)
def test_real_typos_still_exit_2_beside_service_links(env: dict[str, str], key: str) -> None:
    result = run_cli("check-config", env={**SERVICE_LINKS, **env})
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "invalid setting" in line]
    assert len(errors) == 1 and f"'{key}'" in errors[0], result.stderr


BIG = "99999999999999999999"  # beyond 64 bits


@pytest.mark.parametrize(
    ("name", "raw", "key"),
    [
        # gt=0 let inf through; the heartbeat's timer then failed every /ws with a 500.
        ("WS__HEARTBEAT", "inf", "ws.heartbeat"),
        ("WS__HEARTBEAT", "-inf", "ws.heartbeat"),
        ("WS__HEARTBEAT", "nan", "ws.heartbeat"),
        ("WS__HEARTBEAT", "Infinity", "ws.heartbeat"),
        # Found by an outside tester, each accepted at start and then failing requests:
        ("WS__HEARTBEAT", "1e-9", "ws.heartbeat"),  # every socket dropped 1 ms after its 101
        ("WS__HEARTBEAT", "0.001", "ws.heartbeat"),
        ("WS__SOCKET_SEND_BUFFER", "2147483648", "ws.socket_send_buffer"),  # /ws 500
        ("LIMITS__HTTP_HEADERS_MAX", BIG, "limits.http_headers_max"),  # every request hung
        ("LIMITS__HTTP_HEADER_MAX_BYTES", BIG, "limits.http_header_max_bytes"),
        ("LIMITS__LIST_FILTER_MAX_ITEMS", BIG, "limits.list_filter_max_items"),
        ("HISTORY__TTL", "1e308", "history.ttl"),  # a traceback at start (exit 1)
        ("HISTORY__DEDUPE", "1e308", "history.dedupe"),
        ("HISTORY__META_TTL", "1e308", "history.meta_ttl"),
        ("HISTORY__SIZE", BIG, "history.size"),
        ("BUS_PUBLISH_TIMEOUT", "1e-9", "bus_publish_timeout"),  # every publish 503
        ("WS__FD_RESERVE", "99999999999", "ws.fd_reserve"),  # every /ws 503
    ],
)
def test_a_value_no_request_could_work_with_is_refused_at_start(
    name: str, raw: str, key: str
) -> None:
    result = run_cli("check-config", env={f"LUNA_SENDER_{name}": raw})
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "invalid setting" in line]
    assert len(errors) == 1 and f"'{key}'" in errors[0], result.stderr


def test_a_reserve_that_leaves_no_descriptor_for_websockets_is_refused_at_start() -> None:
    """Within its bound but at the process's open-file limit: no socket could ever open."""
    import resource

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    result = run_cli("--port", "0", env={"LUNA_SENDER_WS__FD_RESERVE": "300"}, preexec_fn=low_limit)
    assert result.returncode == 2, result.stderr
    assert "invalid setting 'ws.fd_reserve': 300 leaves no file descriptor" in result.stderr
    assert "open-file limit 256" in result.stderr


@pytest.mark.parametrize(
    ("name", "raw", "key", "expected"),
    [
        ("CHANNEL_PREFIX", "123", "channel_prefix", "123"),
        ("CHANNEL_PREFIX", "on", "channel_prefix", "on"),
        ("CHANNEL_PREFIX", "2024", "channel_prefix", "2024"),
        ("CHANNEL_PREFIX", "1e3", "channel_prefix", "1e3"),
        ("CHANNEL_PREFIX", "null", "channel_prefix", "null"),
        ("CHANNEL_PREFIX", "[a]", "channel_prefix", "[a]"),
        ("GENERAL_CHANNEL", "2024", "general_channel", "2024"),
        ("HOST", "0", "host", "0"),
        ("REDIS_URL", "redis://h:1/0", "redis_url", "redis://h:1/0"),
        ("LOG_LEVEL", "DEBUG", "log_level", "DEBUG"),
        ("PORT", "5081", "port", 5081),
        ("WS__HEARTBEAT", "2.5", "ws.heartbeat", 2.5),
        ("WS__HEARTBEAT", "1e1", "ws.heartbeat", 10.0),
        ("METRICS__ENABLED", "on", "metrics.enabled", True),
        ("METRICS__ENABLED", "off", "metrics.enabled", False),
        ("METRICS__ENABLED", "0", "metrics.enabled", False),
        ("METRICS__ENABLED", "true", "metrics.enabled", True),
        ("API_VERSIONS", "[1, 3]", "api_versions", [1, 3]),
        (
            "METRICS__EXTRA_LABELS",
            "{env: prod, dc: '2024'}",
            "metrics.extra_labels",
            {"env": "prod", "dc": "2024"},
        ),
        ("METRICS__EXTRA_LABELS__ZONE", "2024", "metrics.extra_labels", {"zone": "2024"}),
        ("PLUGINS", "[a.b, c]", "plugins", ["a.b", "c"]),
        # The original's section: its keys are validation aliases, its env paths lower-cased.
        ("INFLUX_MONITORING__TOKEN", "1234", "INFLUX_MONITORING.TOKEN", "1234"),
        ("INFLUX_MONITORING__TOKEN", "1e3", "INFLUX_MONITORING.TOKEN", "1e3"),
        ("INFLUX_MONITORING__ORGANIZATION", "2024", "INFLUX_MONITORING.ORGANIZATION", "2024"),
        ("INFLUX_MONITORING__HOST", "10", "INFLUX_MONITORING.HOST", "10"),
        ("INFLUX_MONITORING__BUCKET", "007", "INFLUX_MONITORING.BUCKET", "007"),
        ("INFLUX_MONITORING__PORT", "8087", "INFLUX_MONITORING.PORT", 8087),
        ("INFLUX_MONITORING__FLUSHING_PERIOD", "2.5", "INFLUX_MONITORING.FLUSHING_PERIOD", 2.5),
        (
            "METRICS__EXTRA_LABELS",
            "{shard: 1, canary: true, ratio: 0.5}",
            "metrics.extra_labels",
            {"shard": "1", "canary": "true", "ratio": "0.5"},
        ),
        ("PLUGIN_SETTINGS__FWD__RETRIES", "5", "plugin_settings", {"fwd": {"retries": 5}}),
    ],
)
def test_env_values_parse_by_the_type_of_their_setting(
    name: str, raw: str, key: str, expected: Any
) -> None:
    settings = load_settings(None, {}, {"LUNA_SENDER_" + name: raw})
    value: Any = settings.model_dump()
    for part in key.split("."):
        value = value[part]
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("name", "raw", "key"),
    [
        ("PORT", "five", "port"),
        ("METRICS__ENABLED", "maybe", "metrics.enabled"),
        ("API_VERSIONS", "1,2", "api_versions"),
    ],
)
def test_env_values_of_the_wrong_type_name_the_key(name: str, raw: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_settings(None, {}, {"LUNA_SENDER_" + name: raw})


def test_string_setting_from_env_reaches_the_real_process() -> None:
    result = run_cli(
        "check-config",
        env={"LUNA_SENDER_CHANNEL_PREFIX": "on", "LUNA_SENDER_GENERAL_CHANNEL": "2024"},
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["channel_prefix"] == "on" and data["general_channel"] == "2024"


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        ("{path: x}", "collides"),
        ("{kind: x}", "collides"),
        ("{le: x}", "collides"),
        ("{pid: x}", "collides"),  # prometheus-client's own label on gauges with --workers
        ("{shard: [1]}", "valid string"),
        ("{shard: null}", "valid string"),
        ("{bad-name: x}", "not a valid Prometheus label name"),
        ("{__reserved: x}", "not a valid Prometheus label name"),
        ('{"zone\\n": x}', "not a valid Prometheus label name"),  # a `$` let a final LF by
    ],
)
def test_colliding_or_invalid_extra_labels_exit_2(labels: str, fragment: str) -> None:
    result = run_cli("check-config", env={"LUNA_SENDER_METRICS__EXTRA_LABELS": labels})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "metrics.extra_labels" in lines[0] and fragment in lines[0]


def test_numbers_in_the_original_section_and_labels_of_a_file_are_text(tmp_path: Any) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "INFLUX_MONITORING:\n  TOKEN: 1234\n  ORGANIZATION: 2024\n  HOST: 10\n"
        "metrics:\n  extra_labels: {shard: 1, canary: false}\n"
    )
    settings = load_settings(path, {}, {})
    section = settings.INFLUX_MONITORING
    assert (section.TOKEN, section.ORGANIZATION, section.HOST) == ("1234", "2024", "10")
    assert settings.metrics.extra_labels == {"shard": "1", "canary": "false"}


def test_numeric_influx_strings_from_env_reach_the_real_process() -> None:
    result = run_cli(
        "check-config",
        env={
            "LUNA_SENDER_INFLUX_MONITORING__ORGANIZATION": "2024",
            "LUNA_SENDER_INFLUX_MONITORING__HOST": "10",
            "LUNA_SENDER_INFLUX_MONITORING__TOKEN": "1234",
        },
    )
    assert result.returncode == 0, result.stderr
    section = json.loads(result.stdout)["INFLUX_MONITORING"]
    assert (section["ORGANIZATION"], section["HOST"]) == ("2024", "10")
    assert section["TOKEN"] != "1234"  # masked, but accepted


def test_own_labels_cover_every_metric() -> None:
    # The collision check is only as good as OWN_LABELS: a new metric label must be listed.
    metrics = Metrics({"env": "prod"})
    declared = {
        name
        for collector in metrics.registry._collector_to_names
        for name in getattr(collector, "_labelnames", ())
    }
    assert declared - {"env"} <= OWN_LABELS
    assert "path" in declared


def test_service_link_warning_lists_the_names_as_a_json_key() -> None:
    svc = Service("--log-format", "json", env=SERVICE_LINKS)
    try:
        deadline = time.monotonic() + 10
        while "luna-sender ready" not in svc.log():
            assert time.monotonic() < deadline, svc.log()
            time.sleep(0.05)
    finally:
        assert svc.terminate() == 0
    records = [json.loads(line) for line in svc.log().splitlines() if line.startswith("{")]
    warnings = [r for r in records if r["level"] == "WARNING"]
    assert len(warnings) == 1 and sorted(warnings[0]["ignored_env"]) == sorted(SERVICE_LINKS)


BAD_BUS_URLS = [
    ("redis://127.0.0.1:99999/0", "Port out of range"),
    ("redis://127.0.0.1:abc/0", "Port could not be cast"),
    ("redis://127.0.0.1:0/0", "port 0"),  # redis-py would have used 6379
    ("redis://127.0.0.1:6379/0?socket_timeout=abc", "socket_timeout"),
    ("redis://127.0.0.1:6379/0?db=abc", "database 'abc'"),
    ("redis://127.0.0.1:6379/abc", "database 'abc'"),  # redis-py would have used database 0
    ("redis+sentinel://127.0.0.1:26379", "master name"),
    ("redis+sentinel://127.0.0.1:26379/main/x", "database 'x'"),
    ("redis+cluster://", "no hosts"),
    ("redis+cluster://127.0.0.1:7000,127.0.0.1:x", "port 'x'"),
    # A re-attack: passed check-config, then a traceback at start or a service that never
    # connected, or an option the backend ignores without a word.
    ("redis://127.0.0.1:6379/0?max_connections=-5", "max_connections"),
    ("redis://127.0.0.1:6379/0?socket_timeout=nan", "socket_timeout 'nan'"),
    ("redis://127.0.0.1:6379/0?socket_timeout=-1", "socket_timeout '-1'"),
    ("unix://", "socket's path"),
    ("unix:///run/redis.sock?db=-1", "database '-1'"),
    ("redis://127.0.0.1:6379/99999999999999999999", "database '9999"),
    ("redis+sentinel://127.0.0.1:26379/main?socket_timeout=abc", "no option 'socket_timeout'"),
    ("redis+sentinel://127.0.0.1:26379/main/0/extra", "path is /<master>[/db]"),
    ("redis+cluster://127.0.0.1:7000?sharded=maybe", "sharded is one of"),
    ("redis+cluster://127.0.0.1:7000/abc", "no path"),
    # Read only at connect: the service started, then answered every healthcheck "not
    # reachable" and never connected (an outside pass).
    ("redis://127.0.0.1:6379/0?protocol=9", "protocol must be either 2 or 3"),
    ("redis://127.0.0.1:6379/0?ssl_cert_reqs=none", "'ssl_cert_reqs' (TLS options need rediss"),
    ("redis://127.0.0.1:6379/0?socket_timout=2", "no option 'socket_timout'"),
    ("rediss://127.0.0.1:6379/0?ssl_cert_reqs=bogus", "Invalid SSL Certificate Requirements"),
    # Passed, then the service never connected (an outside pass): no reply ever read, a TLS
    # context that cannot be built, a retry list redis-py split into letters.
    ("redis://127.0.0.1:6379/0?socket_read_size=0", "socket_read_size '0'"),
    ("redis://127.0.0.1:6379/0?retry_on_error=TimeoutError", "cannot set retry_on_error"),
    (f"rediss://127.0.0.1:6379/0?ssl_ca_certs={REPO / 'README.md'}", "NO_CERTIFICATE"),
    ("rediss://127.0.0.1:6379/0?ssl_ca_data=xyz", "TLS options: SSLError"),
    ("rediss://127.0.0.1:6379/0?ssl_min_version=99", "Unsupported TLS/SSL version"),
    ("rediss://127.0.0.1:6379/0?ssl_ciphers=NOPE", "No cipher can be selected"),
    # Read otherwise than written: redis-py takes the first copy of an option and ?db= over
    # the path (an outside pass).
    ("redis://127.0.0.1:6379/0?socket_timeout=2&socket_timeout=abc", "'socket_timeout' more"),
    ("redis+sentinel://127.0.0.1/main?sentinel_password=a&sentinel_password=b", "more than once"),
    ("redis://127.0.0.1:6379/0?db=1", "two databases: /0 and ?db=1"),
    # A second pass: redis-py's reading differed from the check's and /config's
    ("redis://127.0.0.1:26501#x@127.0.0.2:6390/0", "holds a #"),  # shown .2, connected .1
    ("redis://127.0.0.1:6379/0?password=a#b", "holds a #"),  # the password cut at the "#"
    ("unix://u:a/b@/tmp/redis.sock", "path holds an @"),
    ("redis://", "names no host"),  # redis-py: localhost:6379, whatever the template meant
    ("redis:///0", "names no host"),
    ("unix:/tmp/redis.sock", "scheme://"),
    ("redis://u:p@127.0.0.1:6379/0?password=q", "gives the password twice"),  # q was ignored
    # Accepted, then msgpack and non-UTF-8 messages cut the bus connection (an outside pass)
    ("redis://127.0.0.1:6379/0?decode_responses=true", "decode_responses"),
    ("redis://127.0.0.1:6379/0?encoding=nope", "encoding 'nope'"),
    ("redis://127.0.0.1:6379/0?encoding=cp037", "only utf-8"),  # started, delivered nothing
    # Passed the check, then failed at every connect or was dropped without a word (an outside
    # pass): an option without a value, values Redis or redis-py refuse only when connecting.
    ("redis://127.0.0.1:6379/0?sockettimeout", "no option 'sockettimeout' (it has no value"),
    ("redis://127.0.0.1:6379/0?ssl_cert_reqs=", "no option 'ssl_cert_reqs'"),  # TLS on redis://
    ("redis+sentinel://127.0.0.1:26379/main?sentinel_pasword=", "no option 'sentinel_pasword'"),
    (
        "redis://127.0.0.1:6379/0?driver_info=x",
        "cannot set driver_info: redis-py would take it as text",
    ),
    ("redis://127.0.0.1:6379/0?event_dispatcher=x", "cannot set event_dispatcher"),
    ("redis://127.0.0.1:6379/0?health_check_interval=-1", "health_check_interval '-1'"),
    ("redis://127.0.0.1:6379/0?client_name=a%20b", "client_name 'a b'"),
    ("redis://127.0.0.1:6379/0?max_connections=2", "needs 3 at least"),
    ("redis://127.0.0.1:6379/0?socket_keepalive_options=x", "cannot set socket_keepalive_opti"),
    ("redis://127.0.0.1:6379/0?retry=x", "cannot set retry"),
    ("rediss://127.0.0.1:6379/0?ssl_ca_certs=/nonexistent", "ssl_ca_certs in the bus URL: no such"),
]


@pytest.mark.parametrize(("url", "fragment"), BAD_BUS_URLS)
def test_a_bus_url_its_backend_cannot_read_is_a_config_error(url: str, fragment: str) -> None:
    """The backends read their URL only when the service started: check-config passed these
    and the start died of a traceback, six of them with --workers 2 (an outside pass)."""
    env = {"LUNA_SENDER_REDIS_URL": url}
    entries = (("check-config",), ("--port", "0"), ("--port", "0", "--workers", "2"))
    with ThreadPoolExecutor(len(entries)) as pool:  # three interpreters at once: CI's budget
        results = list(pool.map(lambda args: run_cli(*args, env=env), entries))
    for args, result in zip(entries, results, strict=True):
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert len(lines) == 1 and "redis_url" in lines[0] and fragment in lines[0], lines


@pytest.mark.parametrize(
    "url",
    [
        "redis://u:Zq7/Xv9k@127.0.0.1:6379/0",  # redis-py: "Port could not be cast ... 'Zq7'"
        "redis://u:Zq7#Xv9k@127.0.0.1:6379/0",
        "redis://u:Zq7?Xv9k@127.0.0.1:6379/0",  # "takes no option 'Xv9k@127.0.0.1:6379/0'"
        "redis://u:Zq7?X@127.0.0.1:6379/0",
        "rediss://u:Zq7?ssl_ca_certs=/Xv9k@127.0.0.1/0",  # "no such file '/Xv9k@127.0.0.1/0'"
        "redis+sentinel://u:Zq7/Xv9k@127.0.0.1:26379/main",  # "port 'Zq7'"
        "redis+sentinel://u:Zq7?Xv9k=1@127.0.0.1:26379/main",
        # A second pass: an "&" in a query credential made its rest an option name; a name
        # holding the credential; a "#" that redis-py cuts at (it then connected elsewhere)
        "redis://127.0.0.1:6379/0?password=Zq7&Xv9k",
        "redis+sentinel://127.0.0.1:26379/main?sentinel_password=Zq7&Xv9k",
        "redis://127.0.0.1:6379/0?password:Zq7Xv9k",
        "redis://u9:2024#Zq7Xv9k@127.0.0.1:6379/0",
        "unix://u2:Zq7/Xv9k@/tmp/redis.sock",
    ],
)
def test_a_bus_url_error_never_shows_part_of_the_password(url: str) -> None:
    """A password's unencoded ``/``, ``?`` or ``#`` broke the URL, and the error quoted the
    piece after it as a port, an option or a file: ``check-config`` and the start's one line
    showed part of the password (an outside pass)."""
    result = run_cli("check-config", env={"LUNA_SENDER_REDIS_URL": url})
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert "redis_url" in line and re.search("percent-encode|%23|%2F", line), line
    password = url.split("://", 1)[1].rpartition("@")[0].partition(":")[2]
    password += url.partition("?")[2]
    pieces = re.split(r"[/?#=&:]|ssl_ca_certs|password|sentinel_", password)
    assert [p for p in pieces if len(p) > 2 and p in line] == [], line


def test_an_encrypted_tls_key_without_its_password_is_refused(tmp_path: Any) -> None:
    """OpenSSL asked for the pass phrase on the terminal: check-config and the start hung, and
    ignored SIGTERM until stdin closed (an outside pass)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = tmp_path / "key.pem"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    url = f"rediss://127.0.0.1:6380/0?ssl_keyfile={key}&ssl_certfile={key}"
    result = run_cli("check-config", env={"LUNA_SENDER_REDIS_URL": url})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "ssl_keyfile in the bus URL is encrypted: give ssl_password" in result.stderr


def test_a_percent_encoded_sentinel_master_name_is_decoded() -> None:
    """``my%6Daster`` was asked of the sentinels as written: MasterNotFoundError and a 502 for
    good (an outside pass); redis-py decodes every other part of a URL."""
    from luna_sender.bus.sentinel import master_client

    client = master_client("redis+sentinel://127.0.0.1:26379/my%6Daster/0")
    assert client.connection_pool.service_name == "mymaster"


def test_the_bus_urls_of_the_docs_are_still_read() -> None:
    for url in (
        "redis://user:secret@127.0.0.1:6379/2",
        "rediss://127.0.0.1:6380/3?ssl_cert_reqs=none",
        "unix:///run/redis.sock?db=1",
        "redis://[::1]:6379",
        "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/main/1?sentinel_password=x",
        "rediss+cluster://127.0.0.1:7000,127.0.0.1:7001?sharded=1",
        " redis://127.0.0.1:6379/0 ",  # surrounding blanks are the variable's, not the URL's
        "redis://127.0.0.1:6379/0?socket_timeout=2.5&max_connections=50",
        "redis://127.0.0.1:6379/0?protocol=3&client_name=luna",
        "redis://127.0.0.1:6379/0?health_check_interval=0&max_connections=3",
        # a template's empty variable: redis-py drops the option, as it did before
        "redis://127.0.0.1:6379/0?password=&socket_timeout=",
        "redis+sentinel://127.0.0.1:26379/main?sentinel_password=",
        "rediss://127.0.0.1:6380/0?ssl_cert_reqs=required&ssl_check_hostname=false&lib_name=x",
        "rediss://127.0.0.1:6380/0?ssl_min_version=771&ssl_ciphers=HIGH&socket_read_size=65536",
        "redis+cluster://127.0.0.1:7000/0",  # the one database a Cluster has
        "redis://127.0.0.1:6379/1?db=1",
        "redis+sentinel://[::1]:26379,[::1]/main",
        "redis+cluster://[::1]:7000",
    ):
        result = run_cli("check-config", env={"LUNA_SENDER_REDIS_URL": url})
        assert result.returncode == 0, (url, result.stderr)


def test_port_0_names_the_port_chosen_and_needs_one_worker(tmp_path: Any) -> None:
    """Each --workers process binds for itself: port 0 gave two workers two ports (an outside
    pass), and the log never said which, so a port-0 service could not be found."""
    result = run_cli(
        "--port", "0", "--workers", "2", env={"LUNA_SENDER_REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "fixed port" in lines[0], lines
    log = tmp_path / "svc.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "luna_sender.cli", "--host", "127.0.0.1", "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        deadline = time.monotonic() + 15
        while not (found := re.search(r"ready: listen=127\.0\.0\.1:(\d+) ", log.read_text())):
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.05)
        url = f"http://127.0.0.1:{found.group(1)}/healthcheck"
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
