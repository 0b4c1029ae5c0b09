"""Drives the official `openai` and `anthropic` Python SDKs against a ModelsLab LLM base URL
(the emulator directly, or the agent's proxy in front of it) and prints what they saw as JSON.

    python3 llm_sdks.py BASE_URL PHASE

BASE_URL is `http://127.0.0.1:PORT/api/v7/llm`. PHASE `calls`: plain calls (with their raw bytes),
streams, model lists, token counts, and the errors of a revoked and an unfunded key. PHASE
`limited`: one call per SDK against an API that answers 429, which the SDK retries itself.
Nothing here is ours but the calls: the SDKs build the requests, read the answers, retry and raise.
"""
import json
import sys

import anthropic
import openai

GOOD, REVOKED, BROKE = "sk-sdk-good-key-0001", "sim-invalid-sdk-key", "sim-broke-sdk-key"
GPT, CLAUDE = "meta-llama/Llama-3.3-70B-Instruct-Turbo", "claude-sonnet"
ASK = [{"role": "user", "content": "Name a lighthouse in three words."}]


def failure(call):
    """The SDK's exception for a call that must fail: its class and HTTP status."""
    try:
        call()
    except (openai.APIStatusError, anthropic.APIStatusError) as e:
        return {"error": type(e).__name__, "status": e.status_code}
    raise AssertionError("the call succeeded")


def with_openai(base):
    client = openai.OpenAI(base_url=base, api_key=GOOD, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=GPT, messages=ASK, max_tokens=64)
    done = raw.parse()
    plain = {"raw": raw.http_response.content.decode(), "usage": done.usage.model_dump(),
             "finish": done.choices[0].finish_reason, "model": done.model}
    text, usage, finish = "", None, None
    stream = client.chat.completions.create(model=GPT, messages=ASK, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        usage = chunk.usage.model_dump() if chunk.usage else usage
    cut = client.chat.completions.create(model=GPT, messages=ASK, max_tokens=3)
    return {
        "plain": plain,
        "stream": {"text": text, "usage": usage, "finish": finish},
        "truncated": {"finish": cut.choices[0].finish_reason, "usage": cut.usage.model_dump()},
        "models": [m.id for m in client.models.list()],
        "revoked": failure(lambda: openai.OpenAI(base_url=base, api_key=REVOKED, max_retries=0)
                           .chat.completions.create(model=GPT, messages=ASK)),
        "broke": failure(lambda: openai.OpenAI(base_url=base, api_key=BROKE, max_retries=0)
                         .chat.completions.create(model=GPT, messages=ASK)),
        "unknown_model": failure(lambda: client.chat.completions.create(model="no-such-model", messages=ASK)),
    }


def with_anthropic(base):
    client = anthropic.Anthropic(base_url=base, api_key=GOOD, max_retries=0)
    raw = client.messages.with_raw_response.create(model=CLAUDE, messages=ASK, max_tokens=64)
    done = raw.parse()
    plain = {"raw": raw.http_response.content.decode(), "usage": done.usage.model_dump(exclude_none=True),
             "finish": done.stop_reason, "model": done.model}
    with client.messages.stream(model=CLAUDE, messages=ASK, max_tokens=64) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    return {
        "plain": plain,
        "stream": {"text": text, "usage": final.usage.model_dump(exclude_none=True), "finish": final.stop_reason},
        "count": client.messages.count_tokens(model=CLAUDE, messages=ASK).input_tokens,
        "models": [m.id for m in client.models.list()],
        "revoked": failure(lambda: anthropic.Anthropic(base_url=base, api_key=REVOKED, max_retries=0)
                           .messages.create(model=CLAUDE, messages=ASK, max_tokens=8)),
        "broke": failure(lambda: anthropic.Anthropic(base_url=base, api_key=BROKE, max_retries=0)
                         .messages.create(model=CLAUDE, messages=ASK, max_tokens=8)),
    }


def limited(base):
    """One call each against a 429ing API, with the SDKs' own retries (2)."""
    return {
        "openai": failure(lambda: openai.OpenAI(base_url=base, api_key=GOOD, max_retries=2)
                          .chat.completions.create(model=GPT, messages=ASK)),
        "anthropic": failure(lambda: anthropic.Anthropic(base_url=base, api_key=GOOD, max_retries=2)
                             .messages.create(model=CLAUDE, messages=ASK, max_tokens=8)),
    }


if __name__ == "__main__":
    base, phase = sys.argv[1], sys.argv[2]
    if phase == "calls":
        out = {"openai": with_openai(base), "anthropic": with_anthropic(base)}
    else:
        out = limited(base)
    print(json.dumps(out, sort_keys=True))
