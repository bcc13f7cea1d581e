"""Server-side storage of conversations: SQLModel tables, Alembic migrations and the repository.

No Gradio and no `chat` imports here; see storage/README.md for the schema and how to call it.
"""
