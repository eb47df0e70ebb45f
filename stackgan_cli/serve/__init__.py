"""``stackgan serve``: a local web page and JSON API for trying prompts and browsing runs.

Needs the optional ``serve`` extra (FastAPI and uvicorn); nothing here imports them at package
import, so the CLI can say how to install them.

server.py      checks the extra, prints the URL, runs uvicorn with its connection limits
connections.py uvicorn's HTTP protocol with a request-head deadline and a cap on idle connections
app.py         create_app(): the FastAPI routes (page, /api/generate, /api/runs, /api/health)
validation.py  reading and checking a generate request (size limit, JSON, types, ranges)
generation.py  prompts -> images and a captioned grid in memory, one batch at a time per device
static/        index.html, app.js, style.css: plain files, no build step, no CDN
"""
