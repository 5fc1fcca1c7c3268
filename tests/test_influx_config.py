"""The original's INFLUX_MONITORING settings: accepted under its names, shown at /config in its
layout (seed 002 lines 1096-1105), and driving the request-monitoring plugin end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from luna_sender.config import ConfigError, load_settings, plugin_setup

from .conftest import LiveApp
from .helpers import FakeInflux

# seed 002 lines 1096-1105: GET /config of the original, key order included.
ORIGINAL_KEYS = [
    "SEND_DATA_FOR_MONITORING",
    "VERSION",
    "ORGANIZATION",
    "TOKEN",
    "BUCKET",
    "HOST",
    "PORT",
    "USE_SSL",
    "FLUSHING_PERIOD",
]


async def test_config_shows_the_original_section_beside_ours(live_app_factory) -> None:
    app: LiveApp = await live_app_factory(
        INFLUX_MONITORING={"TOKEN": "t0ken-secret", "ORGANIZATION": "ORGANIZATION_NAME"}
    )
    async with app.session.get(app.url("/config")) as resp:
        assert resp.status == 200
        raw = await resp.text()
        body = await resp.json()
    assert "t0ken-secret" not in raw
    assert list(body["INFLUX_MONITORING"]) == ORIGINAL_KEYS
    assert body["INFLUX_MONITORING"] == {
        "SEND_DATA_FOR_MONITORING": 0,
        "VERSION": 2,
        "ORGANIZATION": "ORGANIZATION_NAME",
        "TOKEN": "********",
        "BUCKET": "luna_monitoring",
        "HOST": "127.0.0.1",
        "PORT": 8086,
        "USE_SSL": 0,
        "FLUSHING_PERIOD": 1.0,
    }
    assert {"redis_url", "ws", "limits", "plugins"} <= set(body)
    async with app.session.get(app.url("/config"), headers={"Accept": "text/plain"}) as resp:
        text = await resp.text()
    assert 'INFLUX_MONITORING.TOKEN = "********"' in text and "t0ken-secret" not in text


def test_original_names_from_yaml_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "INFLUX_MONITORING:\n  SEND_DATA_FOR_MONITORING: 1\n  HOST: influx.local\n"
        "  PORT: 9999\n  USE_SSL: 1\n  BUCKET: b\n  ORGANIZATION: o\n"
        "  FLUSHING_PERIOD: 0.5\n"
    )
    settings = load_settings(path, {}, {"LUNA_SENDER_INFLUX_MONITORING__TOKEN": "tok"})
    names, options = plugin_setup(settings)
    assert names == ["request-monitoring"]
    assert options["request-monitoring"] == {
        "url": "https://influx.local:9999",
        "organization": "o",
        "bucket": "b",
        "token": "tok",
        "flushing_period": 0.5,
    }
    assert plugin_setup(load_settings(None, {}, {})) == ([], {})


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("INFLUX_MONITORING:\n  VERSION: 1\n", "INFLUX_MONITORING.VERSION"),
        (
            "INFLUX_MONITORING:\n  SEND_DATA_FOR_MONITORING: 2\n",
            "INFLUX_MONITORING.SEND_DATA_FOR_MONITORING",
        ),
        ("INFLUX_MONITORING:\n  PORT: 0\n", "INFLUX_MONITORING.PORT"),
        ("INFLUX_MONITORING:\n  HOSTNAME: x\n", "INFLUX_MONITORING.HOSTNAME"),
        (
            "plugins: [request-monitoring]\nINFLUX_MONITORING:\n  SEND_DATA_FOR_MONITORING: 1\n",
            "<root>",
        ),
    ],
)
def test_bad_original_settings_name_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_settings(path, {}, {})


async def test_send_data_for_monitoring_drives_the_plugin(live_app_factory) -> None:
    async with FakeInflux() as influx:
        app: LiveApp = await live_app_factory(
            INFLUX_MONITORING={
                "SEND_DATA_FOR_MONITORING": 1,
                "HOST": "127.0.0.1",
                "PORT": influx.port,
                "ORGANIZATION": "org",
                "BUCKET": "bkt",
                "TOKEN": "tok",
                "FLUSHING_PERIOD": 0.1,
            }
        )
        async with app.session.get(app.url("/plugins")) as resp:
            assert (await resp.json())["plugins"] == [{"name": "request-monitoring", "running": 1}]
        await app.session.get(app.url("/version"))
        await influx.wait_line("requests,route=GET:/version,")
    assert influx.seen == {
        "path": "/api/v2/write",
        "query": {"org": "org", "bucket": "bkt", "precision": "ns"},
        "auth": "Token tok",
    }
    assert any(
        x.startswith("requests,route=GET:/version,service=luna-sender,status_code=200")
        for x in influx.lines
    ), influx.lines
