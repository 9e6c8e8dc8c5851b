// "Is my node reachable?": asks this server to reach the visitor's own address, then explains the result.
// No framework, no inline script (the page is served with a strict Content-Security-Policy).
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

// `nodereach check --server HOST` finds STUN (3478) and this service (3480) from the host name alone. An IPv6
// literal comes as "[2001:db8::1]": shown bare (check takes it so, and a shell would glob the brackets).
function serverHost() {
  return (location.hostname || "this-server").replace(/^\[(.*)\]$/, "$1");
}

const isIpv6 = (address) => address.includes(":");

// Advice for a node operator, by protocol and outcome. Each entry: [title, detail].
function advise(r) {
  const p = `${r.port}/${r.protocol}`;
  const check = `nodereach check --server ${serverHost()} --port ${p}`;
  const fw = r.protocol === "tcp"
    ? `sudo nft add rule inet filter input tcp dport ${r.port} accept   (or: sudo ufw allow ${p})`
    : `sudo nft add rule inet filter input udp dport ${r.port} accept   (or: sudo ufw allow ${p})`;
  const v6 = isIpv6(r.address);
  // IPv6 has no NAT to forward through: the home router's IPv6 firewall drops unsolicited inbound (RFC 6092).
  const ipv6Firewall = ["Allow the port in your router's IPv6 firewall",
    "Home routers drop inbound IPv6 connections by default. Add a rule (often called \"IPv6 firewall\" or " +
    `"pinhole") allowing ${p} to ${r.address}.`];
  if (r.reachable === true) {
    return [
      ["Nothing to fix", `Peers on the internet can open ${p} at ${r.address}.`],
      ["Advertise this address", `Make sure your node announces ${r.address}:${r.port} (its "external address" ` +
        "or NAT setting) so peers learn where to connect."],
      ["Check the other protocol", "Many P2P nodes need both TCP and UDP on the same port: test the other one too."],
    ];
  }
  if (r.reason === "refused") {
    return [
      ["Start the node or fix its listen address",
        `Your address answered, but nothing accepts ${p}. Is the node running? Does it listen on ` +
        (v6 ? ":: (all IPv6 interfaces) rather than ::1 or IPv4 only?" : "0.0.0.0 (all interfaces) rather than 127.0.0.1?")],
      v6 ? ipv6Firewall : ["Forward the port on your router",
        `If the node runs behind a home router, the router itself refused: add a port forward (destination NAT) ` +
        `for ${p} to the node's LAN address.`],
      ["Run the full diagnosis on the node", check],
    ];
  }
  if (r.protocol === "udp" && (r.reason === "no-echo" || r.reason === "timeout")) {
    return [
      ["UDP cannot be confirmed from a browser",
        "The probe datagram was sent, but a node does not answer unknown datagrams, so silence does not tell " +
        "whether it arrived. Run nodereach on the node's machine: it listens on the port and proves receipt."],
      ["Run the full diagnosis on the node", check],
      v6 ? ipv6Firewall : ["If the node is behind a router",
        `Forward ${p} to the node's LAN address and allow it in the host firewall: ${fw}`],
    ];
  }
  if (v6) {
    return [
      ipv6Firewall,
      ["Open the host firewall", fw],
      ["Run the full diagnosis on the node", check],
    ];
  }
  return [
    ["Forward the port on your router",
      `No answer from ${r.address}:${r.port}: a NAT or firewall drops the connection. Add a port forward for ${p} ` +
      "to the node's LAN address (or a DMZ host), then check again."],
    ["Open the host firewall", fw],
    ["Check for carrier-grade NAT",
      `If your router's WAN address differs from ${r.address} (or starts with 100.64-100.127), your provider ` +
      "shares one public address between customers: a port forward on your router cannot help. Ask the " +
      "provider for a public IPv4 address, or use IPv6."],
    ["Run the full diagnosis on the node", check],
  ];
}

function verdictOf(r) {
  if (r.reachable === true) return ["reachable", `Yes: ${r.port}/${r.protocol} is reachable`];
  if (r.reachable === false) return ["unreachable", `No: ${r.port}/${r.protocol} is not reachable`];
  return ["unknown", `Unknown: ${r.port}/${r.protocol} could not be confirmed`];
}

const REASONS = {
  ok: "connected",
  refused: "connection refused (nothing listening, or the router refused)",
  timeout: "timed out (dropped by a NAT or firewall)",
  reset: "connection reset",
  unreachable: "network unreachable (ICMP)",
  "no-echo": "datagram sent, no echo (nodes do not answer probes)",
  unverified: "connected (a listener other than nodereach's answered)",
};

function show(r) {
  const box = $("result");
  const [cls, title] = verdictOf(r);
  box.className = cls;
  $("verdict").textContent = title;
  $("summary").textContent = `Tested ${r.address} port ${r.port}/${r.protocol} from ${r.source || "this server"}.`;
  const facts = $("facts");
  facts.replaceChildren();
  const rows = [["Address tested", r.address], ["Result", REASONS[r.reason] || r.reason],
                ["Round trip", r.rtt_ms == null ? "–" : `${r.rtt_ms.toFixed(1)} ms`]];
  if (r.reachable === true && r.second_address === false) {
    // No second address of this family on the server: the probe came from the address the request went to.
    rows.push(["Probe source", "the address you contacted (this server has no second " +
      `${isIpv6(r.address) ? "IPv6" : "IPv4"} address): a firewall that admits anything from an address you ` +
      "contacted would let it in, so a Yes here is weaker"]);
  }
  for (const [k, v] of rows) { facts.append(el("dt", k), el("dd", v)); }
  const list = $("advice");
  list.replaceChildren();
  for (const [t, d] of advise(r)) {
    const li = el("li");
    li.append(el("strong", t), el("br"), el("span", d));
    list.append(li);
  }
  box.hidden = false;
}

function showError(message) {
  const box = $("result");
  box.className = "error";
  $("verdict").textContent = "The check could not run";
  $("summary").textContent = message;
  $("facts").replaceChildren();
  $("advice").replaceChildren(el("li", "Wait a moment and try again, or run nodereach check on the node."));
  box.hidden = false;
}

async function submit(ev) {
  ev.preventDefault();
  const port = Number($("port").value);
  const protocol = document.querySelector("input[name=protocol]:checked").value;
  if (!Number.isInteger(port) || port < 1 || port > 65535) { showError("Enter a port between 1 and 65535."); return; }
  $("cli-port").textContent = `${port}/${protocol}`;
  const button = $("check");
  button.disabled = true;
  button.textContent = "Checking…";
  try {
    const resp = await fetch("/v1/probe", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({port, protocol}),
    });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) showError(data.message || `server answered HTTP ${resp.status}`);
    else show(data);
  } catch (e) {
    showError(`no answer from the server (${e})`);
  } finally {
    button.disabled = false;
    button.textContent = "Check";
  }
}

async function init() {
  for (const s of document.querySelectorAll(".server-host")) s.textContent = serverHost();
  $("probe-form").addEventListener("submit", submit);
  try {
    const resp = await fetch("/v1/address");
    const data = await resp.json();
    $("my-address").textContent = data.address;
  } catch (e) {
    $("my-address").textContent = "unknown";
  }
}

document.addEventListener("DOMContentLoaded", init);
