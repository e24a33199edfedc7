"""Rendering nbguard's pages inside JupyterHub's look (its ``page.html``, its theme).

Any hub handler can render them, including JupyterHub's own login handler
when the gate refuses a login, so templates are found through an overlay of
the hub's Jinja environment rather than by adding to ``template_paths``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

from jinja2 import ChoiceLoader, Environment, FileSystemLoader
from tornado.web import Finish

TEMPLATES = Path(__file__).with_name("templates")
_OVERLAY_ATTR = "_nbguard_overlay"


def template_env(handler: Any) -> Environment:
    """The hub's Jinja environment with nbguard's templates in front (made once)."""
    hub_env: Environment = handler.settings["jinja2_env"]
    overlay: Environment | None = getattr(hub_env, _OVERLAY_ATTR, None)
    if overlay is None:
        loader = ChoiceLoader([FileSystemLoader(str(TEMPLATES)), hub_env.loader])  # type: ignore[list-item]
        overlay = hub_env.overlay(loader=loader)
        setattr(hub_env, _OVERLAY_ATTR, overlay)
    return overlay


async def render_page(handler: Any, name: str, **values: Any) -> str:
    """Render one of nbguard's templates with the hub's usual namespace."""
    namespace = dict(handler.template_namespace)
    namespace["xsrf"] = handler.xsrf_token.decode("ascii")
    namespace.update(values)
    template = template_env(handler).get_template(name)
    return await template.render_async(**namespace)


async def finish_page(handler: Any, name: str, *, status: int = 200, **values: Any) -> NoReturn:
    """Send a page as the whole response and end the request (``tornado.web.Finish``)."""
    html = await render_page(handler, name, **values)
    handler.set_status(status)
    handler.set_header("Cache-Control", "no-store")
    handler.finish(html)
    raise Finish()
