"""Function calling with the official `openai` Python client (tests/it/tools.rs runs it against
a node serving the test model, and through a client node of its mesh).

usage: python3 tests/it/openai_tools.py BASE_URL MODEL [--short]

--short leaves out the slowest step (a second, free "auto" answer after the tool result).

The test model's template has no tools, so the node uses the generic format, enforced by a
grammar: with tool_choice "required" or a named function the answer must be a call of a
function offered, whose arguments parse and follow the schema.
"""
import json
import sys

import openai
from openai import OpenAI

base, model = sys.argv[1], sys.argv[2]
short = "--short" in sys.argv[3:]
client = OpenAI(base_url=base, api_key="unused")

tools = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 16}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The local time in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 16}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    },
]
question = [{"role": "user", "content": "What is the weather in Paris?"}]


def check_call(call, names):
    assert call.type == "function", call
    assert call.id, call
    assert call.function.name in names, call
    args = json.loads(call.function.arguments)
    assert set(args) == {"city"} and isinstance(args["city"], str), args
    assert len(args["city"]) <= 16, args


# 1. tool_choice "required", not streaming: a call, finish_reason "tool_calls".
first = client.chat.completions.create(
    model=model, messages=question, tools=tools, tool_choice="required",
    parallel_tool_calls=False, temperature=0, max_tokens=60,
)
choice = first.choices[0]
assert choice.finish_reason == "tool_calls", first
assert len(choice.message.tool_calls) == 1, first
call = choice.message.tool_calls[0]
check_call(call, {"get_weather", "get_time"})

# 2. A named function, streaming: the call arrives as tool_call deltas.
stream = client.chat.completions.create(
    model=model, messages=question, tools=tools,
    tool_choice={"type": "function", "function": {"name": "get_time"}},
    temperature=0, max_tokens=60, stream=True,
)
calls, finish = {}, None
for chunk in stream:
    for c in chunk.choices:
        for d in c.delta.tool_calls or []:
            entry = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = d.id or entry["id"]
            if d.function and d.function.name:
                entry["name"] += d.function.name
            if d.function and d.function.arguments:
                entry["arguments"] += d.function.arguments
        finish = c.finish_reason or finish
assert finish == "tool_calls", (finish, calls)
assert calls and all(e["name"] == "get_time" and e["id"] for e in calls.values()), calls
for e in calls.values():
    args = json.loads(e["arguments"])
    assert set(args) == {"city"}, args

# 3. The round trip: the client runs the tool and sends its result back as `role: tool`.
history = question + [
    choice.message.model_dump(exclude_none=True),
    {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"},
]
final = client.chat.completions.create(
    model=model, messages=history, tools=tools, tool_choice="none",
    temperature=0, max_tokens=20,
)
answer = final.choices[0]
assert answer.message.tool_calls is None, final
assert answer.message.content and answer.finish_reason in ("stop", "length"), final
# With "auto" the model may call again or answer; either comes back well-formed.
if not short:
    again = client.chat.completions.create(
        model=model, messages=history, tools=tools, parallel_tool_calls=False,
        temperature=0, max_tokens=60,
    )
    m = again.choices[0]
    if m.finish_reason == "tool_calls":
        for c in m.message.tool_calls:
            check_call(c, {"get_weather", "get_time"})
    else:
        assert m.message.content is not None, again

# 4. A named function that is not offered: 400 naming it.
try:
    client.chat.completions.create(
        model=model, messages=question, tools=tools,
        tool_choice={"type": "function", "function": {"name": "launch_rocket"}},
    )
    raise AssertionError("unknown function accepted")
except openai.BadRequestError as e:
    assert "launch_rocket" in str(e), e

print("openai tools: ok")
