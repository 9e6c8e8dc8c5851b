"""From what the probes saw to the report: `conclude(observations) -> Report`, pure.

No sockets, no clock: the same observations always give the same report (the table tests in
tests/test_check_conclude.py build observations for every lab scenario and check the fields). The judgement
lives here and in classify / layers / advice: which replies count, what silence means, which behaviour the
RFC 5780 tests show, how many NAT layers the path crosses, and the verdict with its advice.
"""

from __future__ import annotations

import msgspec

from nodereach.diagnose import classify, layers, portfilter
from nodereach.diagnose.advice import Inputs, Probed, decide
from nodereach.diagnose.classify import Classification
from nodereach.diagnose.model import (
    Behaviour,
    Local,
    Mapping,
    Nat,
    Outbound,
    Portmap,
    PortResult,
    Report,
    ServerKind,
    ServerUsed,
)
from nodereach.diagnose.node import apply_node, node_families
from nodereach.diagnose.observations import FamilyObservations, LocalView, Observations, ServerAnswer
from nodereach.diagnose.probes import usable
from nodereach.net import Endpoint, Family, SockAddr, address_kind, is_public
from nodereach.routes import stable_address6
from nodereach.stun.transaction import BindingReply

BUILTIN_NOTE = ("using the built-in public STUN servers: mapping and public address only. For inbound reachability "
                "and filtering, point check at a nodereach server (`--server HOST`), or run one with "
                "`nodereach serve --address A --alt-address B`.")


def conclude(obs: Observations) -> Report:
    """The report for one run's observations (duration_s is the caller's: it needs the clock)."""
    rep = Report()
    rep.servers = [ServerUsed(address=s.label, kind="stun", answered=False, reason=s.error)
                   for s in obs.servers if s.error]
    rep.local = _local(obs.local)
    if obs.local.net.error:
        rep.notes.append(obs.local.net.error)
    v4, v6 = obs.family(4), obs.family(6)
    if v4 is not None and v4.unavailable is not None:
        outbound = False if v4.route_error else None
        rep.udp = Outbound(outbound=outbound, reason=v4.unavailable)
        rep.tcp = Outbound(outbound=outbound, reason=v4.unavailable)
        if v4.route_error and v4.primary is not None:
            rep.notes.append(f"no route to {v4.primary.spec.host}: {v4.unavailable}")
    judged: dict[Family, _Family] = {}
    if v4 is not None and v4.unavailable is None:
        judged[4] = _family4(obs, v4, rep)
    six = _family6(obs, v6, rep)
    if six is not None:
        judged[6] = six
    if 4 not in judged and v4 is not None and not v4.servers and v6 is not None and v6.servers:
        rep.udp.outbound, rep.tcp.outbound = rep.udp.ipv6, rep.tcp.ipv6
        rep.notes.append("IPv6 only: the NAT layers, outbound port filters, hairpinning and the gateway's port "
                         "mapping are tested over IPv4")
    rep.ports = [p for f in (4, 6) if f in judged for p in judged[f].ports]
    apply_node(obs, rep)
    for p in rep.ports:
        if p.second_address is False and p.path_open:
            rep.notes.append(f"{p.port}/{p.protocol} over IPv{p.family}: the server has one IPv{p.family} address, "
                             "so its probe came from the address the request went to; a firewall that lets in "
                             "whatever that address sends would pass it too: weaker evidence than a probe from a "
                             "second address")
    status: dict[Family, Probed] = {f: ("tested" if j.connected else "no-connectivity") for f, j in judged.items()}
    if v4 is not None and v4.route_error:
        status[4] = "no-connectivity"  # IPv4 is the baseline: no route is a broken line, not a missing family
    decision = decide(rep, Inputs(
        requested=tuple(obs.options.ports), probed=status,
        dialback={f: j.dialback for f, j in judged.items()},
        node_families=node_families(obs, rep),
        software=rep.node.software if rep.node is not None else None))
    rep.verdict, rep.causes, rep.advice = decision.verdict, decision.causes, decision.advice
    rep.reachability = decision.reachability
    rep.notes.extend(obs.errors)
    if obs.timed_out:
        rep.notes.append(f"the run hit its time limit ({obs.options.timeout:.1f} s); unfinished probes are "
                         "reported unknown")
    if obs.options.builtin_servers:
        rep.notes.append(BUILTIN_NOTE)
    return rep


def _local(view: LocalView) -> Local:
    local = Local(address=view.source)
    if view.source:
        local.address_is_public = is_public(view.source)
    route = view.net.routes.get(view.primary) if view.primary else None
    if route is not None:
        local.gateway = route.gateway
        local.interface = route.interface
        local.address = local.address or route.source
    elif view.primary is None:
        local.gateway = view.net.default_gateway4
    return local


def _family6(obs: Observations, v6: FamilyObservations | None, rep: Report) -> _Family | None:
    """IPv6 in full: outbound, the public address (never a link-local or unique-local one), translation,
    RFC 5780 mapping and filtering, the node's ports over IPv6. None when IPv6 was not probed (`untested`)."""
    six = rep.ipv6
    if v6 is None or not v6.servers:
        six.reason = "no server with an IPv6 address (name one with --server, e.g. a host name with an AAAA " \
                     "record or an IPv6 literal)"
        rep.untested.append(f"IPv6: {six.reason}")
        return None
    six.address = v6.source
    if v6.source and is_public(v6.source):
        six.stable_address = stable_address6(obs.local.net.addresses6, v6.source)
    if v6.unavailable is not None:
        six.reason = v6.unavailable
        rep.untested.append(f"IPv6: {v6.unavailable}")
        return None
    local_addrs = frozenset({*obs.local.net.addresses, *([v6.source] if v6.source else [])})
    fam = _analyse(obs, v6, local_addrs, six.unknown_reasons)
    rep.servers += fam.servers
    rep.udp.ipv6, rep.tcp.ipv6 = fam.udp_ok, fam.tcp_ok
    if not fam.connected:
        six.reason = "no server answered over IPv6 (UDP or TCP)"
    public = fam.ans.t1 or fam.ans.any_udp or fam.ans.tcp_reply
    mapped = public.mapped if public is not None else None
    if mapped is not None:
        if is_public(mapped[0]):
            rep.public.ipv6 = mapped[0]
        else:  # a server on the same link or site: never a public address (issue 11)
            six.unknown_reasons["public"] = (f"the servers saw {mapped[0]}, a {address_kind(mapped[0])} address "
                                             "that peers on the internet cannot reach")
    six.mapping = fam.mapping.value
    if fam.mapping.value == "unknown":
        six.unknown_reasons["mapping"] = fam.mapping.reason or "unknown"
    six.filtering = fam.filtering.value
    udp = fam.ans.t1 or fam.ans.any_udp  # from the mapping socket, whose local port is known
    # STUN over TCP alone says the address, not how the port was treated (its local port is not the mapping
    # socket's): compared without the port.
    translation = classify.classify_translation(classify.TranslationObservation(
        v6.source, local_addrs, v6.local_port if udp is not None else None, udp.mapped if udp else mapped,
        fam.mapping.value))
    six.translation = translation.value
    if translation.reason:
        six.unknown_reasons["translation" if translation.value == "unknown" else "translation_detail"] = \
            translation.reason
    if six.translation in ("none", "nptv6") and six.mapping == "unknown" and fam.ans.t1 is not None:
        six.mapping = "no-nat" if six.translation == "none" else "endpoint-independent"
    if fam.ans.other is None and fam.ans.t1 is not None:
        rep.untested.append("IPv6 filtering: no RFC 5780 server with two IPv6 addresses among the servers")
    return fam


class _Family(msgspec.Struct, frozen=True):
    """One family's probes, judged once (the parts both families share)."""

    ans: _Answers
    ports: list[PortResult]
    servers: list[ServerUsed]
    mapping: Classification[Mapping]
    filtering: Classification[Behaviour]
    udp_ok: bool | None
    """Some server answered STUN over UDP; None: neither over UDP nor TCP (not STUN servers?)."""
    tcp_ok: bool
    dialback: bool
    """A dial-back server of this family answered for the node's ports."""

    @property
    def connected(self) -> bool:
        return bool(self.udp_ok) or self.tcp_ok


def _analyse(obs: Observations, fam: FamilyObservations, local_addrs: frozenset[str],
             reasons: dict[str, str]) -> _Family:
    ports = _port_results(obs, fam)
    dial_ok = any(p.reason not in (None, "no-server", "local-error") for p in ports)
    # A dial-back answer proves TCP over the family (its request went over TCP); a port left `timeout`
    # because its probe did not finish in time proves nothing.
    answered = any(p.result is not None and p.result.reason not in ("no-server", "local-error") for p in fam.ports)
    ans = _answers(fam, answered)
    servers = [_server_used(i, a, fam.tcp.reply if fam.tcp else None, dial_ok, fam.family)
               for i, a in enumerate(fam.binding)]
    udp_ok: bool | None = ans.any_udp is not None
    if ans.any_udp is None and ans.tcp_reply is None and ans.tcp_ok:
        udp_ok = None  # TCP reaches the server, STUN answers neither way: not a STUN server, UDP not judged
    mapping = _mapping(fam, ans, local_addrs)
    filtering = _filtering(fam, ans, reasons, "no UDP reply" if ans.any_udp is None else None)
    has_dialback = any(s.dialback for s in fam.servers)
    return _Family(ans, ports, servers, mapping, filtering, udp_ok, ans.tcp_ok,
                   has_dialback and (not ports or dial_ok))


def _change_result(reply: BindingReply | None, expected: SockAddr | None) -> tuple[bool | None, str | None]:
    """True: the reply came from where the CHANGE-REQUEST asked; False: nothing came; None: cannot tell."""
    if expected is None:
        return None, "server announced no alternate address (not an RFC 5780 server)"
    if reply is None:
        return False, None
    if reply.error is not None:
        return None, f"server refused CHANGE-REQUEST (error {reply.error[0]})"
    if reply.source != expected:
        return None, f"reply came from {Endpoint.of(reply.source)}, expected {Endpoint.of(expected)}"
    return True, None


def _port_results(obs: Observations, fam: FamilyObservations) -> list[PortResult]:
    """The node's ports over one family: the dial-back's answers, `timeout` for those that did not come back
    in time, `no-server` when no server of the family runs the dial-back service."""
    if not obs.options.ports:
        return []
    family = fam.family
    if any(s.dialback for s in fam.servers):
        probed = {p.spec: p for p in fam.ports}
        out = []
        for spec in obs.options.ports:
            probe = probed.get(spec)
            result = probe.result if probe is not None else None
            if result is None:
                out.append(PortResult(port=spec.port, protocol=spec.transport, family=family, reason="timeout"))
                continue
            out.append(PortResult(port=result.port, protocol=result.protocol, family=family,
                                  reachable=result.reachable, reason=result.reason, listener=result.listener,
                                  rtt_ms=result.rtt_ms, second_address=result.second_address,
                                  protocol_check=result.protocol_check,
                                  public_endpoint=probe.public_endpoint if probe is not None else None))
        return out
    return [PortResult(port=p.port, protocol=p.transport, family=family, reason="no-server")
            for p in obs.options.ports]


def _server_used(i: int, answer: ServerAnswer, tcp_reply: BindingReply | None, dial_ok: bool,
                 family: Family) -> ServerUsed:
    r = answer.reply
    via_tcp = tcp_reply if i == 0 else None
    kind: ServerKind = "stun-rfc5780" if any(x is not None and x.other_address for x in (r, via_tcp)) else "stun"
    if i == 0 and answer.server.dialback and dial_ok:
        kind = "nodereach"
    reason = None
    if r is None:
        reason = f"{answer.garbage} garbage replies (not STUN)" if answer.garbage else "no UDP reply"
        if answer.foreign_source is not None:
            reason = _foreign(answer.foreign_source)
        if via_tcp is not None:
            reason += "; answered over TCP"
    elif r.error is not None:
        reason = f"STUN error {r.error[0]} {r.error[1]}"
    answered = usable(r) is not None or usable(via_tcp) is not None
    rtt = r.rtt if r is not None else (via_tcp.rtt if via_tcp is not None else None)
    address = answer.server.label
    if family == 6 and answer.server.spec.host != answer.server.address(6):  # a name: say which address
        address = f"{answer.server.label} ({answer.server.address(6)})"
    return ServerUsed(address=address, kind=kind, answered=answered, family=family,
                      rtt_ms=round(rtt * 1000, 1) if rtt is not None else None, reason=reason)


def _foreign(source: SockAddr) -> str:
    return f"reply came from {Endpoint.of(source)}, not the server address"


class _Answers(msgspec.Struct, frozen=True):
    """The replies the conclusions hinge on, judged once."""

    t1: BindingReply | None
    """The primary's test I, if usable."""
    t1_reason: str | None
    """Why test I does not count although something came (a reply from another address)."""
    any_udp: BindingReply | None
    """The first usable test I of any server."""
    tcp_reply: BindingReply | None
    tcp_ok: bool
    other: SockAddr | None
    """The primary's OTHER-ADDRESS (RFC 5780 server), from test I."""


def _answers(fam: FamilyObservations, dial_ok: bool) -> _Answers:
    first = fam.binding[0] if fam.binding else None
    tcp = fam.tcp
    tcp_reply = usable(tcp.reply) if tcp is not None else None
    paths = fam.port_paths.paths if fam.port_paths is not None else ()
    tcp_path_ok = any(p.protocol == "tcp" and p.state in ("open", "refused") for p in paths)
    raw = first.reply if first is not None else None
    return _Answers(
        t1=usable(raw), t1_reason=_foreign(first.foreign_source) if first and first.foreign_source else None,
        any_udp=next((usable(a.reply) for a in fam.binding if usable(a.reply)), None), tcp_reply=tcp_reply,
        tcp_ok=tcp_reply is not None or (tcp is not None and tcp.reason == "refused") or tcp_path_ok or dial_ok,
        other=raw.other_address if raw is not None and raw.error is None else None)


def _outbound4(fam: FamilyObservations, judged: _Family, rep: Report) -> None:
    """IPv4 gives the top-level `udp`/`tcp` answers (and their blocked ports); IPv6 only its `ipv6` fields."""
    ans = judged.ans
    paths = list(fam.port_paths.paths) if fam.port_paths is not None else []
    needed = fam.port_paths.needed_tries if fam.port_paths is not None else None
    rep.udp = Outbound(outbound=ans.any_udp is not None, ipv4=ans.any_udp is not None, ipv6=rep.udp.ipv6,
                       reason=None if ans.any_udp else "no STUN server answered over UDP",
                       blocked_ports=portfilter.blocked_ports(paths, "udp", needed) or [])
    tcp_reason = fam.tcp.reason if fam.tcp is not None else "not run"
    rep.tcp = Outbound(outbound=ans.tcp_ok, ipv4=ans.tcp_ok, ipv6=rep.tcp.ipv6,
                       reason=None if ans.tcp_ok else f"no TCP answer ({tcp_reason})",
                       blocked_ports=portfilter.blocked_ports(paths, "tcp", needed) or [])
    for protocol in ("udp", "tcp"):
        for r in portfilter.unsettled_ports(paths, protocol, needed):
            rep.untested.append(f"outbound filter on port {r.port}/{protocol}: no answer to {r.tries} tries before "
                                f"the time limit, too few at this path's loss ({needed} needed) to call it filtered")
    if ans.any_udp is None and ans.tcp_reply is not None:
        rep.udp.reason = "outbound UDP blocked: no UDP answer while STUN over TCP works"
    elif judged.udp_ok is None:
        rep.udp.outbound = None
        rep.udp.reason = "the servers answer neither STUN over UDP nor over TCP (not STUN servers?)"
    public = ans.t1 or ans.any_udp or ans.tcp_reply
    rep.public.ipv4 = public.mapped[0] if public and public.mapped else None


def _mapping(fam: FamilyObservations, ans: _Answers, local_addrs: frozenset[str]) -> Classification[Mapping]:
    """RFC 5780 tests when the primary has an OTHER-ADDRESS, else the plain servers' mappings compared."""
    m: Classification[Mapping]
    tests = fam.mapping
    if ans.t1 is not None and ans.other is not None:
        m = classify.classify_mapping(classify.MappingObservation(
            fam.local_port, local_addrs, ans.t1.mapped, tests.test2 if tests else None,
            tests.test3 if tests else None, ans.other))
    elif ans.any_udp is not None:
        m = classify.mapping_from_servers(fam.local_port, local_addrs, [
            classify.ServerMapping(a.server.stun(fam.family) or (a.server.spec.host, a.server.spec.stun_port),
                                   ok.mapped if (ok := usable(a.reply)) else None)
            for a in fam.binding])
    else:
        m = Classification("unknown", "outbound UDP blocked" if ans.tcp_ok else "no UDP reply")
    if ans.t1_reason and m.value == "unknown":
        m = Classification("unknown", ans.t1_reason)
    return m


def _filtering(fam: FamilyObservations, ans: _Answers, reasons: dict[str, str],
               no_udp: str | None) -> Classification[Behaviour]:
    """RFC 5780 §4.4 from the filtering socket: a CHANGE-REQUEST reply counts only from where it was asked.
    An `unknown` gets its reason in `reasons["filtering"]` (`no_udp`: why, when no UDP answer came at all)."""
    ft = fam.filtering
    primary_ip = fam.primary.address(fam.family) if fam.primary is not None else None
    exp_both = ans.other if ans.other is not None and primary_ip else None
    exp_port = (primary_ip, ans.other[1]) if ans.other is not None and primary_ip else None
    rip, rip_reason = _change_result(ft.change_ip_and_port if ft else None, exp_both)
    rport, rport_reason = _change_result(ft.change_port if ft else None, exp_port)
    f = classify.classify_filtering(classify.FilteringObservation(
        usable(ft.plain) is not None if ft else False, rip, rport))
    if f.value == "unknown":
        reasons["filtering"] = no_udp or rip_reason or rport_reason or f.reason or "unknown"
    return f


def _lifetime(obs: Observations, nat: Nat, notes: list[str]) -> None:
    if obs.lifetime is not None:
        nat.binding_lifetime_s = obs.lifetime.seconds
        notes.append(f"binding lifetime: {obs.lifetime.explanation}")
        if obs.lifetime.seconds is None:
            nat.unknown_reasons["binding_lifetime_s"] = obs.lifetime.explanation
    elif not obs.options.lifetime:
        nat.unknown_reasons["binding_lifetime_s"] = "not measured (use --lifetime)"


def _layers(obs: Observations, fam: FamilyObservations, rep: Report) -> None:
    """NAT layers and CGNAT from the path: TTL-probe hops, the gateway's WAN address, local vs public."""
    nat = rep.nat
    hops = layers.make_hops(fam.path.hops() if fam.path is not None else ())
    wan = obs.portmap.wan_addresses() if obs.portmap is not None else ()
    inf = layers.infer_layers(layers.PathEvidence(rep.local.address, rep.public.ipv4, rep.local.gateway, wan,
                                                  tuple(hops)))
    nat.hops = hops
    nat.present, nat.layers, nat.cgnat = inf.present, inf.layers, inf.cgnat
    nat.layer_details = inf.details
    nat.layer_addresses = [d.router for d in inf.details if d.router]
    nat.unknown_reasons.update({k: v for k, v in inf.reasons.items() if k not in nat.unknown_reasons})


def _family4(obs: Observations, fam: FamilyObservations, rep: Report) -> _Family:
    """Everything the full set of probes tells over IPv4: outbound, public address, NAT behaviour and layers,
    the node's ports."""
    nat = rep.nat
    reasons = nat.unknown_reasons
    _lifetime(obs, nat, rep.notes)
    if fam.port_paths is not None and fam.port_paths.skipped:
        rep.untested.append(fam.port_paths.skipped)
    local_addrs = frozenset({*obs.local.net.addresses, *([rep.local.address] if rep.local.address else [])})
    judged = _analyse(obs, fam, local_addrs, reasons)
    ans = judged.ans
    rep.servers += judged.servers
    _outbound4(fam, judged, rep)
    if judged.filtering.value == "unknown" and ans.any_udp is None:
        reasons["filtering"] = rep.udp.reason or "no UDP reply"
    if ans.t1 and ans.t1.mapped:
        nat.mapped_address = str(Endpoint.of(ans.t1.mapped))
    m, f = judged.mapping, judged.filtering
    if obs.portmap is not None:
        rep.portmap = Portmap(pcp=obs.portmap.pcp, natpmp=obs.portmap.natpmp, upnp=obs.portmap.upnp)
    _layers(obs, fam, rep)
    if m.value == "no-nat" or nat.present is False:
        nat.mapping = "no-nat" if nat.present is not True else m.value
    else:
        nat.mapping = m.value
    if nat.mapping == "unknown":
        reasons["mapping"] = m.reason or "unknown"
    elif m.reason:
        reasons["mapping_detail"] = m.reason
    nat.filtering = f.value
    nat.port_preservation = classify.port_preservation(fam.local_port, ans.t1.mapped if ans.t1 else None,
                                                       nat.present)
    if nat.port_preservation is None and nat.present:
        reasons["port_preservation"] = "no UDP mapping observed"
    hp = fam.hairpin
    nat.hairpinning, hp_why = classify.classify_hairpinning(hp.sent if hp else False, hp.received if hp else False,
                                                            nat.present, hp.reason if hp else "not run")
    if hp_why and nat.present is not False:
        reasons["hairpinning"] = hp_why

    for p in judged.ports:
        if p.public_endpoint and nat.present and not p.public_endpoint.endswith(f":{p.port}"):
            rep.notes.append(f"the NAT maps the node's UDP port {p.port} to {p.public_endpoint}: peers that dial the "
                             f"advertised port {p.port} miss it unless the port is forwarded")
    if not any(s.dialback for s in fam.servers):
        rep.untested.append("inbound reachability of the node's ports: no nodereach server (dial-back) "
                            "configured; use --server with a nodereach server")
    if ans.other is None and ans.t1 is not None:
        rep.untested.append("filtering behaviour: no RFC 5780 server (two addresses) among the servers")
    return judged
