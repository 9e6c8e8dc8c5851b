// ChainSafe's discv5 (the discovery of the Lodestar consensus client) listening on UDP: what the discv5 proof
// (a random packet masked with the node id -> WHOAREYOU) speaks to. A fresh secp256k1 identity each start.
// Usage: node discv5.mjs ENR_IP PORT -> one JSON line {enr, node_id} once bound; SIGTERM stops.
import { Discv5 } from '@chainsafe/discv5'
import { SignableENR } from '@chainsafe/enr'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'

const [ip = '127.0.0.1', port = '9000'] = process.argv.slice(2)
const privateKey = await generateKeyPair('secp256k1')
const enr = SignableENR.createFromPrivateKey(privateKey)
enr.ip = ip
enr.udp = Number(port)
const node = Discv5.create({ enr, privateKey, bindAddrs: { ip4: multiaddr(`/ip4/0.0.0.0/udp/${port}`) } })
await node.start()
console.log(JSON.stringify({ enr: node.enr.encodeTxt(), node_id: node.enr.nodeId }))
const stop = async () => { await node.stop(); process.exit(0) }
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
