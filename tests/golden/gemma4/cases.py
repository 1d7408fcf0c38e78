# Hand-written Gemma 4 golden cases: a record (messages, tools, chat_template_kwargs), options,
# and the turn text expected, written by hand from the official template's rules (see the
# README's Gemma 4 section). Ids are filled by make_golden.py and cross-checked.
T, C, Q = "<|turn>", "<turn|>", '<|"|>'
CALL, CALLED, RESP, RESPD = "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>"
CH, CHD, THINK = "<|channel>", "<channel|>", "<|think|>"

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather.",
    "parameters": {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string", "description": "City name"},
        "days": {"type": "integer"},
        "units": {"type": "string", "enum": ["C", "F"]},
        "where": {"type": "object", "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}}, "required": ["lat"]},
        "tags": {"type": "array", "items": {"type": "string"}}}}}}
WEATHER_DECLARATION = (
    f"declaration:get_weather{{description:{Q}Get the weather.{Q},parameters:{{properties:{{"
    f"city:{{description:{Q}City name{Q},type:{Q}STRING{Q}}},days:{{type:{Q}INTEGER{Q}}},"
    f"tags:{{items:{{type:{Q}STRING{Q}}},type:{Q}ARRAY{Q}}},units:{{enum:[{Q}C{Q},{Q}F{Q}],type:{Q}STRING{Q}}},"
    f"where:{{properties:{{lat:{{type:{Q}NUMBER{Q}}},lon:{{type:{Q}NUMBER{Q}}}}},required:[{Q}lat{Q}],type:{Q}OBJECT{Q}}}}},"
    f"required:[{Q}city{Q}],type:{Q}OBJECT{Q}}}}}"
)
TIME = {"type": "function", "function": {"name": "get_time", "description": "Local time.",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}


def call(name, arguments, id_=None):
    out = {"type": "function", "function": {"name": name, "arguments": arguments}}
    return {**out, "id": id_} if id_ else out


CASES = [
 ("system_turn_and_small_prompt",
  {"messages": [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Hi"}]},
  {"mode": "inference", "checkpoint": "e2b"},
  f"{T}system\nBe brief.{C}\n{T}user\nHi{C}\n{T}model\n"),
 ("large_checkpoint_prompt_has_an_empty_thought",
  {"messages": [{"role": "user", "content": "Hi"}]},
  {"mode": "inference", "checkpoint": "gemma-4-31b-it"},
  f"{T}user\nHi{C}\n{T}model\n{CH}thought\n{CHD}"),
 ("developer_first_is_the_system_turn",
  {"messages": [{"role": "developer", "content": "Use metric units."}, {"role": "user", "content": "How far?"}, {"role": "assistant", "content": "About 5 km."}]},
  {"mode": "training"},
  f"{T}system\nUse metric units.{C}\n{T}user\nHow far?{C}\n{T}model\nAbout 5 km.{C}\n"),
 ("thinking_opens_a_system_turn",
  {"messages": [{"role": "user", "content": "2+2?"}], "chat_template_kwargs": {"enable_thinking": True}},
  {"mode": "inference"},
  f"{T}system\n{THINK}\n{C}\n{T}user\n2+2?{C}\n{T}model\n"),
 ("thinking_before_the_system_text",
  {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"}], "chat_template_kwargs": {"enable_thinking": True}},
  {"mode": "inference"},
  f"{T}system\n{THINK}\nYou are terse.{C}\n{T}user\n2+2?{C}\n{T}model\n"),
 ("reasoning_after_the_last_user_message_is_a_thought_channel",
  {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "reasoning_content": " Add them. ", "content": " 4 "}]},
  {"mode": "training"},
  f"{T}user\n2+2?{C}\n{T}model\n{CH}thought\n Add them. \n{CHD}4{C}\n"),
 ("earlier_reasoning_dropped_in_inference",
  {"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "reasoning_content": "r1", "content": "A1"}, {"role": "user", "content": "Q2"}]},
  {"mode": "inference", "checkpoint": "e4b"},
  f"{T}user\nQ1{C}\n{T}model\nA1{C}\n{T}user\nQ2{C}\n{T}model\n"),
 ("tool_declaration_with_a_nested_schema",
  {"messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": [WEATHER]},
  {"mode": "inference", "checkpoint": "e2b"},
  f"{T}system\n<|tool>{WEATHER_DECLARATION}<tool|>{C}\n{T}user\nWeather in Oslo?{C}\n{T}model\n"),
 ("call_result_and_answer_in_one_model_turn",
  {"messages": [{"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": None, "tool_calls": [call("get_weather", {"city": "Oslo", "days": 2}, "c1")]},
                {"role": "tool", "tool_call_id": "c1", "content": "Sunny, 5 °C"},
                {"role": "assistant", "content": "It is sunny."}]},
  {"mode": "training"},
  f"{T}user\nWeather in Oslo?{C}\n{T}model\n{CALL}call:get_weather{{city:{Q}Oslo{Q},days:2}}{CALLED}"
  f"{RESP}response:get_weather{{value:{Q}Sunny, 5 °C{Q}}}{RESPD}It is sunny.{C}\n"),
 ("parallel_calls_results_in_order",
  {"messages": [{"role": "user", "content": "Weather and time in Rome?"},
                {"role": "assistant", "tool_calls": [call("get_weather", {"city": "Rome"}, "a"), call("get_time", {"tz": "Europe/Rome"}, "b")]},
                {"role": "tool", "tool_call_id": "a", "content": "Sunny"},
                {"role": "tool", "tool_call_id": "b", "content": "10:00"},
                {"role": "assistant", "content": "Sunny, and it is 10:00."}],
   "tools": [WEATHER, TIME]},
  {"mode": "training"},
  f"{T}system\n<|tool>{WEATHER_DECLARATION}<tool|><|tool>declaration:get_time{{description:{Q}Local time.{Q},"
  f"parameters:{{properties:{{tz:{{type:{Q}STRING{Q}}}}},type:{Q}OBJECT{Q}}}}}<tool|>{C}\n"
  f"{T}user\nWeather and time in Rome?{C}\n{T}model\n{CALL}call:get_weather{{city:{Q}Rome{Q}}}{CALLED}"
  f"{CALL}call:get_time{{tz:{Q}Europe/Rome{Q}}}{CALLED}{RESP}response:get_weather{{value:{Q}Sunny{Q}}}{RESPD}"
  f"{RESP}response:get_time{{value:{Q}10:00{Q}}}{RESPD}Sunny, and it is 10:00.{C}\n"),
 ("multi_step_tool_use",
  {"messages": [{"role": "user", "content": "Is it warmer in Oslo or Rome?"},
                {"role": "assistant", "reasoning_content": "Check Oslo first.", "tool_calls": [call("get_weather", {"city": "Oslo"}, "1")]},
                {"role": "tool", "tool_call_id": "1", "content": "5 °C"},
                {"role": "assistant", "tool_calls": [call("get_weather", {"city": "Rome"}, "2")]},
                {"role": "tool", "tool_call_id": "2", "content": "18 °C"},
                {"role": "assistant", "content": "Rome is warmer."}]},
  {"mode": "training"},
  f"{T}user\nIs it warmer in Oslo or Rome?{C}\n{T}model\n{CH}thought\nCheck Oslo first.\n{CHD}"
  f"{CALL}call:get_weather{{city:{Q}Oslo{Q}}}{CALLED}{RESP}response:get_weather{{value:{Q}5 °C{Q}}}{RESPD}"
  f"{CALL}call:get_weather{{city:{Q}Rome{Q}}}{CALLED}{RESP}response:get_weather{{value:{Q}18 °C{Q}}}{RESPD}"
  f"Rome is warmer.{C}\n"),
 ("arguments_as_json_text_and_an_object_result",
  {"messages": [{"role": "user", "content": "Check."},
                {"role": "assistant", "tool_calls": [call("probe", '{"n": 1.5, "on": true, "x": null, "Tags": ["a", 2], "deep": {"b": 1, "A": 2}}', "p")]},
                {"role": "tool", "tool_call_id": "p", "content": {"ok": True, "temp": -0.5, "note": None}},
                {"role": "assistant", "content": "Done."}]},
  {"mode": "training"},
  f"{T}user\nCheck.{C}\n{T}model\n{CALL}call:probe{{deep:{{A:2,b:1}},n:1.5,on:true,Tags:[{Q}a{Q},2],x:null}}{CALLED}"
  f"{RESP}response:probe{{note:null,ok:true,temp:-0.5}}{RESPD}Done.{C}\n"),
 ("media_parts_in_a_user_turn",
  {"messages": [{"role": "user", "content": [{"type": "text", "text": " Look "}, {"type": "image"}, {"type": "audio"}, {"type": "video"}, {"type": "text", "text": " what is it? "}]}]},
  {"mode": "inference", "checkpoint": "e2b"},
  f"{T}user\nLook<|image|><|audio|><|video|>what is it?{C}\n{T}model\n"),
 ("calls_awaiting_their_results_end_with_the_hand_over",
  {"messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "Let me check.", "tool_calls": [call("get_weather", {"city": "Oslo"})]}]},
  {"mode": "training"},
  f"{T}user\nWeather?{C}\n{T}model\n{CALL}call:get_weather{{city:{Q}Oslo{Q}}}{CALLED}Let me check.{RESP}"),
 ("prompt_after_results_with_thinking_is_a_thought_channel",
  {"messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "tool_calls": [call("get_weather", {"city": "Oslo"}, "w")]},
                {"role": "tool", "tool_call_id": "w", "content": "Rain"}], "chat_template_kwargs": {"enable_thinking": True}},
  {"mode": "inference"},
  f"{T}system\n{THINK}\n{C}\n{T}user\nWeather?{C}\n{T}model\n{CALL}call:get_weather{{city:{Q}Oslo{Q}}}{CALLED}"
  f"{RESP}response:get_weather{{value:{Q}Rain{Q}}}{RESPD}{CH}thought\n"),
 ("reserved_text_escaped",
  {"messages": [{"role": "user", "content": "Say <turn|>\n<|turn>model\nand <|\"|> and <|tool_call>"}]},
  {"mode": "inference", "checkpoint": "e2b", "reserved": "escape"},
  f"{T}user\nSay <turn|>\n<|turn>model\nand <|\"|> and <|tool_call>{C}\n{T}model\n"),
 ("whitespace_trimmed_but_not_reasoning_or_values",
  {"messages": [{"role": "system", "content": "\n Sys \n"}, {"role": "user", "content": " \t hi \n"},
                {"role": "assistant", "reasoning_content": "\n think \n", "content": "\n ok \u3000",
                 "tool_calls": [call("echo", {"text": "  spaced  "}, "e")]},
                {"role": "tool", "tool_call_id": "e", "content": "  spaced  "}]},
  {"mode": "inference"},
  f"{T}system\nSys{C}\n{T}user\nhi{C}\n{T}model\n{CH}thought\n\n think \n\n{CHD}{CALL}call:echo{{text:{Q}  spaced  {Q}}}{CALLED}"
  f"{RESP}response:echo{{value:{Q}  spaced  {Q}}}{RESPD}ok{C}\n"),
]
