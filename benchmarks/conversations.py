"""Deterministic, realistic-looking conversations for the benchmarks.

Multi-turn chats in several languages and scripts, code, markdown, system prompts, and a mix
of short and very long messages (lengths drawn from a heavy-tailed distribution, as in real
chat data). Generated from fixed word lists and a seeded RNG, so every run measures the same
data without shipping any third-party corpus.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = {
    "en": "the a model answer question because however which would could should about people "
    "time year way day thing world life hand part child eye woman place work week case point "
    "government company number group problem fact explain example important different "
    "following information development experience understand language".split(),
    "de": "der die das und nicht ist ein eine ich sie wir mit auf für von dem auch werden "
    "Regierung Entwicklung Beispiel wichtig verschieden Frage Antwort Erfahrung Sprache".split(),
    "fr": "le la les des une est pas pour que qui dans sur avec plus gouvernement "
    "développement exemple important différent question réponse expérience langue".split(),
    "es": "el la los las una por para con que del como más pero sus gobierno desarrollo "
    "ejemplo importante diferente pregunta respuesta experiencia idioma año".split(),
    "ru": "и в не на я что он с как это по но они мы правительство развитие пример важный "
    "разный вопрос ответ опыт язык год человек время".split(),
    "zh": "的 一 是 不 了 人 我 在 有 他 这 中 大 来 上 国 个 到 说 们 为 子 和 你 地 出 道 也 时 年 "
    "政府 发展 例子 重要 不同 问题 回答 经验 语言".split(),
    "ja": "の に は を た が で て と し れ さ ある いる も する から な こと として い や "
    "政府 開発 例 重要 異なる 質問 答え 経験 言語".split(),
    "ar": "في من على إلى أن هذا مع كان التي الذي عن ما هو الحكومة التنمية مثال مهم مختلف "
    "سؤال جواب خبرة لغة".split(),
    "hi": "के है में की और से को एक यह भी कर पर था सरकार विकास उदाहरण महत्वपूर्ण अलग प्रश्न "
    "उत्तर अनुभव भाषा".split(),
    "ko": "이 그 저 것 수 등 들 및 정부 개발 예 중요한 다른 질문 대답 경험 언어 사람 시간".split(),
}
LANGUAGES = sorted(WORDS)
SPACELESS = {"zh", "ja"}

CODE = [
    "def {name}(items, limit=10):\n    \"\"\"Return the first items.\"\"\"\n    result = []\n"
    "    for i, item in enumerate(items):\n        if i >= limit:\n            break\n"
    "        result.append(item * 2)\n    return result\n",
    "function {name}(xs) {{\n  return xs.filter((x) => x % 2 === 0).map((x) => x * x);\n}}\n",
    "SELECT id, name, COUNT(*) AS n\nFROM orders o JOIN users u ON o.user_id = u.id\n"
    "WHERE o.created_at > '2024-01-01'\nGROUP BY id, name\nORDER BY n DESC;\n",
    "#include <stdio.h>\n\nint {name}(int n) {{\n\tif (n < 2) return n;\n"
    "\treturn {name}(n - 1) + {name}(n - 2);\n}}\n",
    "<div class=\"card\">\n  <h1>{name}</h1>\n  <table><tr><td>1</td><td>2</td></tr></table>\n</div>\n",
]
SYSTEMS = [
    "You are a helpful assistant. Answer concisely.",
    "You are an expert software engineer. Explain your reasoning step by step, then give the "
    "final code in one block.",
    "Réponds toujours en français, de façon polie et précise.",
    "# Policy\n\n- Be truthful.\n- Refuse unsafe requests.\n- Cite sources when you can.\n",
]


def _sentence(rng: random.Random, language: str) -> str:
    words = WORDS[language]
    text = ("" if language in SPACELESS else " ").join(
        rng.choice(words) for _ in range(rng.randint(4, 18))
    )
    return text[0].upper() + text[1:] + rng.choice([".", ".", ".", "?", "!", "。" if language in SPACELESS else "."])


def _message(rng: random.Random, language: str, role: str) -> str:
    # Heavy-tailed length: most messages are a few sentences, a few are pages long.
    target = int(min(40_000, rng.lognormvariate(5.3 if role == "user" else 6.4, 1.1)))
    parts = []
    size = 0
    while size < target:
        if role == "model" and rng.random() < 0.12:
            block = "```\n" + rng.choice(CODE).format(name=f"f{rng.randint(0, 999)}") + "```"
        elif rng.random() < 0.08:
            block = "\n".join(f"- {_sentence(rng, language)}" for _ in range(rng.randint(2, 5)))
        else:
            block = " ".join(_sentence(rng, language) for _ in range(rng.randint(1, 4)))
        parts.append(block)
        size += len(block)
    return "\n\n".join(parts)


def generate(count: int, *, seed: int = 0) -> list[list[dict]]:
    """``count`` conversations, the same for the same ``count`` and ``seed``."""
    rng = random.Random(seed)
    conversations = []
    for _ in range(count):
        language = rng.choice(LANGUAGES)
        messages = []
        if rng.random() < 0.3:
            messages.append({"role": "system", "content": rng.choice(SYSTEMS)})
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4, 6])):
            messages.append({"role": "user", "content": _message(rng, language, "user")})
            messages.append({"role": "assistant", "content": _message(rng, language, "model")})
        conversations.append(messages)
    return conversations


TOOLS4 = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city.", "parameters": {
        "type": "object", "required": ["city"], "properties": {
            "city": {"type": "string", "description": "City name"}, "days": {"type": "integer"},
            "units": {"type": "string", "enum": ["C", "F"]}}}}},
    {"type": "function", "function": {"name": "search", "description": "Search the web.", "parameters": {
        "type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer"},
                                         "filters": {"type": "array", "items": {"type": "string"}}}}}},
]


def generate4(count: int, *, seed: int = 0) -> list[dict]:
    """``count`` Gemma 4 records (messages, tools, thinking switch): system turns, reasoning,
    tool calls with their results and answers, in the languages of :func:`generate`."""
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        language = rng.choice(LANGUAGES)
        messages = []
        if rng.random() < 0.5:
            messages.append({"role": "system", "content": rng.choice(SYSTEMS)})
        for _ in range(rng.choice([1, 1, 2, 3])):
            messages.append({"role": "user", "content": _message(rng, language, "user")})
            for step in range(rng.choice([0, 1, 1, 2])):
                calls = []
                for k in range(rng.choice([1, 1, 2])):
                    call_id = f"c{len(messages)}_{k}"
                    if rng.random() < 0.5:
                        arguments = {"city": _sentence(rng, language)[:30], "days": rng.randint(1, 14), "units": "C"}
                        calls.append({"type": "function", "id": call_id, "function": {"name": "get_weather", "arguments": arguments}})
                    else:
                        arguments = {"query": _sentence(rng, language), "limit": rng.randint(1, 50), "filters": ["news", "recent"]}
                        calls.append({"type": "function", "id": call_id, "function": {"name": "search", "arguments": arguments}})
                message = {"role": "assistant", "tool_calls": calls}
                if rng.random() < 0.5:
                    message["reasoning_content"] = _sentence(rng, language)
                messages.append(message)
                for call in calls:
                    result = {"summary": _message(rng, language, "user"), "score": rng.random(), "ok": True}
                    messages.append({"role": "tool", "tool_call_id": call["id"], "content": result if rng.random() < 0.5 else json.dumps(result)})
            answer = {"role": "assistant", "content": _message(rng, language, "model")}
            if rng.random() < 0.4:
                answer["reasoning_content"] = _message(rng, language, "user")
            messages.append(answer)
        record = {"messages": messages}
        if rng.random() < 0.7:
            record["tools"] = TOOLS4
        if rng.random() < 0.4:
            record["chat_template_kwargs"] = {"enable_thinking": True}
        records.append(record)
    return records


def load_jsonl(path: str | Path) -> list[list[dict]]:
    """Conversations from a JSONL file of ``{"messages": [...]}`` lines (or a folder of them)."""
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    conversations = []
    for file in files:
        with open(file, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    value = json.loads(line)
                    conversations.append(value["messages"] if isinstance(value, dict) else value)
    return conversations


# -- Gemma 4: records with a system turn, thinking, tool declarations, calls and results ---------

TOOLS = [
    {"type": "function", "function": {
        "name": "search_documents", "description": "Search the knowledge base and return the best passages.",
        "parameters": {"type": "object", "required": ["query"], "properties": {
            "query": {"type": "string", "description": "What to look for"},
            "limit": {"type": "integer", "description": "How many passages"},
            "language": {"type": "string", "enum": ["en", "de", "fr", "es", "zh", "ja"]},
            "filters": {"type": "object", "properties": {
                "year": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}}}}}}},
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather and a forecast for a city.",
        "parameters": {"type": "object", "required": ["city"], "properties": {
            "city": {"type": "string"}, "days": {"type": "integer"},
            "units": {"type": "string", "enum": ["metric", "imperial"]}}}}},
    {"type": "function", "function": {
        "name": "run_sql", "description": "Run a read-only SQL query on the analytics database.",
        "parameters": {"type": "object", "required": ["sql"], "properties": {
            "sql": {"type": "string"}, "timeout_s": {"type": "number", "nullable": True}}}}},
]
AGENT_SYSTEM = (
    "You are a research assistant for an analytics team. Use the tools when the answer depends on "
    "data you do not have. Cite the passages you use. Keep answers short and precise.\n\n"
    "# Rules\n- Never invent numbers.\n- Ask for clarification when the question is ambiguous.\n"
)


def _arguments(rng: random.Random, tool: dict, language: str) -> dict:
    name = tool["function"]["name"]
    if name == "search_documents":
        return {"query": _sentence(rng, language), "limit": rng.randint(1, 10), "language": rng.choice(["en", "de", "fr"]),
                "filters": {"year": rng.randint(2015, 2026), "tags": [rng.choice(["report", "memo", "faq"])]}}
    if name == "get_weather":
        return {"city": rng.choice(["Oslo", "Lagos", "Lima", "Osaka", "Bern"]), "days": rng.randint(1, 7), "units": "metric"}
    return {"sql": f"SELECT region, SUM(revenue) FROM sales WHERE year = {rng.randint(2019, 2026)} GROUP BY region",
            "timeout_s": rng.choice([None, 2.5, 10.0])}


def _result(rng: random.Random, tool: dict, language: str):
    name = tool["function"]["name"]
    if name == "search_documents":
        return json.dumps({"passages": [_sentence(rng, language) for _ in range(rng.randint(1, 4))]}, ensure_ascii=False)
    if name == "get_weather":
        return {"temperature_c": round(rng.uniform(-10, 35), 1), "sky": rng.choice(["clear", "rain", "snow"]), "wind_kmh": rng.randint(0, 60)}
    return {"rows": [[rng.choice(["EU", "US", "APAC"]), rng.randint(1000, 99999)] for _ in range(rng.randint(1, 4))]}


def generate_gemma4(count: int, *, seed: int = 0) -> list[dict]:
    """``count`` Gemma 4 records ({"messages", "tools", "chat_template_kwargs"}): most with the same
    long system prompt and tool declarations (as real agent data repeats them), thinking on or
    off, reasoning, one or two tool-use steps with parallel calls, and plain chats in between."""
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        language = rng.choice(LANGUAGES)
        agent = rng.random() < 0.7
        messages = [{"role": "system", "content": AGENT_SYSTEM if agent else rng.choice(SYSTEMS)}]
        turns = rng.choice([1, 1, 2, 3])
        for turn in range(turns):
            messages.append({"role": "user", "content": _message(rng, language, "user")})
            last = turn == turns - 1
            if agent and rng.random() < 0.8:
                for step in range(rng.choice([1, 1, 2])):
                    calls = []
                    for _ in range(rng.choice([1, 1, 2])):
                        tool = rng.choice(TOOLS)
                        calls.append({"type": "function", "id": f"call_{rng.randint(0, 10**9)}",
                                      "function": {"name": tool["function"]["name"], "arguments": _arguments(rng, tool, language)}})
                    call = {"role": "assistant", "tool_calls": calls}
                    if last and rng.random() < 0.5:
                        call["reasoning_content"] = _sentence(rng, language)
                    messages.append(call)
                    for c in calls:
                        tool = next(t for t in TOOLS if t["function"]["name"] == c["function"]["name"])
                        messages.append({"role": "tool", "tool_call_id": c["id"], "content": _result(rng, tool, language)})
            answer = {"role": "assistant", "content": _message(rng, language, "model")}
            if last and rng.random() < 0.5:
                answer["reasoning_content"] = " ".join(_sentence(rng, language) for _ in range(rng.randint(1, 5)))
            messages.append(answer)
        record = {"messages": messages, "chat_template_kwargs": {"enable_thinking": rng.random() < 0.5}}
        if agent:
            record["tools"] = TOOLS
        records.append(record)
    return records


def texts_of(record) -> list[str]:
    """Every text a record carries (contents, reasoning, arguments and results as JSON): what
    a floor encode of the same data encodes."""
    messages = record["messages"] if isinstance(record, dict) else record
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        elif content is not None:
            out.append(json.dumps(content, ensure_ascii=False))
        if m.get("reasoning_content"):
            out.append(m["reasoning_content"])
        for call in m.get("tool_calls") or ():
            out.append(json.dumps(call["function"]["arguments"], ensure_ascii=False))
    if isinstance(record, dict) and record.get("tools"):
        out.append(json.dumps(record["tools"], ensure_ascii=False))
    return out
