"""`pulse api`: serve the app with uvicorn (uvloop + httptools), print where and how."""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys

from pulse.settings import Settings

log = logging.getLogger("pulse.api")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_keys(settings: Settings, insecure: bool) -> tuple[dict[str, str] | None, str | None]:
    """(keys, generated admin key) for this process; refuses --insecure off loopback."""
    if insecure:
        if not is_loopback(settings.api_host):
            raise SystemExit(
                f"--insecure turns authentication off and is only allowed on loopback; "
                f"PULSE_API_HOST is {settings.api_host}. Set PULSE_API_KEYS instead.")
        return None, None
    keys = settings.read_api_keys()
    if keys is not None:
        return keys, None
    from .auth import Keys

    key, keys = Keys.generate_admin()
    return keys, key


def dashboard_url(settings: Settings, key: str | None) -> str:
    host = settings.api_host
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    suffix = f"/?key={key}" if key else "/"
    return f"http://{shown}:{settings.api_port}{suffix}"


def check_port(settings: Settings) -> None:
    family = socket.AF_INET6 if ":" in settings.api_host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((settings.api_host, settings.api_port))
        except OSError as exc:
            raise SystemExit(
                f"cannot listen on {settings.api_host}:{settings.api_port} ({exc.strerror}); "
                "set PULSE_API_PORT (or PULSE_API_HOST) to a free address") from None


def check_lake(settings: Settings) -> None:
    """A lake the API cannot read is a setting to fix: say which, and do not start."""
    from pulse.lakefs import LakeStore, LakeStoreError

    try:
        LakeStore.open(settings.lake, settings).check()
    except LakeStoreError as exc:
        raise SystemExit(f"pulse api: {exc}") from None


def run_api(settings: Settings, insecure: bool = False) -> None:
    import uvicorn

    from .app import create_app

    keys, generated = resolve_keys(settings, insecure)
    check_port(settings)
    check_lake(settings)
    app = create_app(settings, keys=keys, insecure=insecure)
    if insecure:
        print(f"pulse api: authentication is OFF (--insecure): {dashboard_url(settings, None)}",
              flush=True)
    elif generated:
        print("pulse api: PULSE_API_KEYS is not set, so this run uses a new admin key.",
              flush=True)
        print(f"pulse api: dashboard: {dashboard_url(settings, generated)}", flush=True)
    else:
        print(f"pulse api: listening on {dashboard_url(settings, None)} "
              f"({len(keys or {})} API keys)", flush=True)
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, loop="uvloop",
                http="httptools", access_log=False, log_level=settings.log_level.lower(),
                timeout_graceful_shutdown=5, h11_max_incomplete_event_size=16 * 1024)
    sys.exit(0)
