"""Parley's application layer: the use cases every surface calls, and the rules they own.

No Gradio here (an import-linter contract says so). The Gradio handlers in ui/, the `/chat` and
`/compare` API, and the command lines read their inputs, call one use case and show what it returns.
"""
