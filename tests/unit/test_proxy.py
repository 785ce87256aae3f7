"""Which proxy an origin goes through: the environment's variables, NO_PROXY forms, `proxy:` values."""

from __future__ import annotations

import base64

import pytest

from adapters.proxy import (
    ProxyPolicy,
    ProxyURLError,
    check,
    connect_request,
    parse_proxy_url,
    proxy_password,
    resolve,
)

PROXY = "http://proxy.internal:3128"


def test_proxy_url_credentials_become_basic_authorization() -> None:
    proxy = parse_proxy_url("http://us%40er:p%3Ass@proxy.internal:3128")
    assert (proxy.host, proxy.port, proxy.where) == ("proxy.internal", 3128, "proxy.internal:3128")
    assert proxy.authorization == b"Basic " + base64.b64encode(b"us@er:p:ss")
    assert parse_proxy_url("proxy.internal:8080").port == 8080  # no scheme: http, as curl takes it
    assert parse_proxy_url("http://proxy.internal").port == 80
    assert parse_proxy_url(PROXY).authorization is None
    assert proxy_password("http://user:s3cret-value@proxy:1") == "s3cret-value"
    assert proxy_password("none") is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("socks5://u:secret-pw@p:1080", "proxy scheme 'socks5' is not supported (only http:// proxies)"),
        ("https://u:secret-pw@p:443", "proxy scheme 'https' is not supported (only http:// proxies)"),
        ("http://u:secret-pw@p:99999", "not a valid proxy URL (expected http://[user:password@]host:port)"),
        ("http://u:secret-pw@p:3128/path", "a proxy URL is only scheme, credentials, host and port"),
        ("http://", "the proxy URL has no host"),
    ],
)
def test_unusable_proxy_urls_are_refused_without_echoing_them(url: str, problem: str) -> None:
    with pytest.raises(ProxyURLError) as info:
        parse_proxy_url(url)
    assert str(info.value).startswith(problem)
    assert "secret-pw" not in str(info.value)
    assert check(url) == str(info.value)


def test_scheme_variables_lower_case_first_and_all_proxy_as_fallback() -> None:
    policy = ProxyPolicy.from_environment(
        {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2", "ALL_PROXY": "http://all:3"}
    )
    assert policy is not None
    assert policy.for_origin("https", "api.cloudflare.com", 443) == parse_proxy_url("http://lower:2")
    assert policy.for_origin("http", "vllm", 8000) == parse_proxy_url("http://all:3")
    only_https = ProxyPolicy.from_environment({"HTTPS_PROXY": PROXY})
    assert only_https is not None
    assert only_https.for_origin("http", "vllm", 8000) is None
    assert ProxyPolicy.from_environment({"HTTPS_PROXY": " ", "NO_PROXY": "*"}) is None


def test_a_malformed_variable_is_named_not_shown() -> None:
    with pytest.raises(ProxyURLError) as info:
        ProxyPolicy.from_environment({"HTTP_PROXY": "ftp://user:hunter2-secret@x:21"})
    assert str(info.value) == "HTTP_PROXY: proxy scheme 'ftp' is not supported (only http:// proxies)"


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "bypassed"),
    [
        ("example.com", "example.com", 443, True),
        ("example.com", "api.example.com", 443, True),
        (".example.com", "api.example.com", 443, True),
        ("*.example.com", "api.example.com", 443, True),
        ("example.com", "notexample.com", 443, False),
        ("EXAMPLE.com", "Example.COM.", 443, True),
        ("example.com:8443", "example.com", 443, False),
        ("example.com:8443", "example.com", 8443, True),
        ("10.0.0.0/8, .svc,.cluster.local", "10.2.3.4", 8000, True),
        ("10.0.0.0/8 .svc .cluster.local", "vllm.gpu.svc", 8000, True),
        ("10.0.0.0/8,.svc,.cluster.local", "11.0.0.1", 8000, False),
        ("127.0.0.1", "127.0.0.1", 8000, True),
        ("::1", "::1", 8000, True),
        ("[::1]:8000", "::1", 8000, True),
        ("[::1]:8000", "::1", 9000, False),
        ("fd00::/8", "fd12::3", 443, True),
        ("*", "anything.at.all", 1, True),
        ("", "api.cloudflare.com", 443, False),
    ],
)
def test_no_proxy_forms(no_proxy: str, host: str, port: int, bypassed: bool) -> None:
    policy = ProxyPolicy.from_environment({"HTTPS_PROXY": PROXY, "NO_PROXY": no_proxy})
    assert policy is not None
    assert (policy.for_origin("https", host, port) is None) is bypassed


def test_backend_setting_overrides_the_environment() -> None:
    environ = {"HTTPS_PROXY": PROXY, "NO_PROXY": "*"}
    assert resolve("none", environ) is None
    assert resolve(" NONE ", environ) is None
    own = resolve("http://own:3128", environ)
    assert own is not None  # NO_PROXY does not apply to a backend's own proxy
    assert own.for_origin("https", "api.cloudflare.com", 443) == parse_proxy_url("http://own:3128")
    inherited = resolve(None, environ)
    assert inherited is not None
    assert inherited.for_origin("https", "api.cloudflare.com", 443) is None


def test_connect_request_names_the_authority_and_carries_credentials() -> None:
    proxy = parse_proxy_url("http://u:p@proxy:3128")
    assert connect_request(proxy, "api.cloudflare.com", 443) == (
        b"CONNECT api.cloudflare.com:443 HTTP/1.1\r\nHost: api.cloudflare.com:443\r\n"
        b"Proxy-Authorization: Basic dTpw\r\n\r\n"
    )
    assert connect_request(parse_proxy_url(PROXY), "::1", 8443).startswith(b"CONNECT [::1]:8443 HTTP/1.1\r\n")
