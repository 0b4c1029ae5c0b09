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
# The LLM API's answers (API-FACTS.md "LLM API"): successes and both providers' error envelopes.
LLM_ANSWERS = [
    (200, {"id": "chatcmpl-1", "object": "chat.completion", "model": "meta-llama/Llama-3.3-70B-Instruct-Turbo", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}),
    (200, {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet", "content": [{"type": "text", "text": "hi"}], "stop_reason": "max_tokens", "usage": {"input_tokens": 5, "output_tokens": 1}}),
    (200, {"object": "list", "data": [{"id": "Qwen/Qwen2.5-VL-72B-Instruct-together", "object": "model", "owned_by": "modelslab"}]}),
    (200, {"input_tokens": 12}),
    (401, {"error": {"message": "Invalid API key", "type": "invalid_request_error", "code": "invalid_api_key"}}),
    (200, {"error": {"message": "Insufficient credits.", "type": "insufficient_quota", "code": "insufficient_quota"}}),
    (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    (404, {"error": {"message": "Model not found: x", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}),
]
OPENAI_STREAM = (
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"Hello"}}]}\n\n'
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"length"}],"usage":{"prompt_tokens":9,"completion_tokens":2}}\n\n'
    "data: [DONE]\n\n"
).encode()
ANTHROPIC_STREAM = (
    'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","model":"claude-x","usage":{"input_tokens":12,"output_tokens":1}}}\n\n'
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n'
    'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}\n\n'
    'event: message_stop\ndata: {"type":"message_stop"}\n\n'
).encode()
STREAMS = [
    OPENAI_STREAM,
    ANTHROPIC_STREAM,
    OPENAI_STREAM.replace(b"\n", b"\r\n"),
    ANTHROPIC_STREAM[: len(ANTHROPIC_STREAM) // 2],
    b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n',
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


def media_files():
    """One small whole file of each kind the output check walks (src/probe/media.rs)."""
    def box(kind, body):
        return struct.pack(">I", len(body) + 8) + kind + body
    tkhd = bytearray(84)
    tkhd[76:84] = struct.pack(">II", 64 << 16, 36 << 16)
    moov = box(b"moov", box(b"mvhd", bytes(100)) + box(b"trak", box(b"tkhd", bytes(tkhd))))
    mp4 = box(b"ftyp", b"isom\0\0\x02\0isommp41") + moov + box(b"mdat", bytes(range(64)))
    pcm = bytes(200)
    wav = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16) + b"data" + struct.pack("<I", len(pcm)) + pcm
    frame = b"\xff\xfb\x90\x00" + bytes(413)
    mp3 = b"ID3\x04\0\0\0\0\0\0" + frame * 3
    doc = b'{"asset":{"version":"2.0"}}\x20'
    glb = b"glTF" + struct.pack("<II", 2, 12 + 8 + len(doc)) + struct.pack("<I", len(doc)) + b"JSON" + doc
    page = lambda last: b"OggS\0" + bytes([4 if last else 0]) + bytes(20) + b"\x01\x10" + bytes(16)
    ogg = page(False) + page(True)
    flac = b"fLaC" + b"\x80\0\0\x22" + bytes(34) + b"\xff\xf8\x69\x08\0\0"
    webm = b"\x1a\x45\xdf\xa3\x87\x42\x82\x84webm\x18\x53\x80\x67\x88" + bytes(8)
    return {"mp4": mp4, "wav": wav, "mp3": mp3, "glb": glb, "ogg": ogg, "flac": flac, "webm": webm}


def write(target, name, data):
    folder = OUT / target
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()[:10]
    (folder / f"{name}-{digest}").write_bytes(data)


def encodings(body):
    yield 0, body  # no Content-Encoding
    yield 1, gzip.compress(body, mtime=0)  # no timestamp: the same seed on every run
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
    write("decode", "gzip-bomb", bytes([1, 12]) + gzip.compress(bomb, 9, mtime=0))
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

    for i, (status, answer) in enumerate(LLM_ANSWERS):
        write("classify", f"llm{i}", struct.pack(">H", status - 100) + bytes([8]) + json.dumps(answer).encode())
    for i, stream in enumerate(STREAMS):
        write("classify", f"llm-stream{i}", struct.pack(">H", 100) + bytes([128]) + stream)
        for size in (1, 7, 64, 255):
            write("stream", f"stream{i}-by{size}", bytes([size]) + stream)

    for name, data in media_files().items():
        write("output", name, bytes([3]) + data)
    write("output", "png-gradient", bytes([0]) + png(16, 16, lambda x, y: (x * 16 + y) % 256))
    write("output", "png-blank-sized", bytes([4 | (15 << 3)]) + png(16, 16, lambda x, y: 0))
    write("output", "gif", bytes([3]) + GIF)


if __name__ == "__main__":
    main()
