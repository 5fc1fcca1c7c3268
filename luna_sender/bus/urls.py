"""Bus URLs with a host list (``redis+sentinel://``, ``redis+cluster://``).

Both multi-host schemes read their URL the same way; keeping the parsing here lets each backend
depend on it without depending on another backend. ``urllib.parse.urlsplit`` cannot be used: it
rejects the port of every host but the last in ``host:port,host:port``.
"""

from __future__ import annotations

import codecs
import inspect
import os
import re
import ssl
from typing import Any, NamedTuple
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit


class BusUrl(NamedTuple):
    scheme: str
    user: str | None
    password: str | None
    hosts: str
    path: str
    query: dict[str, list[str]]

    @property
    def tls(self) -> bool:
        return self.scheme.startswith("rediss")


def parse_hosts(netloc_hosts: str, default_port: int) -> list[tuple[str, int]]:
    hosts: list[tuple[str, int]] = []
    for item in netloc_hosts.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # an IPv6 address: the brackets are the URL's, not the host's
            host, _, rest = item[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else rest
        else:
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        if port and not (_number(port) and 0 < int(port) < 65536):
            raise ValueError(f"port {port!r} is not a number from 1 to 65535")
        hosts.append((host or item, int(port) if port else default_port))
    if not hosts:
        raise ValueError("no hosts in bus URL")
    return hosts


def split_url(url: str) -> BusUrl:
    scheme, rest = url.split("://", 1)
    rest, _, query = rest.partition("?")
    userinfo, _, hostpart = rest.rpartition("@") if "@" in rest.split("/", 1)[0] else ("", "", rest)
    user = password = None
    if userinfo:
        user, _, password = userinfo.partition(":")
        user, password = unquote(user) or None, unquote(password) or None
    hosts, _, path = hostpart.partition("/")
    return BusUrl(scheme, user, password, hosts, path, parse_qs(query))


def _number(text: str) -> bool:
    return text.isascii() and text.isdigit()


# The query options each multi-host backend reads (sentinel.py, cluster.py); any other would
# be ignored without a word.
MULTI_HOST_OPTIONS = {
    "sentinel": {"sentinel_username", "sentinel_password"},
    "cluster": {"sharded"},
}
SHARDED = ("1", "true", "yes", "0", "false", "no")
# Options of a single-host URL that redis-py takes as numbers but never checks: a NaN or
# negative timeout, or a database outside Redis' range, left a service that never connected.
_POSITIVE = ("socket_timeout", "socket_connect_timeout")
# The options of a connection that a URL can give: redis-py converts those it parses
# (``URL_QUERY_ARGUMENT_PARSERS``) and passes the rest on as strings, so an option expecting an
# object failed only at connect (``?socket_keepalive_options=x``, ``?retry=x``).
_STRINGS = frozenset(
    {
        *("host", "port", "db", "path", "username", "password", "client_name", "lib_name"),
        *("lib_version", "encoding", "encoding_errors", "decode_responses", "ssl_keyfile"),
        *("ssl_certfile", "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_ca_data"),
        *("ssl_password", "ssl_ciphers"),
    }
)
# Files redis-py opens only at connect (``?ssl_ca_certs=/nonexistent`` passed the check).
_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
# Pub/sub, the health PING and at least one publish each hold a pool connection (bus/redis.py).
MIN_CONNECTIONS = 3


def check_url(url: str) -> None:
    """:func:`_check_url`, its message never quoting part of the URL's user:password.

    A password's own ``/``, ``?`` or ``#`` (unencoded) ends the host part early for redis-py,
    whose error then quoted the rest as a port or an option name: ``check-config`` and the log
    showed pieces of the password (an outside pass: ``Port could not be cast ... 'Sup3r'``).
    """
    if "://" not in url:  # ``unix:/path``, ``memory:``: "not enough values to unpack"
        raise ValueError("the bus URL is scheme://..., such as redis://127.0.0.1:6379/0")
    try:
        _check_url(url)
    except ValueError as exc:
        raise ValueError(_redacted(str(exc), url)) from None


def _redacted(message: str, url: str) -> str:
    """Also hides what follows a credential option (``?password=a&b``: its ``&`` made ``b`` an
    option name the error quoted) and an option name holding one (``?password:secret``)."""
    from luna_sender.config.masking import SECRET_KEY_RE

    rest = url.partition("://")[2]
    secret = rest[: rest.rfind("@")] if "@" in rest else ""
    query = url.partition("?")[2]
    for name in _named(url):
        if SECRET_KEY_RE.search(name):
            secret += " " + query[query.find(name) :]
            break
    if not secret.strip():
        return message

    def hide(match: re.Match[str]) -> str:
        text = match.group(0)[1:-1]
        if _NAMED_SECRET.search(text):
            return "'<hidden: part of the password>'"
        short = len(text) < _OVERLAP and text in secret
        tail = "@" in text and secret.endswith(text.partition("@")[0])  # "ss@host" of "pa?ss"
        if short or tail or any(text[i : i + _OVERLAP] in secret for i in range(len(text) - 2)):
            return "'<hidden: part of the password>'"
        return match.group(0)

    hidden = re.sub(r"'[^']*'|\"[^\"]*\"", hide, message)
    if hidden != message:
        hidden += " (percent-encode a password's '/', '?', '#' and '@': %2F %3F %23 %40)"
    return hidden


# A quoted piece of an error sharing this many characters with the userinfo is hidden.
_OVERLAP = 3
_NAMED_SECRET = re.compile(r"(?i)(passw(or)?d|secret|token|credential)[^a-z0-9_]")


def _check_url(url: str) -> None:
    """Raise ValueError saying what is wrong with a bus URL, reading it as its backend will but
    without connecting. The backends read their URL only when the service starts, so a bad port
    or option passed ``check-config`` and then ended the start with a traceback, or left a
    service that could never connect (outside passes: ``redis://h:99999/0``,
    ``?socket_timeout=abc`` or ``nan``, ``?max_connections=-5``, a Sentinel URL without a master,
    options a Sentinel or Cluster URL ignores)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return
    named = _named(url)
    twice = sorted({name for name in named if named.count(name) > 1})
    if twice:  # redis-py reads the first copy: ?socket_timeout=abc&socket_timeout=2 hid a typo
        raise ValueError(f"the bus URL gives option {twice[0]!r} more than once")
    if scheme in ("redis", "rediss", "unix"):
        _check_single(scheme, url)
        return
    parsed = split_url(url)
    parse_hosts(parsed.hosts, 26379)
    parts = [p for p in parsed.path.split("/") if p]
    kind = "sentinel" if "sentinel" in scheme else "cluster"
    unknown = sorted(set(_named(url)) - MULTI_HOST_OPTIONS[kind])
    if unknown:
        known = ", ".join(sorted(MULTI_HOST_OPTIONS[kind]))
        raise ValueError(f"{scheme}:// URL takes no option {unknown[0]!r} (only {known})")
    if kind == "cluster":
        if parts not in ([], ["0"]):  # /0 says what a Cluster has anyway
            raise ValueError(f"{scheme}:// URL takes no path (a Cluster has database 0 only)")
        if any(v.lower() not in SHARDED for v in parsed.query.get("sharded", [])):
            raise ValueError(f"sharded is one of {', '.join(SHARDED)}")
        return
    if not parts:
        raise ValueError(f"{scheme}:// URL needs a master name: .../<master>[/db]")
    if len(parts) > 2:
        raise ValueError(f"{scheme}:// URL path is /<master>[/db], not {parsed.path!r}")
    if len(parts) > 1:
        _database(parts[1])


def _database(text: str) -> None:
    if not (_number(text) and int(text) < 2**31):
        raise ValueError(f"the database {text!r} in the bus URL is not a number from 0")


def _named(url: str) -> list[str]:
    """Every option the URL names, with a value or not: redis-py drops one written without a
    value (``?sockettimeout``, a template's empty variable), so a misspelt one did nothing."""
    return [name for name, _ in parse_qsl(url.partition("?")[2], keep_blank_values=True)]


def _connection_options(scheme: str) -> tuple[frozenset[str], frozenset[str]]:
    """The options redis-py's connection for ``scheme`` takes, and those of them a URL cannot
    give (they expect an object)."""
    from redis.asyncio import connection
    from redis.connection import URL_QUERY_ARGUMENT_PARSERS

    cls = {"unix": connection.UnixDomainSocketConnection, "rediss": connection.SSLConnection}
    names: set[str] = {"max_connections"}  # the pool's
    for klass in cls.get(scheme, connection.Connection).__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names.update(inspect.signature(init).parameters)
    parsed = frozenset(URL_QUERY_ARGUMENT_PARSERS)
    return frozenset(names) | parsed, frozenset(names) - parsed - _STRINGS - {"self"}


def _check_single(scheme: str, url: str) -> None:
    from redis.asyncio import ConnectionPool

    if "#" in url:  # redis-py drops it and all after: the password's rest, or the real host
        raise ValueError("the bus URL holds a # (redis-py drops it and all after): write %23")
    parsed = urlsplit(url)
    if "@" in parsed.path:  # a password's "/": redis-py took the rest for the path
        raise ValueError("the bus URL's path holds an @: write a password's / as %2F")
    if scheme != "unix" and not parsed.hostname:  # redis-py would use localhost:6379
        raise ValueError("the bus URL names no host")
    options = parse_qs(url.partition("?")[2])
    for name, given in (("password", parsed.password), ("username", parsed.username)):
        if given and name in options:  # redis-py takes the userinfo's, without a word
            raise ValueError(f"the bus URL gives the {name} twice: in user:password@ and ?{name}=")
    known, objects = _connection_options(scheme)
    for name in _named(url):
        if name in objects:
            raise ValueError(f"the bus URL cannot set {name}: redis-py would take it as text")
        if name not in options and name not in known:  # with a value: redis-py names it below
            raise ValueError(f"the bus URL takes no option {name!r} (it has no value either)")
    for name in _POSITIVE:
        for value in options.get(name, []):
            try:
                number = float(value)
            except ValueError:
                number = -1.0
            if not 0 < number < float("inf"):
                raise ValueError(f"{name} {value!r} in the bus URL is not a positive number")
    for value in options.get("db", []):
        _database(value)
    for value in options.get("socket_read_size", []):  # 0 or below: no reply is ever read
        if not (_number(value) and int(value) > 0):
            raise ValueError(f"socket_read_size {value!r} in the bus URL is not a number from 1")
    if options.get("retry_on_error"):  # redis-py split the text into letters: a TypeError later
        raise ValueError(
            "the bus URL cannot set retry_on_error: the bus never resends a command "
            "(a PUBLISH resent after a timeout is delivered twice)"
        )
    for value in options.get("health_check_interval", []):
        if not _number(value):  # a negative one made redis-py check before every command
            raise ValueError(
                f"health_check_interval {value!r} in the bus URL is not a number from 0"
            )
    for value in options.get("max_connections", []):
        if _number(value) and int(value) < MIN_CONNECTIONS:
            raise ValueError(
                f"max_connections {value} in the bus URL: the bus needs {MIN_CONNECTIONS} at least "
                "(pub/sub, health, publishing)"
            )
    for value in options.get("client_name", []):  # Redis refuses a name with any other byte
        if not all("!" <= char <= "~" for char in value):
            raise ValueError(
                f"client_name {value[:64]!r} in the bus URL: printable ASCII, no spaces"
            )
    for name in _FILES:
        for value in options.get(name, []):
            if not os.path.isfile(value):
                raise ValueError(f"{name} in the bus URL: no such file {value!r}")
    for value in options.get("ssl_keyfile", []):  # OpenSSL would ask on the terminal, or hang
        if not options.get("ssl_password") and _encrypted(value):
            raise ValueError("ssl_keyfile in the bus URL is encrypted: give ssl_password")
    for value in options.get("ssl_ca_path", []):
        if not os.path.isdir(value):
            raise ValueError(f"ssl_ca_path in the bus URL: no such directory {value!r}")
    for value in options.get("decode_responses", []):  # the bus reads bytes (msgpack, not UTF-8)
        if value.lower() not in ("0", "false", "no", "n", "off", ""):
            raise ValueError("decode_responses in the bus URL: the bus reads raw bytes")
    for value in options.get("encoding", []):  # channel names and commands are UTF-8
        try:
            utf8 = codecs.lookup(value).name == "utf-8"
        except LookupError:
            utf8 = False
        if not utf8:
            raise ValueError(f"encoding {value!r} in the bus URL: only utf-8")
    pool = ConnectionPool.from_url(url)  # the port, and every option, as redis-py reads them
    try:  # builds, does not connect: ``?protocol=9``, an unknown option, a TLS option on redis://
        connection = pool.make_connection()  # type: ignore[no-untyped-call]
    except TypeError as exc:  # redis-py passes every unknown option on as a keyword
        name = str(exc).rpartition(" ")[2]
        if not name.startswith("'"):  # another TypeError than an unknown keyword
            raise ValueError(f"the bus URL's options: {exc}") from None
        hint = (
            " (TLS options need rediss://)"
            if name.startswith("'ssl") and scheme != "rediss"
            else ""
        )
        raise ValueError(f"the bus URL takes no option {name}{hint}") from None
    except Exception as exc:
        raise ValueError(f"the bus URL's options: {exc}") from None
    _check_tls(connection)
    if scheme == "unix":
        if not urlsplit(url).path:
            raise ValueError("unix:// URL needs the socket's path: unix:///path/redis.sock")
        return
    if urlsplit(url).port == 0:  # redis-py would use 6379 for it
        raise ValueError("port 0 is not a number from 1 to 65535")
    database = url.partition("?")[0].split("://", 1)[1].partition("/")[2].strip("/")
    if database:  # redis-py would quietly use database 0 for one that is not a number
        _database(database)
        if options.get("db", [database]) != [database]:  # redis-py takes ?db= over the path
            raise ValueError(
                f"the bus URL names two databases: /{database} and ?db={options['db'][0]}"
            )


def _check_tls(connection: Any) -> None:
    """Build the TLS context a rediss:// connection would build at connect: a CA file that
    holds no certificate, ``?ssl_ciphers=NOPE``, ``?ssl_min_version=99`` or ``?ssl_ca_data=x``
    passed the check, then the service never connected (an outside pass)."""
    context = getattr(connection, "ssl_context", None)
    if context is None:
        return
    try:
        context.get()
    except (ssl.SSLError, OSError, ValueError, TypeError) as exc:
        raise ValueError(f"the bus URL's TLS options: {type(exc).__name__}: {exc}") from None


def _encrypted(path: str) -> bool:
    try:
        with open(path, "rb") as key:
            return b"ENCRYPTED" in key.read(1 << 16)
    except OSError:
        return False
