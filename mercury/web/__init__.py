"""The web layer: the REST API (FastAPI), authentication, metrics, the `web` service.

It reads the index and writes the configuration; it never touches the spool. The app
factory is :func:`mercury.web.app.create_app` (kept out of this module so that the CLI and
`mercury serve` can use accounts and configuration versions without importing FastAPI).
"""
