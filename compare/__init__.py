"""Comparing models: leaderboard ratings from votes, token prices, and batch runs over prompt files.

Imports `chat` only (never `storage`, `ui` or Gradio). Submodules are imported on use:
`compare.ratings` needs numpy (and pandas for its table helpers), `compare.batch` the chat core.
"""
