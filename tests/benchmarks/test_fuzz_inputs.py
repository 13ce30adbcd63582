"""The reliability script's generated inputs: every class covered, reproducible, and never aimed off the machine."""

from __future__ import annotations

import ipaddress
import json
import random
import re
import socket
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from urllib3.util import parse_url

from benchmarks.fuzz_inputs import (
    _MIX,
    URL_CLASSES,
    FuzzContext,
    _raw_templates,
    build_case,
    fuzz_cases,
    hostile_urls,
    malformed_requests,
    redirect_target,
)
from benchmarks.reliability import parse_raw_responses, same_answer, strip_ids

LS, ATTACKER = 18080, 18081
LIMIT = 1 << 20


def stays_on_this_machine(host: str) -> bool:
    """A host no resolver maps to another machine: loopback (in any spelling) or not a resolvable name at all."""
    host = unquote(host.strip("[]"))  # a parser that decodes "%2e" reads 127.0.0.1
    # an IPv6 address (without its zone), or "127.0.0.1%3a80" decoded: host and port
    host = host.split("%")[0] if host.count(":") > 1 else host.split(":")[0]
    try:
        host = host.encode("idna").decode()  # what a client would resolve: "１２７.0.0.1" is 127.0.0.1
    except UnicodeError:
        return True
    if not re.fullmatch(r"[A-Za-z0-9.:-]*", host):
        return True  # whitespace, "+", "@", ...: no DNS name
    if host.rstrip(".").lower() in ("", "localhost"):
        return True
    for parse in (ipaddress.ip_address, lambda h: ipaddress.ip_address(socket.inet_aton(h.rstrip(".")))):
        try:
            address = parse(host)
        except (ValueError, OSError):
            continue
        mapped = getattr(address, "ipv4_mapped", None) or address
        return mapped.is_loopback or mapped.is_unspecified or str(mapped) == "::7f00:1"
    return False  # a DNS name other than localhost


def candidate_hosts(url: str) -> set[str]:
    """Every host a parser could read from ``url`` (and from the URL it redirects to through the fake Label Studio)."""
    hosts: set[str] = set()
    if url.split("://")[0] in ("s3", "gs", "azure-blob"):  # fetched through Label Studio's presign endpoint
        return candidate_hosts(redirect_target(url) or "")
    for parser in (lambda u: urlsplit(u).hostname, lambda u: parse_url(u).host):
        try:
            host = parser(url)
        except ValueError:
            continue
        if host:
            hosts.add(host)
    inner = parse_qs(urlsplit(url).query).get("to", [None])[0] if "/redirect?" in url else None
    if inner:
        hosts |= candidate_hosts(inner)
    return hosts


def test_hostile_urls_cover_every_class_and_are_reproducible() -> None:
    urls = hostile_urls(random.Random(5), LS, ATTACKER, 600)
    assert len({u.url for u in urls}) == 600
    kinds = {u.kind for u in urls}
    assert kinds == set(URL_CLASSES)
    assert urls == hostile_urls(random.Random(5), LS, ATTACKER, 600)
    assert urls != hostile_urls(random.Random(6), LS, ATTACKER, 600)


def test_hostile_urls_only_ever_point_at_this_machine() -> None:
    for url in hostile_urls(random.Random(7), LS, ATTACKER, 800):
        for host in candidate_hosts(url.url):
            assert stays_on_this_machine(host), (url, host)


def test_the_checker_itself_tells_loopback_from_elsewhere() -> None:
    for host in ("127.0.0.1", "127.1", "0x7f.1", "2130706433", "017700000001", "[::1]", "::ffff:127.0.0.1", "localhost.",
                 "１２７.0.0.1", "0", "0.0.0.0", "ⓛⓞⓒⓐⓛⓗⓞⓢⓣ"):  # fmt: skip
        assert stays_on_this_machine(host), host
    for host in ("8.8.8.8", "example.com", "10.0.0.1", "[2001:db8::1]", "134744072"):
        assert not stays_on_this_machine(host), host


def test_fuzz_cases_cover_the_mix_and_every_case_builds() -> None:
    cases = fuzz_cases(random.Random(1), 2000)
    assert len(cases) >= 2000
    assert {(c.route, c.kind) for c in cases} >= {(route, kind) for route, kind, _ in _MIX}
    assert cases == fuzz_cases(random.Random(1), 2000)
    ctx = FuzzContext(LS, ATTACKER, ("data:image/png;base64,iVBORw0KGgo=",), ("/models/x",),
                      tuple(hostile_urls(random.Random(2), LS, ATTACKER, 50)))  # fmt: skip
    depths, surrogates, huge = [], 0, 0
    for case in cases:
        request = build_case(case, ctx, LIMIT)
        assert request == build_case(case, ctx, LIMIT)  # rebuilt from its seed alone
        if case.kind == "deep":
            depths.append(request.body.count(b"[") + request.body.count(b'{"a":'))
        if case.kind == "surrogate":
            assert re.search(rb"\\ud[89a-f][0-9a-f]{2}", request.body), request.body[:200]
            json.loads(request.body)  # still valid JSON: the surrogate is what must be refused
            surrogates += 1
        if case.kind == "huge":
            assert len(request.body) > LIMIT
            huge += 1
    assert max(depths) >= 1000 and surrogates and huge


def test_surrogates_land_in_the_fields_the_issue_names() -> None:
    ctx = FuzzContext(LS, ATTACKER, ("data:,",), (), tuple(hostile_urls(random.Random(2), LS, ATTACKER, 20)))
    fields = set()
    for case in fuzz_cases(random.Random(3), 3000):
        if case.route == "/setup" and case.kind == "surrogate":
            body = json.loads(build_case(case, ctx, LIMIT).body)
            fields |= {
                k for k, v in body.items() if isinstance(v, str) and not v.encode("utf-8", "surrogatepass").isascii()
            }
    assert {"project", "hostname", "access_token"} <= fields


def test_malformed_requests_cover_every_template() -> None:
    names = set(_raw_templates(random.Random(0), ATTACKER))
    made = malformed_requests(random.Random(0), ATTACKER, 300)
    assert len(made) == 300 and {name for name, _ in made} == names
    assert made == malformed_requests(random.Random(0), ATTACKER, 300)


def test_raw_responses_are_split_and_interim_ones_skipped() -> None:
    raw = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
           b"Content-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # fmt: skip
    assert parse_raw_responses(raw) == [(400, "application/json", b"{}"), (200, "", b"")]
    assert parse_raw_responses(b"<html>") is None


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ({"x": 1.0, "id": "a"}, {"x": 1.0000001, "id": "b"}, True),
        ({"x": 1.0}, {"x": 1.1}, False),
        ([{"r": [1, 2]}], [{"r": [1, 2, 3]}], False),
        ({"label": ["Cat"]}, {"label": ["Dog"]}, False),
        (True, 1, False),
    ],
)
def test_answers_compare_without_ids_and_within_float_tolerance(a: object, b: object, same: bool) -> None:
    assert same_answer(strip_ids(a), strip_ids(b)) is same
