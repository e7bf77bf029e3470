//! Who is at the other end of a connection ([`Peer`]): a Unix-socket peer's credentials, or a
//! TCP peer's address and, when it is a socket of this host, its owner: the kernel knows the
//! owner of every socket. Real IMDS cannot tell local users apart; fedimds can, so `[[callers]]` uid and
//! gid rules restrict the IMDS dialect (and connections redirected by the capture rule) too.
//!
//! The uid comes from `/proc/net/tcp` and `/proc/net/tcp6`: the line whose local address is
//! the peer's address and whose remote address is ours is the client's own socket (a 4-tuple
//! is unique), and its `uid` column is the socket's owner. A connection redirected by the
//! capture rule has, as its client sees it, IMDS's address as its remote: then the one socket
//! from the peer's address connected to 169.254.169.254:80 is taken. When the socket cannot be
//! told for certain, the owner is unknown, and a uid rule does not match. The gid needs the process: the one holding that socket's inode open, found under
//! `/proc/PID/fd`, whose `Gid:` line names its effective group. That scan is only made when a
//! rule asks for a gid.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The other end of a connection, as the listener saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP peer, and the owner of its socket when it is one of this host's.
    Tcp {
        /// Its address.
        addr: SocketAddr,
        /// Who owns the socket, as the kernel says.
        owner: Option<Owner>,
    },
    /// A Unix socket peer, with the credentials the kernel reported (SO_PEERCRED).
    Unix {
        /// Its uid.
        uid: u32,
        /// Its gid.
        gid: u32,
        /// Its pid, when known.
        pid: Option<i32>,
    },
}

impl Peer {
    /// The address, for TCP peers.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            Peer::Tcp { addr, .. } => Some(*addr),
            Peer::Unix { .. } => None,
        }
    }

    /// The uid: the kernel's word for a Unix-socket peer, the socket's owner for a TCP peer of
    /// this host.
    pub fn uid(&self) -> Option<u32> {
        match self {
            Peer::Unix { uid, .. } => Some(*uid),
            Peer::Tcp { owner, .. } => owner.map(|o| o.uid),
        }
    }

    /// The gid: the kernel's word for a Unix-socket peer; for a TCP peer of this host, the
    /// effective gid of the process holding its socket (a scan of /proc, so asked only when a
    /// rule needs it).
    pub fn gid(&self) -> Option<u32> {
        match self {
            Peer::Unix { gid, .. } => Some(*gid),
            Peer::Tcp { owner, .. } => owner.and_then(|o| o.gid),
        }
    }
}

/// The owner of the socket at a TCP peer's address, when it is a socket of this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The socket's owner.
    pub uid: u32,
    /// The socket's inode.
    pub inode: u64,
    /// The effective gid of the processes holding the socket, when a rule asked for it at the
    /// time the connection was accepted and they all share one.
    pub gid: Option<u32>,
}

/// What the listeners should find out about each TCP peer of this host, as the `[[callers]]`
/// rules in force need it; follows reloads.
#[derive(Debug, Default)]
pub struct Wanted {
    /// A rule names a uid (or a gid, which needs the socket too).
    pub uid: std::sync::atomic::AtomicBool,
    /// A rule names a gid: a scan of /proc, so made only then, once per connection.
    pub gid: std::sync::atomic::AtomicBool,
}

impl Owner {
    /// Looks up the owner of the local socket whose address is `peer` and which is connected
    /// to `ours`: `None` for a peer on another host, when /proc is not readable, or when which
    /// socket it is cannot be told for certain. Reads `/proc/net/tcp` and `tcp6`, once per
    /// connection, off the accept loop.
    pub fn of(peer: SocketAddr, ours: SocketAddr, with_gid: bool) -> Option<Owner> {
        // Both tables: an IPv6 socket connected to an IPv4 address (`::ffff:127.0.0.1`) is
        // listed in tcp6 only, and a peer must never be hidden there while another user's
        // socket on the same port is found in tcp.
        let mut sockets = Vec::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            if let Ok(text) = std::fs::read_to_string(table) {
                sockets.extend(sockets_at(&text, peer));
            }
        }
        let (uid, inode) = pick(&sockets, ours)?;
        let gid = if with_gid { gid_of(inode) } else { None };
        Some(Owner { uid, inode, gid })
    }
}

/// A socket of this host: where it is connected to, its owner and its inode.
type Socket = (SocketAddr, u32, u64);

/// The sockets in a `/proc/net/tcp*` table whose local address is `peer`, in any state but
/// with an owner (a closed connection lingers in TIME_WAIT with none: root's, no inode).
fn sockets_at(table: &str, peer: SocketAddr) -> Vec<Socket> {
    let peer = unmapped(peer);
    // Only lines naming the peer's port are parsed: the table lists every socket of the host.
    let port = format!(":{:04X} ", peer.port());
    table
        .lines()
        .skip(1)
        .filter(|line| line.contains(&port))
        .filter_map(|line| {
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().take(10).collect();
            let [_, local, remote, _state, _, _, _, uid, _, inode] = fields.as_slice() else {
                return None;
            };
            let inode: u64 = inode.parse().ok()?;
            let local = unmapped(parse_address(local)?);
            (inode != 0 && local == peer)
                .then(|| Some((unmapped(parse_address(remote)?), uid.parse().ok()?, inode)))
                .flatten()
        })
        .collect()
}

/// Where a client redirected by the capture rule believes it is connected.
const IMDS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), 80);

/// The peer's own socket among `sockets`: the one connected to `ours` (a 4-tuple is unique),
/// or, for a connection the capture rule redirected, the one connected to IMDS, if it is the
/// only one. Anything else is not known for certain, and an owner not known for certain is
/// no owner: a rule naming a uid then does not match.
fn pick(sockets: &[Socket], ours: SocketAddr) -> Option<(u32, u64)> {
    let ours = unmapped(ours);
    let one = |to: SocketAddr| {
        let mut found = sockets.iter().filter(|(remote, _, _)| *remote == to);
        match (found.next(), found.next()) {
            (Some(&(_, uid, inode)), None) => Some((uid, inode)),
            _ => None,
        }
    };
    one(ours).or_else(|| one(IMDS))
}

#[cfg(test)]
/// `0100007F:9C40`: an address as `/proc/net/tcp*` writes it (each 32-bit word in the host's
/// byte order, then the port).
fn kernel_notation(addr: SocketAddr) -> String {
    let words: Vec<[u8; 4]> = match addr.ip() {
        IpAddr::V4(v4) => vec![v4.octets()],
        IpAddr::V6(v6) => v6
            .octets()
            .chunks_exact(4)
            .map(|w| [w[0], w[1], w[2], w[3]])
            .collect(),
    };
    let mut text: String = words
        .iter()
        .map(|w| format!("{:08X}", u32::from_ne_bytes(*w)))
        .collect();
    text.push_str(&format!(":{:04X}", addr.port()));
    text
}

/// IPv4 peers can arrive on a dual-stack socket as mapped IPv6 addresses.
fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(addr, |v4| SocketAddr::new(IpAddr::V4(v4), addr.port())),
        IpAddr::V4(_) => addr,
    }
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit word of the address
/// is written in the host's byte order.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = addr.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The effective gid of the processes that hold the socket `inode` open, when they all share
/// it. (A daemon that is not root cannot see other users' descriptors: their gid is unknown,
/// and a gid rule does not match them.)
fn gid_of(inode: u64) -> Option<u32> {
    let link = format!("socket:[{inode}]");
    let mut gid = None;
    for process in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = process.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == link.as_str()));
        if holds {
            let status = std::fs::read_to_string(process.path().join("status")).ok()?;
            // `Gid:	real	effective	saved	fs`
            let line = status.lines().find(|l| l.starts_with("Gid:"))?;
            let this: u32 = line.split_whitespace().nth(2)?.parse().ok()?;
            // Every process holding the socket must be of the group: a socket handed to a
            // setgid program by a process outside the group is not the group's.
            if gid.is_some_and(|g| g != this) {
                return None;
            }
            gid = Some(this);
        }
    }
    gid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_the_kernels_notation() {
        let local = "127.0.0.1:8080".parse::<SocketAddr>().unwrap();
        let hex = format!("{:08X}:{:04X}", u32::from_ne_bytes([127, 0, 0, 1]), 8080);
        assert_eq!(parse_address(&hex), Some(local));
        assert_eq!(kernel_notation(local), hex);
        let v6 = "[::1]:443".parse::<SocketAddr>().unwrap();
        let one = u32::from_ne_bytes([0, 0, 0, 1]);
        assert_eq!(
            parse_address(&format!("{:024X}{one:08X}:01BB", 0)),
            Some(v6)
        );
        assert_eq!(parse_address("zz:01"), None);
    }

    #[test]
    fn the_owner_of_a_real_loopback_connection_is_this_process_s_user() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let me = std::fs::read_to_string("/proc/self/status").unwrap();
        let field = |name: &str, index: usize| -> u32 {
            let line = me.lines().find(|l| l.starts_with(name)).unwrap();
            line.split_whitespace().nth(index).unwrap().parse().unwrap()
        };
        let ours = listener.local_addr().unwrap();
        let owner = Owner::of(peer, ours, true).expect("a socket of this host");
        assert_eq!(owner.uid, field("Uid:", 1));
        assert_eq!(owner.gid, Some(field("Gid:", 2)));
        assert_eq!(
            Owner::of(peer, ours, false).unwrap().gid,
            None,
            "only when asked"
        );
        // A peer that is no socket of this host has no owner.
        assert_eq!(Owner::of("127.0.0.1:1".parse().unwrap(), ours, false), None);
    }

    #[test]
    fn only_the_socket_connected_to_us_is_the_owner() {
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let ours: SocketAddr = "127.0.0.1:8181".parse().unwrap();
        let elsewhere: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let line = |remote: SocketAddr, state: &str, uid: u32, inode: u64| {
            format!(
                "   1: {} {} {state} 00000000:00000000 00:00000000 00000000 {uid:5} 0 {inode} 1 0 20 4 30 10 -1",
                kernel_notation(peer),
                kernel_notation(remote)
            )
        };
        let table = |lines: &[String]| {
            format!("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n{}\n", lines.join("\n"))
        };
        let owner = |lines: &[String]| pick(&sockets_at(&table(lines), peer), ours);
        // TIME_WAIT on a reused port (root's, no inode), then the live one to us.
        let lines = [line(ours, "06", 0, 0), line(ours, "01", 65534, 4242)];
        assert_eq!(owner(&lines), Some((65534, 4242)));
        // Another user's socket on the same port, connected elsewhere, is not the peer's,
        // even when it is the only one found.
        assert_eq!(owner(&[line(elsewhere, "01", 1000, 7)]), None);
        let lines = [line(elsewhere, "01", 1000, 7), line(ours, "04", 65534, 9)];
        assert_eq!(
            owner(&lines),
            Some((65534, 9)),
            "a half-closed socket still counts"
        );
        // Redirected by the capture rule: the client is connected, as it sees it, to IMDS.
        assert_eq!(owner(&[line(IMDS, "01", 1000, 5)]), Some((1000, 5)));
    }

    #[test]
    fn a_mapped_ipv6_socket_is_found_in_the_ipv6_table() {
        let v4: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        let ours: SocketAddr = "127.0.0.1:8181".parse().unwrap();
        let ours_mapped: SocketAddr = "[::ffff:127.0.0.1]:8181".parse().unwrap();
        let table = format!(
            "  sl  local_address                         remote_address                        st\n   0: {} {} 01 00000000:00000000 00:00000000 00000000 65534 0 77 1\n",
            kernel_notation(mapped),
            kernel_notation(ours_mapped)
        );
        assert_eq!(pick(&sockets_at(&table, v4), ours), Some((65534, 77)));
    }
}
