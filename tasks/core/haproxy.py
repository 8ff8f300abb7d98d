"""HAProxy as the edge proxy: config rendering and Runtime API commands.

Traffic is switched through HAProxy's Runtime API instead of a reload: a
reload restarts workers and closes idle keep-alive connections, which loses
requests under load; a runtime state change is atomic, keeps every client
connection, and lets in-flight requests on the old server finish (draining).
Each service/environment gets one backend with two server slots, blue and
green; the idle slot receives the new version.
"""

from __future__ import annotations

from dataclasses import dataclass

SLOTS = ("blue", "green")


def backend_name(service: str, environment: str) -> str:
    return f"shipyard_{service}_{environment}".replace("-", "_")


def other_slot(slot: str) -> str:
    return SLOTS[1] if slot == SLOTS[0] else SLOTS[0]


@dataclass(frozen=True)
class SlotState:
    slot: str
    address: str
    port: int
    ready: bool

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"


def parse_servers_state(text: str) -> dict[str, SlotState]:
    """Parse `show servers state <backend>` output into slot states.

    Columns (HAProxy 2.x, format version 1): be_id be_name srv_id srv_name
    srv_addr srv_op_state srv_admin_state ... srv_port; the header line
    names the columns, so it is read rather than assumed.
    """
    states: dict[str, SlotState] = {}
    header: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            header = line.lstrip("# ").split()
            continue
        parts = line.split()
        if header is None or len(parts) < len(header) - 2:
            continue
        row = dict(zip(header, parts, strict=False))
        admin = int(row.get("srv_admin_state", "1"))
        operational = int(row.get("srv_op_state", "0"))
        name = row["srv_name"]
        states[name] = SlotState(
            slot=name,
            address=row["srv_addr"],
            port=int(row.get("srv_port", "0")),
            # Admin bit 0x4 (disabled in the config) stays set after a runtime
            # "ready"; only forced/inherited maintenance and drain (0x1, 0x2,
            # 0x8) stop traffic, and op_state 2 means the server takes requests.
            ready=operational == 2 and not admin & 0xB,
        )
    return states


def active_slot(states: dict[str, SlotState]) -> SlotState | None:
    """The slot serving traffic; a half-switched backend (both ready) counts as none."""
    ready = [s for s in states.values() if s.ready and s.slot in SLOTS]
    return ready[0] if len(ready) == 1 else None


def switch_commands(backend: str, to_slot: str, host: str, port: int) -> list[str]:
    """Commands that move all new requests to `to_slot` at host:port.

    The new slot is made ready before the old one leaves, so there is never a
    moment with no server; `maint` lets requests already on the old server
    finish while it receives no new ones.
    """
    old = other_slot(to_slot)
    return [
        f"set server {backend}/{to_slot} addr {host} port {port}",
        f"set server {backend}/{to_slot} state ready",
        f"set server {backend}/{old} state maint",
    ]


def disable_commands(backend: str, slot: str) -> list[str]:
    return [f"set server {backend}/{slot} state maint"]


@dataclass(frozen=True)
class Route:
    """One public entry point: a frontend port routed to a service/environment backend."""

    service: str
    environment: str
    bind: str


def freeze_rule(backend: str, freeze_map: str) -> str:
    """Refuse writes with 503 + Retry-After while the backend's key is in the freeze map.

    A migration's cutover adds the key through the Runtime API (`add map`),
    so no reload is needed; reads keep flowing, and a refused write was never
    acknowledged, so the client's retry lands on the new version.
    """
    return (
        "    http-request return status 503 content-type text/plain"
        ' string "writes are frozen for a release; retry" hdr Retry-After 1'
        f" if !METH_GET !METH_HEAD !METH_OPTIONS {{ str({backend}),map({freeze_map}) -m found }}"
    )


def render_config(
    routes: list[Route], admin_bind: str, pidfile: str | None = None, freeze_map: str | None = None
) -> str:
    """A complete haproxy.cfg for the given routes (what Shipyard's local stack runs).

    In production users keep their own config and add the backend block shown
    here; only the Runtime API socket and the two slot servers are required.
    """
    lines = [
        "global",
        f"    stats socket ipv4@{admin_bind} level admin",
        "    stats timeout 10s",
        "    maxconn 4096",
    ]
    if pidfile:
        lines.append(f"    pidfile {pidfile}")
    lines += [
        "",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-keep-alive 10s",
        "    retries 3",
        "    retry-on conn-failure empty-response response-timeout",
        "    option redispatch",
        "",
    ]
    for route in routes:
        be = backend_name(route.service, route.environment)
        lines += [
            f"frontend fe_{be}",
            f"    bind {route.bind}",
            f"    default_backend {be}",
            "",
            f"backend {be}",
            "    balance roundrobin",
            "    http-reuse safe",
        ]
        if freeze_map:
            lines.append(freeze_rule(be, freeze_map))
        for slot in SLOTS:
            lines.append(f"    server {slot} 127.0.0.1:9 disabled")
        lines.append("")
    return "\n".join(lines)
