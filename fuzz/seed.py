#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/ from the repository's own
fixtures (configs, scenarios, status pages) and the API's documented answers.

Each target reads its first bytes as a choice (see src/fuzzing.rs), so a seed is that prefix
followed by a real document. Run: python3 fuzz/seed.py. The output is committed; re-run it when
fixtures change (`pip install brotli` for the br seeds). What the fuzzer adds to these folders
when run locally is not committed.
"""
import gzip
import hashlib
import json
import pathlib
import struct
import zlib

try:
    import brotli
except ImportError:  # the br seeds are skipped
    brotli = None

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "corpus"

# Answers the API documents (docs/error-model.md, ../shared/seed/modelslab-error-codes.md and
# API-FACTS.md), with the status they come with.
ANSWERS = [
    (200, {"status": "success", "generationTime": 1.2, "id": 12345, "output": ["https://pub-x.r2.dev/a.png"], "meta": {"seed": 1}}),
    (200, {"status": "processing", "tip": "queued", "eta": 45, "messege": "Try to fetch request after given estimated time", "fetch_result": "https://modelslab.com/api/v6/images/fetch/12345", "id": 12345, "future_links": ["https://pub-x.r2.dev/a.png"]}),
    (200, {"status": "error", "message": "Invalid API key provided"}),
    (200, {"status": "error", "messege": "Model not found"}),
    (200, {"status": "failed", "message": "Request failed", "id": "abc"}),
    (400, {"status": "error", "message": {"prompt": ["The prompt field is required."], "width": ["must be at most 1024"]}}),
    (401, {"status": "error", "message": "Unauthorized"}),
    (402, {"status": "error", "message": "Insufficient credits. Please top up."}),
    (403, {"status": "error", "message": "Your subscription does not allow this model"}),
    (404, {"status": "error", "message": "Request not found"}),
    (422, {"status": "error", "message": "Validation failed", "errors": {"samples": ["must be between 1 and 4"]}}),
    (429, {"status": "error", "message": "Maximum 10 queued requests", "retry_after": 30}),
    (429, {"status": "error", "message": "Rate limit exceeded", "retry_after": "12.5"}),
    (500, {"status": "error", "message": "Internal server error"}),
    (503, {"status": "error", "message": "Service temporarily unavailable"}),
    (200, {"status": "success", "data": {"wallet": {"balance": 12.5, "currency": "USD"}}}),
]
RAW = [(200, b""), (502, b"<html><body>Bad Gateway</body></html>"), (200, b"[1,2,3]"), (200, b"{\"status\":")]

REQUESTS = [
    b"\n" + json.dumps({"key": "sk0123456789abcdef0123456789", "model_id": "flux", "prompt": "a cat", "width": 512, "height": 512, "samples": 1, "webhook": None, "track_id": None}).encode(),
    b"key=sk0123456789abcdef0123456789\n" + json.dumps({"request_id": 12345}).encode(),
    b"\n" + json.dumps({"key": "sk0123456789abcdef0123456789", "request_id": "abc-123"}).encode(),
    b"a=1&key=%73k0123456789abcdef0123456789\n" + b'{"model_id":"sdxl","init_image":"data:image/png;base64,AAAA',
    b"\nnot json",
]

WEBHOOKS = [
    {"status": "success", "id": 12345, "track_id": "5f1c2a", "output": ["https://pub-x.r2.dev/a.png"], "meta": {}},
    {"status": "failed", "id": "abc", "track_id": 7, "message": "generation failed"},
    {"status": "processing", "id": 1},
    [],
]


def png(w, h, pixel):
    rows = b"".join(b"\x00" + bytes(pixel(x, y) for x in range(w)) for y in range(h))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


GIF = bytes.fromhex("47494638396101000100800000ffffff00000021f90401000000002c00000000010001000002024401003b")


def write(target, name, data):
    folder = OUT / target
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()[:10]
    (folder / f"{name}-{digest}").write_bytes(data)


def encodings(body):
    yield 0, body  # no Content-Encoding
    yield 1, gzip.compress(body)
    yield 2, zlib.compress(body)
    if brotli is not None:
        yield 3, brotli.compress(body)


def main():
    bodies = [(s, json.dumps(a).encode()) for s, a in ANSWERS] + RAW
    for i, (status, body) in enumerate(bodies):
        for enc, data in encodings(body):
            head = struct.pack(">H", status - 100) + bytes([enc | 8 | (64 if i % 3 == 0 else 0)])
            write("classify", f"answer{i}-e{enc}", head + data)
            write("decode", f"answer{i}-e{enc}", bytes([enc, 12]) + data)
    bomb = b"\x00" * (4 << 20)
    write("decode", "gzip-bomb", bytes([1, 12]) + gzip.compress(bomb, 9))
    write("decode", "deflate-bomb", bytes([2, 12]) + zlib.compress(bomb, 9))
    if brotli is not None:
        write("decode", "br-bomb", bytes([3, 12]) + brotli.compress(bomb))

    configs = sorted((ROOT / "tests" / "fixtures" / "config").rglob("*.yaml")) + sorted((ROOT / "config").glob("*.yaml"))
    configs += [ROOT / "helm" / "modelslab-sentinel" / "ci" / "everything-values.yaml"]
    for path in configs:
        write("config", path.stem, path.read_bytes())
    for path in sorted((ROOT / "config" / "scenarios").glob("*.yaml")):
        write("scenario", path.stem, path.read_bytes())
        write("config", "scenario-" + path.stem, path.read_bytes())

    formats = {"statuspage": 1, "instatus": 2, "betterstack": 3, "html": 4}
    for path in sorted((ROOT / "tests" / "fixtures" / "statuspage").iterdir()):
        fmt = formats[path.name.split("-")[0]]
        write("statuspage", path.stem, bytes([fmt]) + path.read_bytes())
        write("statuspage", "detect-" + path.stem, bytes([0]) + path.read_bytes())

    for i, req in enumerate(REQUESTS):
        write("request", f"request{i}", req)
    for i, hook in enumerate(WEBHOOKS):
        write("webhook", f"delivery{i}", json.dumps(hook).encode())

    write("output", "png-gradient", bytes([0]) + png(16, 16, lambda x, y: (x * 16 + y) % 256))
    write("output", "png-blank-sized", bytes([4 | (15 << 3)]) + png(16, 16, lambda x, y: 0))
    write("output", "gif", bytes([3]) + GIF)


if __name__ == "__main__":
    main()
