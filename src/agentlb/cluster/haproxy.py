"""The HAProxy front: its configuration, rendered from the one template in deploy/haproxy/."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from string import Template

from agentlb.errors import ClusterError

TEMPLATE_NAME = "haproxy.cfg.in"
# a source checkout (editable install): <repo>/deploy/haproxy/; a wheel ships it in the package
_CHECKOUT_TEMPLATE = Path(__file__).resolve().parents[3] / "deploy" / "haproxy" / TEMPLATE_NAME
HAPROXY_CANDIDATES = ("haproxy", "/usr/sbin/haproxy", "/usr/local/sbin/haproxy")


def default_template() -> Path:
    """deploy/haproxy/haproxy.cfg.in of the checkout, else the copy packaged with agentlb."""
    if _CHECKOUT_TEMPLATE.is_file():
        return _CHECKOUT_TEMPLATE
    packaged = Path(str(resources.files("agentlb") / "deploy" / "haproxy" / TEMPLATE_NAME))
    if packaged.is_file():
        return packaged
    raise ClusterError(f"no HAProxy template: neither {_CHECKOUT_TEMPLATE} nor {packaged} exists")


def find_haproxy(explicit: str | None = None) -> str:
    """The haproxy binary (`explicit`, else PATH, else the Debian location)."""
    for candidate in (explicit,) if explicit else HAPROXY_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    wanted = explicit or "haproxy"
    raise ClusterError(
        f"{wanted} not found: install HAProxy (Debian: apt-get install haproxy; `make cluster` does it)"
    )


def render_haproxy_config(
    template: Path, bind_host: str, front_port: int, replicas: Sequence[tuple[str, int]], stats_socket: Path
) -> str:
    """The configuration of a front on `bind_host:front_port` over `replicas` (host, port),
    named replica-0, replica-1, ... (the X-Agentlb-Replica header of every answer)."""
    if not replicas:
        raise ClusterError("a cluster needs at least one replica")
    servers = "".join(f"    server replica-{i} {host}:{port}\n" for i, (host, port) in enumerate(replicas))
    try:
        return Template(template.read_text()).substitute(
            bind_host=bind_host, front_port=front_port, servers=servers, stats_socket=str(stats_socket)
        )
    except (KeyError, ValueError) as exc:
        raise ClusterError(f"HAProxy template {template}: unknown or malformed variable {exc}") from exc
    except OSError as exc:
        raise ClusterError(f"HAProxy template {template} is unreadable: {exc}") from exc
