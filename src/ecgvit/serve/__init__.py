"""Web service: an upload page and a small JSON API over `ecgvit.predict.Predictor`.

    ecgvit serve RUN [--host 127.0.0.1] [--port 8000] [--workers N] [--queue Q]

Routes: GET / (upload page), POST /predict (multipart field `file` -> JSON), POST /explain
(-> PNG heatmap), GET /healthz, GET /docs (OpenAPI). See `ecgvit.serve.app.create_app`.
"""

from __future__ import annotations

from ecgvit.serve.app import create_app, serve

__all__ = ["create_app", "serve"]
