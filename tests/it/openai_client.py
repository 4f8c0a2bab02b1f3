"""Drives a running `mesh serve` with the official `openai` Python client (tests/cli.rs runs it).

usage: python3 tests/openai_client.py BASE_URL MODEL
"""
import sys

from openai import OpenAI

base, model = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base, api_key="unused")

ids = [m.id for m in client.models.list()]
assert ids == [model], ids

chat = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    temperature=0,
    max_tokens=16,
)
text = chat.choices[0].message.content
assert text and chat.usage.completion_tokens > 0, chat
assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens

pieces, usage = [], None
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    temperature=0,
    max_tokens=16,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        pieces.append(c.delta.content or "")
assert "".join(pieces) == text, (pieces, text)
assert usage is not None and usage.completion_tokens == chat.usage.completion_tokens

comp = client.completions.create(model=model, prompt="Once upon a time", max_tokens=5, extra_body={"ignore_eos": True})
assert comp.choices[0].text and comp.usage.completion_tokens == 5, comp

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("unknown model accepted")
except Exception as e:  # openai.NotFoundError
    assert getattr(e, "status_code", None) == 404, e

print("openai client: ok")
