// EthereumJS devp2p's DPT (the discv4 of the EthereumJS execution client) listening on UDP: what the discv4
// proof (a signed PING -> PONG) speaks to. No lookups of its own (no bootnodes, no neighbour queries).
// Usage: node discv4.mjs IP PORT -> one JSON line {node_id, pubkey} once bound; SIGTERM stops.
import { DPT } from '@ethereumjs/devp2p'
import { secp256k1 } from 'ethereum-cryptography/secp256k1.js'
import { keccak256 } from 'ethereum-cryptography/keccak.js'

const [ip = '127.0.0.1', port = '30303'] = process.argv.slice(2)
const privateKey = secp256k1.utils.randomPrivateKey()
const dpt = new DPT(privateKey, {
  endpoint: { address: ip, udpPort: Number(port), tcpPort: Number(port) },
  shouldFindNeighbours: false,
  refreshInterval: 3600000,
})
dpt.events.on('error', (e) => console.error(`dpt error: ${e.message}`))
dpt.events.on('listening', () => {
  const pub = secp256k1.getPublicKey(privateKey, false).slice(1)
  const hex = (b) => Buffer.from(b).toString('hex')
  console.log(JSON.stringify({ node_id: hex(keccak256(pub)), pubkey: hex(pub) }))
})
dpt.bind(Number(port), '0.0.0.0')
process.on('SIGTERM', () => { dpt.destroy(); process.exit(0) })
process.on('SIGINT', () => { dpt.destroy(); process.exit(0) })
