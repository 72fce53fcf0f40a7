"""``export-worker dashboard``: the operators' web view of exports (Starlette, Jinja2, plain JS in ``static/``).

It reads through :class:`worker.api.ExportClient`, like the CLI, and follows the events streams over
server-sent events. Actions (retry, cancel) exist only with ``--allow-actions`` and only for operators.
"""
