"""GET /api/docs: the API reference as one self-contained HTML page, generated from the
OpenAPI spec. No script, style sheet or font is fetched from anywhere (hospital networks
are often offline); the machine-readable spec is at /api/openapi.json."""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

METHODS = ("get", "post", "put", "patch", "delete")
STYLE = """
body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2rem}
.op{margin:.8rem 0;padding:.5rem .8rem;border-left:4px solid #999;background:#f7f7f7}
.m{font-weight:bold;display:inline-block;min-width:4.5rem}
.get{border-color:#2b7bb9}.post{border-color:#2a9d3f}.patch{border-color:#c58a00}
.delete{border-color:#c0392b}code{font-size:95%}p{margin:.3rem 0}
table{border-collapse:collapse;margin:.3rem 0}td,th{padding:.1rem .6rem;text-align:left;
vertical-align:top;font-size:90%}th{border-bottom:1px solid #ccc}
"""


def _parameters(operation: dict[str, Any]) -> str:
    rows = []
    for parameter in operation.get("parameters", []):
        schema = parameter.get("schema", {})
        kind = schema.get("type") or ", ".join(
            str(s.get("type", "")) for s in schema.get("anyOf", []) if s.get("type") != "null"
        )
        rows.append(
            f"<tr><td><code>{escape(parameter['name'])}</code></td>"
            f"<td>{escape(parameter.get('in', ''))}</td><td>{escape(kind)}</td>"
            f"<td>{escape(parameter.get('description', ''))}</td></tr>"
        )
    if not rows:
        return ""
    return (
        "<table><tr><th>parameter</th><th>in</th><th>type</th><th></th></tr>"
        + "".join(rows)
        + "</table>"
    )


def render(spec: dict[str, Any], spec_url: str) -> str:
    info = spec.get("info", {})
    sections: dict[str, list[str]] = {}
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            tag = (operation.get("tags") or ["other"])[0]
            body = operation.get("requestBody", {}).get("content", {})
            sections.setdefault(tag, []).append(
                f'<div class="op {method}"><p><span class="m">{method.upper()}</span>'
                f"<code>{escape(path)}</code> {escape(operation.get('summary', ''))}</p>"
                + (
                    f"<p>{escape(operation['description'])}</p>"
                    if operation.get("description")
                    else ""
                )
                + _parameters(operation)
                + (f"<p>Body: {escape(', '.join(body))}</p>" if body else "")
                + "</div>"
            )
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{escape(info.get('title', 'API'))}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(info.get('title', 'API'))} {escape(str(info.get('version', '')))}</h1>",
        f"<p>{escape(info.get('description', ''))}</p>",
        f'<p>OpenAPI spec: <a href="{escape(spec_url)}">{escape(spec_url)}</a>. '
        "Errors are <code>application/problem+json</code>.</p>",
    ]
    for tag, operations in sections.items():
        parts.append(f"<h2>{escape(tag)}</h2>")
        parts.extend(operations)
    parts.append("</body></html>")
    return "\n".join(parts)


@router.get("/api/docs", response_class=HTMLResponse)
def docs_page(request: Request) -> HTMLResponse:
    app = request.app
    return HTMLResponse(render(app.openapi(), app.openapi_url or "/api/openapi.json"))
