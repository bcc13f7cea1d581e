"""The Gradio layout: a sidebar of models and conversations beside a ChatInterface."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
from gradio.components import Component
from gradio.events import api

from chat.types import Params, param_bounds
from core.services import Services
from ui.batch import build_batch_tab
from ui.branches import CSS as BRANCHES_CSS
from ui.branches import build_branches
from ui.chat import ChatHandler
from ui.chatbox import ModelChoices, chat_box, validator
from ui.compare.tab import build_compare_tab
from ui.context import TabContext
from ui.dashboard import build_dashboard_tab
from ui.mcp import register_tools as register_mcp_tools
from ui.params import EFFORT_CHOICES, unchecked
from ui.share_panel import build_share_panel
from ui.sidebar import SidebarHandlers

CSS = """
.parley-brand h2 { margin: 0 0 .2rem 0; }
.parley-muted { opacity: .75; font-size: .9em; }
#conv-list .wrap { flex-direction: column; gap: 2px; }
#conv-list label { width: 100%; border-radius: 6px; padding: 4px 8px; }
#conv-list label span { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
#search-hits .hit { font-size: .85em; margin: 4px 0; padding: 4px 6px; border-left: 3px solid var(--color-accent); }
#search-hits mark { background: #fde68a; color: inherit; padding: 0 1px; }
footer { display: none !important; }
#dash-table table, #dash-table th, #dash-table td { font-family: var(--font) !important; }
#chatbot .file-type[data-size]:not([data-size=""])::after { content: " · " attr(data-size); }
#chatbot .message-row img { max-height: 240px; object-fit: contain; }
""" + BRANCHES_CSS

#: Puts the open conversation's id in the address bar (`?c=<id>`), or takes it out, without a new history
#: entry: a reload then reopens it (SidebarHandlers.reopen), and the address can be bookmarked.
SYNC_ADDRESS = """(id) => {
    const url = new URL(window.location.href);
    if (id) { url.searchParams.set("c", id); } else { url.searchParams.delete("c"); }
    if (url.href !== window.location.href) { window.history.replaceState(window.history.state, "", url); }
}"""

EXAMPLES = [
    "Explain the difference between TCP and UDP in three bullet points.",
    "Write a Python function that checks whether a string is a palindrome.",
    "What is the derivative of x^3 · sin(x)? Show the steps in LaTeX.",
]


@dataclass
class ChatView:
    """Named handles on the components tests and later tabs need."""

    model: gr.Dropdown
    system_prompt: gr.Textbox
    conversation_id: gr.State
    owner: gr.State
    chat: gr.ChatInterface


def _slider(name: str, label: str, value: float, step: float, info: str) -> gr.Slider:
    lo, hi = param_bounds(name)
    if lo is None or hi is None:
        raise ValueError(f"Params.{name} needs ge= and le= bounds to be a slider")
    # unchecked: a bad API value gets params_from_inputs' message, not Gradio's bare "Error".
    return unchecked(gr.Slider(minimum=lo, maximum=hi, value=value, step=step, label=label, info=info))


def _build_chat(services: Services, chat_handler: ChatHandler, models: ModelChoices, model: gr.Dropdown, system_prompt: gr.Textbox,
                param_inputs: Sequence[Component],
                api_key: gr.Textbox, use_tools: gr.Checkbox, conversation_id: gr.State, owner: gr.State) -> tuple[gr.ChatInterface, gr.Chatbot]:
    """The chat tab: a ChatInterface whose extra inputs are the sidebar controls."""
    chatbot = gr.Chatbot(
        height="75vh", editable="user", layout="bubble", elem_id="chatbot", show_label=False,
        latex_delimiters=[
            {"left": "$$", "right": "$$", "display": True},
            {"left": "$", "right": "$", "display": False},
            {"left": "\\(", "right": "\\)", "display": False},
            {"left": "\\[", "right": "\\]", "display": True},
        ],
        placeholder="### Ask anything\nReplies stream from the model picked in the sidebar; every turn is saved.",
        buttons=["copy", "copy_all"],
        feedback_options=("Like", "Dislike"),
    )
    chat = gr.ChatInterface(
        chat_handler.respond,
        chatbot=chatbot,
        textbox=chat_box(placeholder="Message Parley… (attach images, PDFs or text files: 📎, drag and drop, or paste)",
                         show_label=False, max_lines=12, submit_btn=True, stop_btn=True, elem_id="msg"),
        multimodal=True,
        additional_inputs=[model, system_prompt, *param_inputs, api_key, use_tools, conversation_id, owner],
        additional_outputs=[conversation_id],
        api_name="chat",
        concurrency_limit=None,
        cache_examples=False,
        examples=[[e] for e in EXAMPLES],
        run_examples_on_click=True,
        editable=True,
        fill_height=True,
        save_history=False,
        # Runs before the textbox is cleared: a message refused here stays in the box (text and files) to edit.
        validator=validator(services, models),
    )
    # `/send`: a turn placed in a conversation's tree by id (continue, retry, branch); see ChatHandler.api_send.
    api(chat_handler.api_send, api_name="send", concurrency_limit=None)
    _follow_server_value(chat)
    return chat, chatbot


def _follow_server_value(chat: gr.ChatInterface) -> None:
    """Setting the chat's value (opening a conversation, Stop's redraw, a version switch) runs Gradio's chain
    `chatbot_value.change` -> show it -> copy the chat back into `chatbot_state` and `chatbot_value`. That copy
    took the chat as the page had it when the copy was sent: when another conversation was opened in between
    (Alt+down right after Stop's redraw, or two opens in quick succession), the copy put the older value back
    and the chat showed one conversation while another was open (the sidebar, the address and the next turn
    all going to the newer one). The copy now takes the value the server holds, which is always the newest.
    """
    root = gr.context.Context.root_block
    if root is None:  # pragma: no cover - ChatInterface is only built inside the app's Blocks
        raise RuntimeError("the chat must be built inside a gr.Blocks")
    value, shown = chat.chatbot_value._id, chat.chatbot
    shows = {f._id for f in root.fns.values() if (value, "change") in [tuple(t) for t in f.targets]}
    copies = [f for f in root.fns.values() if f.trigger_after in shows]
    if len(shows) != 1 or len(copies) != 1 or copies[0].inputs != [shown]:
        # Not Gradio's chain as this was written for: fail at start-up rather than show the wrong conversation.
        raise RuntimeError("gradio.ChatInterface no longer syncs chatbot_value as ui/layout.py expects")
    copies[0].inputs = [chat.chatbot_value]


def build_ui(services: Services) -> gr.Blocks:
    """The whole app as a gr.Blocks (launch options such as css go to launch())."""
    chat_handler = ChatHandler(services)
    models = ModelChoices(services.registry.default_model)
    side = SidebarHandlers(services)
    registry = services.registry
    default_model = registry.default_model
    choices = side.model_choices(registry.cached_models())
    if default_model not in {v for _, v in choices}:
        choices.insert(0, (default_model, default_model))

    demo = gr.Blocks(title="Parley", fill_height=True)
    with demo:
        owner = gr.State(None)
        conversation_id = gr.State(None)
        browser_id = gr.BrowserState("", storage_key="parley_owner", secret=services.config.browser_secret)

        with gr.Sidebar(width=320, open=True):
            gr.Markdown("# 🦜 Parley", elem_classes=["parley-brand"])
            greeting = gr.Markdown("", elem_classes=["parley-muted"])
            if services.config.space_id:
                gr.LoginButton()  # signed in, it reads "Logout (name)" and signs out of Hugging Face
            elif services.config.users:
                # APP_USERS: Gradio's /logout ends this user's sign-in and shows the login page (a shared
                # machine must not stay signed in). Relative, so it works under a proxy's root path too.
                gr.Button("Log out", link="logout", size="sm", variant="secondary", elem_id="logout")
            model = gr.Dropdown(
                choices=choices, value=default_model, label="Model", allow_custom_value=True,
                info="Pick one, or type provider:model", elem_id="model-picker",
            )
            model_info = gr.Markdown("", elem_classes=["parley-muted"])
            missing = side.providers_markdown()
            if missing:
                with gr.Accordion("More providers", open=False):
                    gr.Markdown(missing, elem_classes=["parley-muted"])
            tools_info = "Calculator, time zones, search your chats"
            if services.toolbox is not None and services.toolbox.sources:  # [[mcp_servers]] in models.toml
                tools_info += ", and the tools of this server's MCP servers"
            use_tools = gr.Checkbox(False, label="🛠 Let the model use tools", info=tools_info, elem_id="use-tools")
            system_prompt = gr.Textbox(value="", label="System prompt", lines=2, max_lines=8, placeholder="You are a helpful assistant.")
            with gr.Accordion("Parameters", open=False):
                temperature = _slider("temperature", "Temperature", 1.0, 0.05, "Higher is more varied")
                top_p = _slider("top_p", "Top p", 1.0, 0.01, "Nucleus sampling")
                max_tokens = _slider("max_tokens", "Max tokens", Params.model_fields["max_tokens"].default, 1, "Longest reply")
                # The browser sends an empty Number as 0, so 0 is the "random" value.
                seed = unchecked(gr.Number(value=0, label="Seed", precision=0, minimum=0, maximum=2**31 - 1,
                                           info="0 for random; another value repeats replies"))
                effort = unchecked(gr.Radio(list(EFFORT_CHOICES), value="default", label="Reasoning effort"))
            with gr.Accordion("Use your own API key", open=False):
                api_key = gr.Textbox(
                    value="", type="password", show_label=False, placeholder="Key for the chosen model's provider",
                    info="Used for your replies in this session only: never stored, logged or shown.", elem_id="byok",
                )
            gr.Markdown("## Conversations")
            with gr.Row():
                new_chat = gr.Button("➕ New chat", size="sm", variant="primary", elem_id="new-chat")
                refresh = gr.Button("↻", size="sm", min_width=40, elem_id="refresh-list")
            search = gr.Textbox(placeholder="Search your messages…", show_label=False, elem_id="conv-search", submit_btn=True)
            hits = gr.HTML("", visible=False, elem_id="search-hits")
            conv_list = gr.Radio(choices=[], label="Saved", show_label=False, elem_id="conv-list", container=False)
            with gr.Accordion("Manage conversation", open=False, elem_id="manage"):
                title = gr.Textbox(label="Title", max_lines=1, elem_id="conv-title")
                with gr.Row():
                    rename = gr.Button("Rename", size="sm")
                    pin = gr.Button("📌 Pin / unpin", size="sm")
                delete = gr.Button("🗑 Delete…", size="sm", variant="stop", elem_id="delete")
                with gr.Column(visible=False, elem_id="confirm-row") as confirm_row:
                    confirm_text = gr.HTML("", elem_id="confirm-text")  # names what Delete for good deletes
                    with gr.Row():
                        confirm = gr.Button("Delete for good", size="sm", variant="stop", elem_id="confirm-delete")
                        cancel = gr.Button("Cancel", size="sm")
                with gr.Row():
                    export_json = gr.Button("Export JSON", size="sm")
                    export_md = gr.Button("Export Markdown", size="sm")
                download = gr.File(label="Download", visible=False, interactive=False)
                upload = gr.UploadButton("Import JSON", file_types=[".json"], size="sm")
                build_share_panel(services, conversation_id, owner)
            # The open conversation's id, for the address bar (`?c=<id>`): a State never reaches the browser.
            open_id = gr.Textbox("", visible=False, elem_id="open-conversation")

        param_inputs = [temperature, top_p, max_tokens, seed, effort]
        tabs_ctx = TabContext(services=services, owner=owner, model=model, system_prompt=system_prompt,
                              params=param_inputs, model_choices=choices)
        with gr.Tabs(elem_id="main-tabs"):
            with gr.Tab("💬 Chat", id="chat", elem_id="tab-chat"):
                chat, chatbot = _build_chat(services, chat_handler, models, model, system_prompt, param_inputs, api_key, use_tools, conversation_id, owner)
                branches = build_branches(demo, services, side, chat, chatbot, conversation_id, owner)
            with gr.Tab("⚖️ Compare", id="compare", elem_id="tab-compare"):
                build_compare_tab(tabs_ctx)
            with gr.Tab("📊 Dashboard", id="dashboard", elem_id="tab-dashboard"):
                build_dashboard_tab(tabs_ctx)
            with gr.Tab("🗂 Batch", id="batch", elem_id="tab-batch"):
                build_batch_tab(tabs_ctx)

        # identity first, then the list; models are listed live in a separate event so a slow
        # provider never delays the page.
        opened = [chat.chatbot_value, conversation_id, model, system_prompt, *param_inputs, title, branches.map]
        # Then the conversation in the address is reopened (a reload), and the address says what is open (a
        # link to a conversation that cannot be opened is dropped from it). Its own event, after on_load: it
        # needs the owner, and only a page with a link writes to the parameter widgets.
        demo.load(side.on_load, [browser_id], [owner, browser_id, greeting, conv_list, hits], api_visibility="private").then(
            side.reopen, [owner], [*opened, open_id], api_visibility="private").then(None, [open_id], None, js=SYNC_ADDRESS)
        demo.load(side.on_model_change, [model], [model_info, *param_inputs, use_tools], api_visibility="private")
        demo.load(side.refresh_models, [model], [model], api_visibility="private")
        model.change(side.on_model_change, [model], [model_info, *param_inputs, use_tools], api_visibility="private")
        # The box's check (which sees only the box) needs the model: remembered per session.
        def remember(m: str, request: gr.Request) -> None:
            models.note(request.session_hash, m)

        demo.load(remember, [model], None, queue=False, api_visibility="private")
        model.change(remember, [model], None, queue=False, api_visibility="private")

        list_outputs = [conv_list, hits]
        refresh.click(side.list_choices, [owner, search], list_outputs, api_visibility="private")
        search.submit(side.list_choices, [owner, search], list_outputs, api_visibility="private")
        # Whatever changes the open conversation (the first reply of a new chat, Edit of the first message,
        # open, delete, new chat, a reload), the list highlights it and the Title field names it.
        conversation_id.change(side.focus, [conversation_id, owner], [conv_list, hits, title, open_id], api_visibility="private")
        open_id.change(None, [open_id], None, js=SYNC_ADDRESS)
        # A confirmation asked for another conversation closes: Delete for good deletes the open one.
        conversation_id.change(lambda: gr.update(visible=False), None, [confirm_row], queue=False, api_visibility="private")
        chat.chatbot_state.change(side.list_choices, [owner, search], list_outputs, api_visibility="private")

        conv_list.input(side.open_conversation, [conv_list, owner], opened, api_visibility="private")
        new_chat.click(side.new_chat, None, [chat.chatbot_value, conversation_id, conv_list, title], api_visibility="private")

        async def show_stopped(conv: str | None, owner_state: str | None, request: gr.Request) -> tuple[Any, ...]:
            return await side.show_stopped(chat_handler, conv, owner_state, request)

        # Stop: once the reply is saved, the chat shows it as stored (its text, the Stopped note, its metrics).
        chat.textbox.stop(show_stopped, [conversation_id, owner], [chatbot, chat.chatbot_state, chat.chatbot_value, conversation_id],
                          api_visibility="private")
        # Clearing the chat starts a new conversation; the saved one stays in the list.
        chatbot.clear(lambda: None, None, [conversation_id], api_visibility="private")
        chatbot.like(side.feedback, [chatbot, conversation_id, owner], None, api_visibility="private")
        chatbot.undo(side.undo, [chatbot, conversation_id, owner], None, api_visibility="private")

        rename.click(side.rename, [conversation_id, title, owner], [conv_list], api_visibility="private")
        pin.click(side.toggle_pin, [conversation_id, owner], [conv_list], api_visibility="private")
        delete.click(side.ask_delete, [conversation_id, owner], [confirm_row, confirm_text], api_visibility="private")
        cancel.click(lambda: gr.update(visible=False), None, [confirm_row], api_visibility="private")
        confirm.click(side.delete, [conversation_id, owner], [conv_list, chat.chatbot_value, conversation_id, confirm_row], api_visibility="private")
        export_json.click(side.export_json, [conversation_id, owner], [download], api_visibility="private")
        export_md.click(side.export_markdown, [conversation_id, owner], [download], api_visibility="private")
        upload.upload(side.import_file, [upload, owner], [conv_list], api_visibility="private")
        if services.config.mcp_server:  # PARLEY_MCP=on: the chat, compare, leaderboard and batch tools (ui/mcp.py)
            register_mcp_tools(services, chat_handler.turns)

    demo.parley = ChatView(model=model, system_prompt=system_prompt, conversation_id=conversation_id, owner=owner, chat=chat)  # type: ignore[attr-defined]  # Blocks has no slot for it: app.py and the tests read the chat's components here
    return demo
