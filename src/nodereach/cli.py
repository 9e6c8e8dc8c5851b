"""Command line: parse, call the library, render. Nothing is computed here that the library lacks.

Each command's body lives with its concern (nodereach.<package>.command); this module only declares the
options and turns NodereachError into one clear line and exit code 2.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from nodereach.errors import NodereachError

app = typer.Typer(
    name="nodereach",
    help="Find out why peers cannot reach your P2P node, fix what can be fixed, prove it from outside.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
lab_app = typer.Typer(help="Simulated networks with real kernel NAT (network namespaces; needs root).",
                      no_args_is_help=True)
app.add_typer(lab_app, name="lab")

T = TypeVar("T")


def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call into the library; user-facing errors become one line on stderr and exit code 2."""
    try:
        return fn(*args, **kwargs)
    except NodereachError as exc:
        typer.echo(f"nodereach: {exc.message}", err=True)
        if exc.hint:
            typer.echo(f"  -> {exc.hint}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("nodereach: interrupted", err=True)
        raise typer.Exit(130) from None


# --- check -------------------------------------------------------------------------------------------
@app.command()
def check(
    server: Annotated[list[str], typer.Option("--server", "-s", help="nodereach server HOST[:PORT] "
                                              "(STUN + dial-back); repeatable, e.g. once for its IPv4 and once "
                                              "for its IPv6 address")] = [],  # noqa: B006
    port: Annotated[list[str], typer.Option("--port", "-p", help="node port to test from outside, "
                                            "e.g. 30303/tcp; repeatable")] = [],  # noqa: B006
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON document (nodereach.check/2)")] = False,
    timeout: Annotated[float, typer.Option(help="upper bound on the whole run, seconds")] = 5.0,
    lifetime: Annotated[bool, typer.Option("--lifetime", help="also measure the UDP binding lifetime "
                                           "(slow, bounded by --lifetime-max)")] = False,
    lifetime_max: Annotated[float, typer.Option(help="longest binding lifetime to probe, seconds")] = 120.0,
    config: Annotated[Path | None, typer.Option(help="TOML file with servers and ports")] = None,
    node: Annotated[str | None, typer.Option("--node", help="the node to read over its RPC: KIND[=URL|SOCKET] "
                                             "(bitcoin, ethereum, beacon, kubo, monero, lnd, transmission, "
                                             "syncthing), auto (default: detect a known node on this host) or "
                                             "none")] = None,
) -> None:
    """Find out why peers cannot reach this node, and say what to do, over IPv4 and IPv6 (give a server name
    with both addresses, or --server once per family). A port is reachable only when a program listens on it
    and peers' first packets reach it. With no --port, the ports of the known node programs listening here
    are tested. Exit: 0 reachable, 1 unreachable, 2 usage/environment error, 3 no connectivity, 4 partly
    reachable (over some of the address families that this host and the node have)."""
    from nodereach.diagnose.command import check_command

    code = _run(check_command, servers=server, ports=port, json_out=json_out, timeout=timeout,
                lifetime=lifetime, lifetime_max=lifetime_max, config=config, node=node)
    raise typer.Exit(code)


# --- watch -------------------------------------------------------------------------------------------
@app.command()
def watch(
    server: Annotated[list[str], typer.Option("--server", "-s", help="nodereach server HOST[:PORT], as in check; "
                                              "repeatable")] = [],  # noqa: B006
    port: Annotated[list[str], typer.Option("--port", "-p", help="node port to keep reachable, e.g. 30303/tcp; "
                                            "repeatable")] = [],  # noqa: B006
    node: Annotated[str | None, typer.Option(help="read the node's peers and advertised address: KIND[=URL]")] = None,
    keep_mapped: Annotated[bool | None, typer.Option("--keep-mapped", help="map the ports on the router and keep "
                                                     "them mapped (what `open` does)")] = None,
    keep_mapped_family: Annotated[str | None, typer.Option(help="with --keep-mapped: 4 (port mappings), 6 (IPv6 "
                                                           "pinholes) or both (default: every family the host "
                                                           "has)")] = None,
    interval: Annotated[float | None, typer.Option(help="seconds between cheap probes (default 60: one STUN "
                                                   "request per server per minute)")] = None,
    metrics: Annotated[str | None, typer.Option(help="Prometheus exporter HOST:PORT, or off "
                                                "(default 127.0.0.1:3481)")] = None,
    on_change: Annotated[str | None, typer.Option(help="command run for each event (JSON on stdin)")] = None,
    webhook: Annotated[str | None, typer.Option(help="URL that gets each event as a JSON POST")] = None,
    hysteresis: Annotated[int | None, typer.Option(help="probes a change must hold before it counts "
                                                   "(default 3)")] = None,
    check_interval: Annotated[float | None, typer.Option(help="seconds between full checks (default 900, "
                                                         "+-10% jitter)")] = None,
    grace: Annotated[float | None, typer.Option(help="seconds after start-up without node events "
                                                "(default 300)")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with the same keys (flags win)")] = None,
) -> None:
    """Keep the node reachable and say when it stops being so: events as JSON lines on stdout, Prometheus
    metrics, an optional command or webhook per event. Runs until SIGTERM/Ctrl-C."""
    from nodereach.watch.command import run_watch
    from nodereach.watch.config import Settings

    flags = Settings(server=server or None, port=port or None, node=node, keep_mapped=keep_mapped,
                     keep_mapped_family=keep_mapped_family, interval=interval,
                     metrics=metrics, on_change=on_change, webhook=webhook, hysteresis=hysteresis,
                     check_interval=check_interval, grace=grace)
    raise typer.Exit(_run(run_watch, flags, config))


# --- serve -------------------------------------------------------------------------------------------
@app.command()
def serve(
    address: Annotated[list[str], typer.Option("--address", "-a", help="address to serve on (primary; repeat "
                                               "for IPv4 and IPv6; default: every address of both "
                                               "families)")] = [],  # noqa: B006
    alt_address: Annotated[list[str], typer.Option(help="second address of a family (repeat for IPv4 and IPv6): "
                                                   "full RFC 5780 STUN over that family, dial-back probes "
                                                   "from it")] = [],  # noqa: B006
    config: Annotated[Path | None, typer.Option(help="TOML config file (flags override it)")] = None,
    stun_port: Annotated[int | None, typer.Option(help="primary STUN port (default 3478)")] = None,
    alt_port: Annotated[int | None, typer.Option(help="second STUN port (default 3479)")] = None,
    http_port: Annotated[int | None, typer.Option(help="dial-back API, web page, metrics (default 3480)")] = None,
    no_stun: Annotated[bool, typer.Option("--no-stun", help="do not run STUN")] = False,
    no_dialback: Annotated[bool, typer.Option("--no-dialback", help="do not run the dial-back service")] = False,
    log_json: Annotated[bool, typer.Option("--log-json", help="structured JSON logs on stderr")] = False,
    trusted_proxy: Annotated[list[str], typer.Option(help="trust X-Forwarded-For from this address/network; "
                                                     "repeatable")] = [],  # noqa: B006
    refused_ports: Annotated[str | None, typer.Option(help="ports the dial-back service never probes, e.g. "
                                                      "'0-79,81-442,444-1023' (the default)")] = None,
) -> None:
    """Run the network's helper servers: RFC 5780 STUN, dial-back checks, web page, metrics."""
    from nodereach.serve.command import run_serve

    _run(run_serve, addresses=address, alt_addresses=alt_address, config=config, stun_port=stun_port,
         alt_port=alt_port, http_port=http_port, no_stun=no_stun, no_dialback=no_dialback,
         log_json=log_json, trusted_proxies=trusted_proxy, refused_ports=refused_ports)


# --- open / mappings ---------------------------------------------------------------------------------
@app.command("open")
def open_(
    ports: Annotated[list[str], typer.Argument(help="ports to map, e.g. 30303/tcp 30303/udp")],
    method: Annotated[str | None, typer.Option(help="force pcp, natpmp or upnp")] = None,
    lease: Annotated[int, typer.Option(help="requested lease, seconds")] = 3600,
    once: Annotated[bool, typer.Option("--once", help="map, print and exit (leases still expire)")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="JSON lines for supervisors")] = False,
    server: Annotated[list[str], typer.Option(help="nodereach server to verify each mapping from outside, over "
                                              "the mapping's family; repeat for one per family")] = [],  # noqa: B006
    timeout: Annotated[float, typer.Option(help="deadline for discovery and each request, seconds")] = 3.0,
    family: Annotated[str | None, typer.Option(help="4 (port mappings), 6 (IPv6 firewall pinholes) or both; "
                                               "default: every family this host has")] = None,
    node: Annotated[str | None, typer.Option("--node", help="the node whose own port mapping to respect: "
                                             "KIND[=URL|SOCKET], auto (default) or none")] = None,
) -> None:
    """Ask the router to forward the node's ports (PCP > NAT-PMP > UPnP) and to open IPv6 pinholes for them
    (PCP > UPnP IGD v2), and keep them alive. Last resort: fixing the NAT or forwarding by hand is safer.
    Refuses ports the node maps itself."""
    from nodereach.portmap.command import run_open

    raise typer.Exit(_run(run_open, ports=ports, method=method, lease=lease, once=once, json_out=json_out,
                          server=server, timeout=timeout, family=family, node=node))


@app.command()
def mappings(
    delete: Annotated[list[str], typer.Option(help="delete this mapping, e.g. 30303/tcp; repeatable")] = [],  # noqa: B006
    method: Annotated[str | None, typer.Option(help="force pcp, natpmp or upnp")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
    timeout: Annotated[float, typer.Option(help="deadline, seconds")] = 3.0,
) -> None:
    """List the port mappings on the gateway (UPnP lists all; PCP/NAT-PMP only nodereach's own) and the IPv6
    pinholes nodereach opened, or delete."""
    from nodereach.portmap.mappings_command import run_mappings

    raise typer.Exit(_run(run_mappings, delete=delete, method=method, json_out=json_out, timeout=timeout))


# --- tunnel-config -----------------------------------------------------------------------------------
@app.command("tunnel-config")
def tunnel_config(
    public_host: Annotated[str, typer.Option("--public-host", help="public IPv4 address of a host you rent")],
    port: Annotated[list[str], typer.Option("--port", "-p", help="node port to forward, e.g. 18080/tcp; "
                                            "repeatable")] = [],  # noqa: B006
    node_address: Annotated[str | None, typer.Option(help="the node's LAN address (default: this host's "
                                                     "address toward the public host)")] = None,
    listen_port: Annotated[int, typer.Option(help="WireGuard UDP port on the public host")] = 51820,
    tunnel_network: Annotated[str, typer.Option(help="a /30 for the two tunnel ends")] = "10.77.0.0/30",
    out: Annotated[Path | None, typer.Option(help="write the files into this directory instead of printing")] = None,
) -> None:
    """Behind carrier-grade NAT without IPv6: WireGuard to a rented public host, its port forwards, both ends."""
    from nodereach.tunnel.command import run_tunnel_config

    raise typer.Exit(_run(run_tunnel_config, public_host=public_host, ports=port, node_address=node_address,
                          listen_port=listen_port, tunnel_network=tunnel_network, out=out))


# --- lab ---------------------------------------------------------------------------------------------
@lab_app.command("list")
def lab_list(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Scenarios with their ground truth."""
    from nodereach.lab.command import run_list

    _run(run_list, json_out=json_out)


@lab_app.command("up")
def lab_up(
    scenario: Annotated[str, typer.Argument(help="scenario name (see `nodereach lab list`)")],
    home_router: Annotated[bool, typer.Option("--home-router", help="run miniupnpd on the home router")] = False,
    delay_ms: Annotated[float, typer.Option(help="one-way delay on the subscriber link, ms")] = 0.0,
    loss: Annotated[float, typer.Option(help="packet loss on the subscriber link, percent")] = 0.0,
) -> None:
    """Build a scenario and leave it running (one CLI lab at a time; `nodereach lab down` removes it)."""
    from nodereach.lab.command import run_up

    _run(run_up, scenario=scenario, home_router=home_router, delay_ms=delay_ms, loss=loss)


@lab_app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def lab_exec(
    ctx: typer.Context,
    host: Annotated[str, typer.Argument(help="client, router, isp, server, peer, coturn, inet")],
    lab_id: Annotated[str | None, typer.Option("--lab", help="id of another running lab (see `nodereach lab "
                                               "status`), e.g. a test's, instead of the CLI lab")] = None,
) -> None:
    """Run a command inside a lab host: nodereach lab exec client -- nodereach check --server 203.0.113.10"""
    from nodereach.lab.command import run_exec

    raise typer.Exit(_run(run_exec, host=host, argv=list(ctx.args), lab_id=lab_id))


@lab_app.command("down")
def lab_down(all_: Annotated[bool, typer.Option("--all", help="also remove stale labs of crashed runs")] = False,
             ) -> None:
    """Tear the CLI lab down (and, with --all, every nodereach lab on this machine)."""
    from nodereach.lab.command import run_down

    _run(run_down, all_labs=all_)


@lab_app.command("status")
def lab_status() -> None:
    """Show the running lab, its hosts and addresses."""
    from nodereach.lab.command import run_status

    _run(run_status)


# --- demo --------------------------------------------------------------------------------------------
@app.command()
def demo(
    scenario: Annotated[list[str], typer.Option(help="only these scenarios; repeatable")] = [],  # noqa: B006
) -> None:
    """Run the diagnosis on every lab scenario and print ground truth next to what nodereach found."""
    from nodereach.lab.demo import run_demo

    raise typer.Exit(_run(run_demo, scenarios=scenario))


@app.command()
def version() -> None:
    """Print the version."""
    from nodereach import __version__

    typer.echo(__version__)


def main() -> None:
    app(prog_name="nodereach")


if __name__ == "__main__":  # pragma: no cover
    main()
