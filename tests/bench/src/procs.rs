//! The processes under test: the simulator, the daemon and the baseline, each a child that is
//! killed when its guard drops (and, through `PR_SET_PDEATHSIG`, when the driver dies), with
//! its stderr in a log file under the run directory.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Result;

/// Longest wait for a child to start listening or become ready.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Between two `/readyz` polls: tight enough to time a start to a fraction of a millisecond,
/// loose enough not to steal a core from the daemon that is starting.
const READY_POLL: Duration = Duration::from_micros(100);

/// A child process, killed on drop.
pub struct Proc {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Proc {
    /// Spawns `program args…` with stderr to `run_dir/{name}.log` and stdout piped.
    /// Call only from the main thread: the death signal is tied to the spawning thread.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        run_dir: &Path,
        env: &[(&str, &str)],
    ) -> Result<(Proc, ChildStdout)> {
        let log = run_dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log)?;
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        // SAFETY: prctl is async-signal-safe, and nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        Ok((
            Proc {
                child,
                name: name.to_owned(),
                log,
            },
            stdout,
        ))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in KiB (`VmRSS` in `/proc/PID/status`).
    pub fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.pid())
    }

    /// Fails if the child has exited, naming its log.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            return Err(format!(
                "{} exited ({status}); see {}",
                self.name,
                self.log.display()
            )
            .into());
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS for pid {pid}").into())
}

/// Reads the child's stdout until a line starting with `prefix`; returns the rest of the line.
/// The rest of stdout is drained on a thread, so the child never blocks on a full pipe.
pub fn read_line_after(stdout: ChildStdout, prefix: &str, what: &str) -> Result<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let prefix = prefix.to_owned();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let mut sent = false;
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if !sent {
                if let Some(rest) = line.trim_end().strip_prefix(&prefix) {
                    let _ = tx.send(rest.to_owned());
                    sent = true;
                }
            }
            line.clear();
        }
        // Drain whatever else comes, silently.
        let _ = reader.read_to_end(&mut Vec::new());
    });
    rx.recv_timeout(START_TIMEOUT)
        .map_err(|_| format!("{what} did not print its address").into())
}

/// A free loopback port (bound, read, released: the daemon binds it right after).
pub fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Polls `GET /readyz` on `addr` until a 200; returns the time since `since`.
pub fn wait_ready(addr: SocketAddr, since: Instant, proc: &mut Proc) -> Result<Duration> {
    loop {
        if ready_once(addr) {
            return Ok(since.elapsed());
        }
        if since.elapsed() > START_TIMEOUT {
            proc.check_alive()?;
            return Err(format!("{addr} not ready after {START_TIMEOUT:?}").into());
        }
        std::thread::sleep(READY_POLL);
    }
}

fn ready_once(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_nodelay(true);
    if stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}
