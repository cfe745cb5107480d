"""The web console (issue 10): server-rendered pages over the same domain functions as the
API and the CLI. `console.create` builds it; `app.py` mounts it under `/` beside the API."""
