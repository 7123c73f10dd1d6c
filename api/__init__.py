"""The HTTP API: Starlette app, query layer over rollups and the lake, dashboard."""
