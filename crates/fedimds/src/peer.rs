//! Who is at the other end of a connection ([`Peer`]): a Unix-socket peer's credentials, or a
//! TCP peer's address and, when it is a socket of this host, its owner: the kernel knows the
//! owner of every socket. Real IMDS cannot tell local users apart; fedimds can, so `[[callers]]` uid and
//! gid rules restrict the IMDS dialect (and connections redirected by the capture rule) too.
//!
//! The uid comes from `/proc/net/tcp` and `/proc/net/tcp6`: the line whose local address is
//! the peer's address is the client's own socket, and its `uid` column is the socket's owner.
//! (A connection redirected by the capture rule still has the peer's address there; its remote
//! address is what the client dialled, 169.254.169.254:80, so only the local address is
//! matched.) The gid needs the process: the one holding that socket's inode open, found under
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
            Peer::Tcp { owner, .. } => owner.and_then(|o| o.gid()),
        }
    }
}

/// The owner of the socket at a TCP peer's address, when it is a socket of this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The socket's owner.
    pub uid: u32,
    /// The socket's inode, to find the process (and its gid) when a rule asks.
    pub inode: u64,
}

impl Owner {
    /// Looks up the owner of the local socket whose address is `peer`, connected to `ours`:
    /// `None` for a peer on another host, or when /proc is not readable. A file read, made
    /// once per connection, when it is accepted.
    pub fn of(peer: SocketAddr, ours: SocketAddr) -> Option<Owner> {
        let table = match peer.ip() {
            IpAddr::V4(v4) if !v4.is_unspecified() => "/proc/net/tcp",
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => "/proc/net/tcp",
            IpAddr::V6(_) => "/proc/net/tcp6",
            IpAddr::V4(_) => return None,
        };
        let text = std::fs::read_to_string(table).ok()?;
        let (uid, inode) = find(&text, peer, ours)?;
        Some(Owner { uid, inode })
    }

    /// The effective gid of a process holding the socket: a scan of /proc, made only when a
    /// `[[callers]]` rule names a gid.
    pub fn gid(&self) -> Option<u32> {
        gid_of(self.inode)
    }
}

/// The uid and inode of the live socket whose local address is `peer`, in a `/proc/net/tcp*`
/// table. Only established sockets with an inode count: a closed connection that used the
/// same port lingers in TIME_WAIT as root's, with no inode. The one connected to `ours` is
/// preferred; a connection redirected by the capture rule is connected, as its client sees
/// it, to the address it dialled, so the only one from `peer` is taken too.
fn find(table: &str, peer: SocketAddr, ours: SocketAddr) -> Option<(u32, u64)> {
    let (peer, ours) = (unmapped(peer), unmapped(ours));
    // A table lists every socket of the host; only lines holding the peer's address in the
    // kernel's notation are parsed.
    let needle = kernel_notation(peer);
    let mut from_peer = table
        .lines()
        .skip(1)
        .filter(|line| line.contains(&needle))
        .filter_map(|line| {
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().take(10).collect();
            let [_, local, remote, state, _, _, _, uid, _, inode] = fields.as_slice() else {
                return None;
            };
            const ESTABLISHED: &str = "01";
            let inode: u64 = inode.parse().ok()?;
            let live = *state == ESTABLISHED && inode != 0;
            (live && parse_address(local)? == peer)
                .then(|| Some((parse_address(remote)? == ours, uid.parse().ok()?, inode)))
                .flatten()
        });
    let first = from_peer.next()?;
    let all: Vec<_> = std::iter::once(first).chain(from_peer).collect();
    match all.iter().find(|(to_us, _, _)| *to_us) {
        Some(&(_, uid, inode)) => Some((uid, inode)),
        None if all.len() == 1 => Some((first.1, first.2)),
        // Several live sockets from that address and none to us: whose it is is not known.
        None => None,
    }
}

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

/// The effective gid of a process that holds the socket `inode` open.
fn gid_of(inode: u64) -> Option<u32> {
    let link = format!("socket:[{inode}]");
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
            return line.split_whitespace().nth(2)?.parse().ok();
        }
    }
    None
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
        let owner = Owner::of(peer, ours).expect("a socket of this host");
        assert_eq!(owner.uid, field("Uid:", 1));
        assert_eq!(owner.gid(), Some(field("Gid:", 2)));
        // A peer that is no socket of this host has no owner.
        assert_eq!(Owner::of("127.0.0.1:1".parse().unwrap(), ours), None);
    }

    #[test]
    fn a_lingering_closed_connection_on_the_same_port_is_not_the_owner() {
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let ours: SocketAddr = "127.0.0.1:8181".parse().unwrap();
        let hex = |a: SocketAddr| match a.ip() {
            IpAddr::V4(v4) => format!("{:08X}:{:04X}", u32::from_ne_bytes(v4.octets()), a.port()),
            IpAddr::V6(_) => unreachable!("IPv4 in this test"),
        };
        let line = |state: &str, uid: u32, inode: u64| {
            format!(
                "   1: {} {} {state} 00000000:00000000 00:00000000 00000000 {uid:5} 0 {inode} 1 0 20 4 30 10 -1",
                hex(peer),
                hex(ours)
            )
        };
        let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
        // TIME_WAIT (06), root's, no inode; then the live one, uid 65534.
        let table = format!(
            "{header}\n{}\n{}\n",
            line("06", 0, 0),
            line("01", 65534, 4242)
        );
        assert_eq!(find(&table, peer, ours), Some((65534, 4242)));
        let table = format!("{header}\n{}\n", line("06", 0, 0));
        assert_eq!(find(&table, peer, ours), None);
    }
}
