"""Web service: an upload page and a small JSON API over `ecgvit.runtime.predictor.Predictor`.

    ecgvit serve RUN [--host 127.0.0.1] [--port 8000] [--workers N] [--queue Q]
                     [--header-timeout S] [--body-timeout S] [--keep-alive S] [--max-connections N]

Routes: GET / (upload page), POST /predict (multipart field `file` -> JSON), POST /explain
(-> PNG heatmap), GET /healthz, GET /docs and /redoc (OpenAPI, served offline). The bounds a
request meets are listed in `ecgvit.serve.app`.
"""

from __future__ import annotations

from ecgvit.serve.app import create_app, serve

__all__ = ["create_app", "serve"]
