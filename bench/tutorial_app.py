"""The baseline: a tutorial-style streaming chat, as the Gradio and OpenAI docs show it.

A SYNC generator, the sync `OpenAI` client made per request (it reads OPENAI_BASE_URL and
OPENAI_API_KEY), the whole text yielded per token, Gradio defaults (concurrency limit 1,
40 threads). The model is an extra textbox so the benchmark can pick the fake's stream shape.

    OPENAI_BASE_URL=http://127.0.0.1:9100/openai/v1 OPENAI_API_KEY=test-key python bench/tutorial_app.py --port 7861
"""

import argparse
import os

import gradio as gr
from openai import OpenAI


def respond(message, history, model):
    client = OpenAI()
    messages = [{"role": m["role"], "content": m["content"]} for m in history]
    messages.append({"role": "user", "content": message})
    stream = client.chat.completions.create(model=model, messages=messages, stream=True)
    partial = ""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            partial += chunk.choices[0].delta.content
            yield partial


demo = gr.ChatInterface(
    respond,
    additional_inputs=[gr.Textbox(os.environ.get("TUTORIAL_MODEL", "gpt-4o-mini"), label="Model")],
    api_name="chat",
)

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=7860)
    demo.launch(server_port=parser.parse_args().port)
