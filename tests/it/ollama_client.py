"""Drives a running `mesh serve` with the official `ollama` Python client (tests/it/ollama_api.rs
runs it): lists models, chats streaming and not, generates, shows, and gets Ollama's errors.

usage: python3 tests/it/ollama_client.py BASE_URL MODEL
"""
import sys

import ollama

base, model = sys.argv[1], sys.argv[2]
client = ollama.Client(host=base)

names = [m.model for m in client.list().models]
assert names == [model], names
assert [m.model for m in client.ps().models] == [model]
shown = client.show(model)
assert shown.modelinfo["mesh.context_length"] == 256, shown

question = [{"role": "user", "content": "What is the capital of France?"}]
opts = {"temperature": 0, "num_predict": 16, "seed": 1}
chat = client.chat(model=model, messages=question, options=opts)
text = chat.message.content
assert chat.done and chat.message.role == "assistant" and text, chat
assert chat.done_reason in ("stop", "length"), chat
assert chat.eval_count > 0 and chat.prompt_eval_count > 0 and chat.total_duration > 0, chat

pieces, last = [], None
for part in client.chat(model=model, messages=question, options=opts, stream=True):
    pieces.append(part.message.content)
    last = part
assert "".join(pieces) == text, (pieces, text)
assert last.done and last.eval_count == chat.eval_count, last

gen = client.generate(model=model, prompt="Once upon a time", raw=True,
                      options={"num_predict": 5, "temperature": 0})
assert gen.response and gen.done_reason == "length" and gen.eval_count == 5, gen
parts = list(client.generate(model=model, prompt="Say hi.", options=opts, stream=True))
assert parts[-1].done and "".join(p.response for p in parts), parts

try:
    client.chat(model="no-such-model", messages=question)
    raise AssertionError("unknown model accepted")
except ollama.ResponseError as e:
    assert e.status_code == 404 and "no-such-model" in e.error, e

print("ollama client: ok")
