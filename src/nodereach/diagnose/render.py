"""Human output for `check`: live progress on stderr, then a summary panel, the path drawing, the advice."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from nodereach.diagnose.advice import CAUSES
from nodereach.diagnose.model import ProtocolCheckResult, Report

STEPS = {"servers": "servers", "mapping": "NAT mapping", "filtering": "NAT filtering", "tcp": "TCP outbound",
         "path": "path (TTL probes)", "filters": "outbound port filters", "portmap": "port mapping (gateway)",
         "ports": "node ports from outside", "ipv6": "IPv6 (STUN, filtering, ports from outside)"}
VERDICT_COLOURS = {"reachable": "green", "partly-reachable": "yellow", "unreachable": "red", "no-connectivity": "red"}
FAMILY_WORDS = {"reachable": "[green]reachable[/]", "unreachable": "[red]unreachable[/]",
                "no-connectivity": "[red]no connectivity[/]", "untested": "[dim]untested[/]"}
ICONS = {"running": "[yellow]…[/]", "done": "[green]✓[/]", "failed": "[red]✗[/]", "skipped": "[dim]–[/]"}


class LiveProgress:
    """A live table of probe steps on stderr (nothing on stdout, so output stays pipeable)."""

    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self.state: dict[str, tuple[str, str]] = {}
        self.start = time.monotonic()
        self.live = Live(self._table(), console=self.console, transient=True, refresh_per_second=12)

    def _table(self) -> Table:
        t = Table.grid(padding=(0, 1))
        t.add_row(Text(f"nodereach check  {time.monotonic() - getattr(self, 'start', 0):.2f} s", style="bold"))
        for key, (state, detail) in self.state.items():
            t.add_row(Text.from_markup(f"{ICONS.get(state, state)} {STEPS.get(key, key)} [dim]{detail}[/]"))
        return t

    def update(self, step: str, state: str, detail: str) -> None:
        self.state[step] = (state, detail)
        self.live.update(self._table())

    def __enter__(self) -> LiveProgress:
        if self.console.is_terminal:
            self.live.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self.live.is_started:
            self.live.stop()


def _yn(v: bool | None, yes: str = "yes", no: str = "no") -> str:
    return "[dim]unknown[/]" if v is None else (f"[green]{yes}[/]" if v else f"[red]{no}[/]")


def proof_line(check: ProtocolCheckResult) -> str:
    """The node's answer in its own protocol, under its port."""
    mark = "[green]✓ the node answered[/]" if check.ok else "[red]✗ no answer as the node[/]"
    rtt = f", {check.rtt_ms:.0f} ms" if check.rtt_ms is not None else ""
    return f"  {mark} [dim]({check.protocol} proof{rtt})[/] {escape(check.detail)}"


def path_drawing(rep: Report) -> str:
    """node -> NAT layer(s) -> internet, one line, with the addresses check saw."""
    parts = [f"node {rep.local.address or '?'}"]
    if rep.nat.present is False:
        parts.append("(no NAT" + (", firewall" if "firewall" in rep.causes else "") + ")")
    for layer in rep.nat.layer_details:
        who = {"operator": "your NAT", "provider": "provider NAT (CGNAT)" if rep.nat.cgnat else "provider NAT",
               "unknown": "NAT"}[layer.owner]
        where = f" {layer.router}" if layer.router else ""
        parts.append(f"[{who}{where}]")
    if rep.nat.present and not rep.nat.layer_details:
        parts.append("[NAT]")
    parts.append(f"internet as {rep.public.ipv4 or '?'}")
    return " ──▶ ".join(parts)


def node_panel(rep: Report) -> Panel:
    """The node block: software, version, peers in/out, listens on, advertises, problems with the settings."""
    node = rep.node
    assert node is not None
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    if node.software:
        t.add_row("software", f"{node.software} {node.version or ''}".strip())
    if node.rpc:
        t.add_row("RPC", node.rpc if not node.rpc_error else f"{node.rpc}: [red]{node.rpc_error}[/]")
    if node.peers.inbound is not None or node.peers.outbound is not None:
        t.add_row("peers", f"in {node.peers.inbound if node.peers.inbound is not None else '?'}   "
                           f"out {node.peers.outbound if node.peers.outbound is not None else '?'}")
    if node.reachability:
        t.add_row("its own verdict", node.reachability)
    listens = [f"{x.address}:{x.port}/{x.protocol}" if ":" not in x.address else f"[{x.address}]:{x.port}/{x.protocol}"
               for x in node.listening]
    t.add_row("listens on", ", ".join(listens) or "[red]nothing on the tested ports[/]")
    if node.advertised:
        t.add_row("advertises", ", ".join(
            f"{a.address or '(no address)'}{':' + str(a.port) if a.port is not None else ''}/{a.protocol or '?'} "
            f"[dim]({a.source})[/]" for a in node.advertised[:8]))
    if node.maps_ports is not None and node.maps_ports.enabled is not None:
        t.add_row("maps its ports", f"{_yn(node.maps_ports.enabled)} [dim]({node.maps_ports.setting})[/]")
    if node.ports_picked:
        t.add_row("ports tested", node.ports_picked)
    for p in node.problems:
        fix = f"\n[cyan]{chr(10).join(p.settings)}[/]" if p.settings else ""
        t.add_row(f"[red]{p.code}[/]", f"{escape(p.detail)}{fix}")
    for n in node.notes:
        t.add_row("[dim]note[/]", f"[dim]{escape(n)}[/]")
    return Panel(t, title="the node", title_align="left", border_style="magenta")


def _ipv6_row(rep: Report) -> str:
    """IPv6 in one line: its addresses, translation and filtering, or why it was not tested."""
    six = rep.ipv6
    if rep.reachability.ipv6 == "untested" or (six.reason and rep.reachability.ipv6 == "no-connectivity"):
        return f"[dim]{six.reason or 'not tested'}[/]"
    seen = rep.public.ipv6 or "?"
    own = f"{six.address} seen as {seen}" if six.address and six.address != rep.public.ipv6 else seen
    if six.stable_address and six.stable_address != six.address:
        own += f" (temporary; stable: {six.stable_address})"
    translation = {"none": "no translation", "nptv6": "NPTv6 (prefix translated)", "nat66": "NAT66",
                   "unknown": "translation unknown"}[six.translation]
    return (f"{own}   {translation}, filtering {six.filtering}   "
            f"UDP {_yn(rep.udp.ipv6, 'works', 'blocked')}   TCP {_yn(rep.tcp.ipv6, 'works', 'blocked')}")


def render_report(rep: Report, console: Console | None = None) -> None:
    console = console or Console()
    colour = VERDICT_COLOURS[rep.verdict]
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("verdict", f"[bold {colour}]{rep.verdict}[/]")
    if rep.reachability.ipv6 != "untested" or rep.verdict == "partly-reachable":
        summary.add_row("per family", f"IPv4 {FAMILY_WORDS[rep.reachability.ipv4]}   "
                                      f"IPv6 {FAMILY_WORDS[rep.reachability.ipv6]}")
    if rep.causes:
        summary.add_row("why", "\n".join(f"{CAUSES.get(c, c)} [dim]({c})[/]" for c in rep.causes))
    summary.add_row("outbound", f"UDP {_yn(rep.udp.outbound, 'works', 'blocked')}   "
                                f"TCP {_yn(rep.tcp.outbound, 'works', 'blocked')}")
    blocked = sorted({*rep.udp.blocked_ports, *rep.tcp.blocked_ports})
    if blocked:
        summary.add_row("filtered ports", ", ".join(map(str, blocked)))
    summary.add_row("addresses", f"local {rep.local.address or '?'} via {rep.local.gateway or 'no gateway'}   "
                                 f"public {rep.public.ipv4 or '?'}")
    nat = rep.nat
    summary.add_row("NAT", f"{_yn(nat.present)}  layers {nat.layers if nat.layers is not None else '?'}  "
                           f"CGNAT {_yn(nat.cgnat)}")
    if nat.present is False:
        summary.add_row("behaviour", f"no NAT; inbound filtering {nat.filtering}")
    else:
        summary.add_row("behaviour", f"mapping {nat.mapping}, filtering {nat.filtering}, port preservation "
                                     f"{_yn(nat.port_preservation)}, hairpinning {_yn(nat.hairpinning)}")
    summary.add_row("IPv6", _ipv6_row(rep))
    for p in rep.ports:
        path = "" if p.path_open is None or p.reachable else f"  (network path {_yn(p.path_open, 'open', 'closed')})"
        label = f"port {p.port}/{p.protocol}" + (" IPv6" if p.family == 6 else "")
        summary.add_row(label, f"{_yn(p.reachable, 'reachable', 'not reachable')} [dim]{p.reason or ''}[/]{path}")
        if p.protocol_check is not None:
            summary.add_row("", Text.from_markup(proof_line(p.protocol_check)))
    pm = rep.portmap
    summary.add_row("port mapping", "  ".join(f"{n} {_yn(v.available)}" for n, v in
                                              (("PCP", pm.pcp), ("NAT-PMP", pm.natpmp), ("UPnP", pm.upnp))))
    summary.add_row("path", Text(path_drawing(rep)))
    console.print(Panel(summary, title=f"nodereach check ({rep.duration_s:.2f} s)", border_style=colour))
    if rep.node is not None:
        console.print(node_panel(rep))
    for i, a in enumerate(rep.advice, 1):
        body: list[Text | str] = [a.detail]
        for target, snippet in a.commands.items():
            body.append(Text(f"\n{target}:", style="bold"))
            body.append(Text(snippet, style="cyan"))
        console.print(Panel(Group(*body), title=f"{i}. {a.title}", title_align="left", border_style="blue"))
    for u in rep.untested:
        console.print(f"[dim]not tested: {u}[/]")
    for n in rep.notes:
        console.print(f"[dim]note: {n}[/]")
