// A js-libp2p node listening on TCP (noise + yamux, nothing else): what the multistream-select proof speaks
// to. libp2p 2.x, because 3.x needs Node 22 (Promise.withResolvers) and Debian's image has Node 20.
// Usage: node libp2p.mjs LISTEN_IP PORT -> prints one JSON line {peer_id, addrs} once listening; SIGTERM stops.
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'

const [ip = '0.0.0.0', port = '0'] = process.argv.slice(2)
const family = ip.includes(':') ? 'ip6' : 'ip4'
const node = await createLibp2p({
  addresses: { listen: [`/${family}/${ip}/tcp/${port}`] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
})
await node.start()
console.log(JSON.stringify({ peer_id: node.peerId.toString(), addrs: node.getMultiaddrs().map(String) }))
const stop = async () => { await node.stop(); process.exit(0) }
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
