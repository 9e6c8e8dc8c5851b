"""From raw probe observations to the report's fields (pure apart from reading the sockets' counters)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodereach.diagnose import classify, layers, portfilter
from nodereach.diagnose.advice import decide
from nodereach.diagnose.model import Outbound, ServerUsed
from nodereach.diagnose.stunio import Reply

if TYPE_CHECKING:
    from nodereach.diagnose.engine import CheckOptions, ServerSpec
    from nodereach.diagnose.model import Report
    from nodereach.diagnose.netinfo import NetInfo
    from nodereach.diagnose.stunio import StunSocket


def _ok(r: object) -> Reply | None:
    return r if isinstance(r, Reply) and r.error is None and r.mapped is not None else None


def _change_result(reply: object, expected: tuple[str, int] | None) -> tuple[bool | None, str | None]:
    """True: the reply came from where the CHANGE-REQUEST asked; False: nothing came; None: cannot tell."""
    if expected is None:
        return None, "server announced no alternate address (not an RFC 5780 server)"
    if reply is None:
        return False, None
    assert isinstance(reply, Reply)
    if reply.error is not None:
        return None, f"server refused CHANGE-REQUEST (error {reply.error[0]})"
    if reply.source != expected:
        return None, f"reply came from {reply.source[0]}:{reply.source[1]}, expected {expected[0]}:{expected[1]}"
    return True, None


def conclude(rep: Report, primary: ServerSpec, v4: list[ServerSpec], obs: dict[str, Any], info: NetInfo,
             m_sock: StunSocket, opts: CheckOptions) -> None:
    nat = rep.nat
    reasons = nat.unknown_reasons
    server_replies: list[tuple[ServerSpec, Reply | None]] = obs.get("server_replies", [])
    tcp_reply, tcp_reason = obs.get("tcp", (None, "not run"))
    dial_ok = any(p.reason not in (None, "no-server", "local-error") for p in rep.ports)
    for i, (spec, r) in enumerate(server_replies):
        addr = (spec.addresses[0] if spec.addresses else spec.host, spec.stun_port)
        garbage = m_sock.stats.garbage.get(addr, 0)
        via_tcp = tcp_reply if i == 0 and isinstance(tcp_reply, Reply) else None
        rfc5780 = any(x is not None and x.other_address for x in (r, via_tcp))
        kind = "stun-rfc5780" if rfc5780 else "stun"
        if i == 0 and spec.http_port is not None and dial_ok:
            kind = "nodereach"
        reason = None
        if r is None:
            reason = f"{garbage} garbage replies (not STUN)" if garbage else "no UDP reply"
            if i == 0 and obs.get("t1_reason"):
                reason = str(obs["t1_reason"])
            if via_tcp is not None:
                reason += "; answered over TCP"
        elif r.error is not None:
            reason = f"STUN error {r.error[0]} {r.error[1]}"
        answered = _ok(r) is not None or _ok(via_tcp) is not None
        rtt = r.rtt if r is not None else (via_tcp.rtt if via_tcp is not None else None)
        rep.servers.append(ServerUsed(address=spec.label, kind=kind, answered=answered,  # type: ignore[arg-type]
                                      rtt_ms=round(rtt * 1000, 1) if rtt is not None else None, reason=reason))

    t1 = _ok(obs.get("t1"))
    any_udp = next((_ok(r) for _, r in server_replies if _ok(r)), None)
    tcp_reply = _ok(tcp_reply)
    paths: list[portfilter.PortPath] = obs.get("paths", [])
    tcp_path_ok = any(p.protocol == "tcp" and p.state in ("open", "refused") for p in paths)

    rep.udp = Outbound(outbound=any_udp is not None, ipv4=any_udp is not None, ipv6=rep.udp.ipv6,
                       reason=None if any_udp else "no STUN server answered over UDP")
    tcp_ok = tcp_reply is not None or tcp_reason == "refused" or tcp_path_ok or dial_ok
    rep.tcp = Outbound(outbound=tcp_ok, ipv4=tcp_ok, ipv6=rep.tcp.ipv6,
                       reason=None if tcp_ok else f"no TCP answer ({tcp_reason})")
    tcp_blocked = portfilter.blocked_ports(paths, "tcp")
    udp_blocked = portfilter.blocked_ports(paths, "udp")
    rep.tcp.blocked_ports = tcp_blocked or []
    rep.udp.blocked_ports = udp_blocked or []
    if any_udp is None and tcp_reply is not None:
        rep.udp.reason = "outbound UDP blocked: no UDP answer while STUN over TCP works"
    elif any_udp is None and tcp_ok:
        rep.udp.outbound = None
        rep.udp.reason = "the servers answer neither STUN over UDP nor over TCP (not STUN servers?)"

    public = (t1 or any_udp or tcp_reply)
    rep.public.ipv4 = public.mapped[0] if public and public.mapped else None
    if t1 and t1.mapped:
        nat.mapped_address = f"{t1.mapped[0]}:{t1.mapped[1]}"

    local_addrs = frozenset({*info.addresses, *([rep.local.address] if rep.local.address else [])})
    local_port = m_sock.local[1] if m_sock.transport else None

    # Mapping: RFC 5780 tests when the primary has an OTHER-ADDRESS, else compare plain servers.
    other = obs.get("other")
    if t1 is not None and other is not None:
        m = classify.classify_mapping(classify.MappingObservation(
            local_port, local_addrs, t1.mapped, obs.get("t2"), obs.get("t3"), other))
    elif any_udp is not None:
        m = classify.mapping_from_servers(local_port, local_addrs, [
            classify.ServerMapping((s.addresses[0], s.stun_port), _ok(r).mapped if _ok(r) else None)  # type: ignore[union-attr]
            for s, r in server_replies])
    else:
        m = classify.Classification("unknown", "outbound UDP blocked" if tcp_ok else "no UDP reply")
    if obs.get("t1_reason") and m.value == "unknown":
        m = classify.Classification("unknown", str(obs["t1_reason"]))

    # Filtering: from its own socket.
    fr = obs.get("f", (None, None, None))
    f1 = _ok(fr[0])
    if other is not None and primary.addresses:
        exp_ip_port = other
        exp_port = (primary.addresses[0], other[1])
    else:
        exp_ip_port = exp_port = None
    rip, rip_reason = _change_result(fr[1], exp_ip_port)
    rport, rport_reason = _change_result(fr[2], exp_port)
    f = classify.classify_filtering(classify.FilteringObservation(f1 is not None, rip, rport))
    if f.value == "unknown":
        reasons["filtering"] = rip_reason or rport_reason or f.reason or "unknown"
        if any_udp is None:
            reasons["filtering"] = rep.udp.reason or "no UDP reply"

    # Layers and CGNAT.
    hops = layers.make_hops(obs.get("hops", []))
    wan = tuple(a for a in (rep.portmap.pcp.external_address, rep.portmap.natpmp.external_address,
                            rep.portmap.upnp.external_address) if a)
    inf = layers.infer_layers(layers.PathEvidence(rep.local.address, rep.public.ipv4, rep.local.gateway,
                                                  tuple(dict.fromkeys(wan)), tuple(hops)))
    nat.hops = hops
    nat.present, nat.layers, nat.cgnat = inf.present, inf.layers, inf.cgnat
    nat.layer_details = inf.details
    nat.layer_addresses = [d.router for d in inf.details if d.router]
    reasons.update({k: v for k, v in inf.reasons.items() if k not in reasons})
    if m.value == "no-nat" or nat.present is False:
        nat.mapping = "no-nat" if nat.present is not True else m.value  # type: ignore[assignment]
    else:
        nat.mapping = m.value if m.value != "no-nat" else "unknown"  # type: ignore[assignment]
    if nat.mapping == "unknown":
        reasons["mapping"] = m.reason or "unknown"
    elif m.reason:
        reasons["mapping_detail"] = m.reason
    nat.filtering = f.value  # type: ignore[assignment]
    nat.port_preservation = classify.port_preservation(local_port, t1.mapped if t1 else None, nat.present)
    if nat.port_preservation is None and nat.present:
        reasons["port_preservation"] = "no UDP mapping observed"
    sent, received, hp_reason = obs.get("hairpin", (False, False, "not run"))
    nat.hairpinning, hp_why = classify.classify_hairpinning(sent, received, nat.present, hp_reason)
    if hp_why and nat.present is not False:
        reasons["hairpinning"] = hp_why

    for p in rep.ports:
        if p.public_endpoint and nat.present and not p.public_endpoint.endswith(f":{p.port}"):
            rep.notes.append(f"the NAT maps the node's UDP port {p.port} to {p.public_endpoint}: peers that dial the "
                             f"advertised port {p.port} miss it unless the port is forwarded")
    dialback = any(s.http_port is not None for s in v4) and (not rep.ports or dial_ok)
    if not any(s.http_port is not None for s in v4):
        rep.untested.append("inbound reachability of the node's ports: no nodereach server (dial-back) "
                            "configured; use --server with a nodereach server")
    if other is None and t1 is not None:
        rep.untested.append("filtering behaviour: no RFC 5780 server (two addresses) among the servers")
    decision = decide(rep, list(opts.ports), dialback=dialback)
    rep.verdict, rep.causes, rep.advice = decision.verdict, decision.causes, decision.advice
