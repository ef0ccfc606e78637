//! Starting and stopping the registry process.
//!
//! Children are spawned from one long-lived thread: `PR_SET_PDEATHSIG` fires when the
//! *thread* that forked the child exits, and test threads (or runtime worker threads)
//! come and go while a registry may be shared between tests. The spawner thread lives
//! as long as the process, so a registry dies with the test process and not before.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};

use tokio::sync::oneshot;

use crate::sys;

type Job = (Command, oneshot::Sender<io::Result<Child>>);

fn spawner() -> io::Result<mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Mutex<Option<mpsc::Sender<Job>>>> = OnceLock::new();
    let cell = SPAWNER.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = guard.as_ref() {
        return Ok(tx.clone());
    }
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("hoist-registry-spawner".into())
        .spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        })?;
    *guard = Some(tx.clone());
    Ok(tx)
}

/// A running registry process; killed (with its process group) and reaped on drop.
pub(crate) struct RegistryProcess {
    child: Child,
}

impl RegistryProcess {
    /// Starts `binary serve config` with stdout and stderr appended to `log`, every
    /// `REGISTRY_*` variable removed from its environment, in its own process group,
    /// and set to die with this process.
    pub(crate) async fn spawn(binary: &Path, config: &Path, log: &Path) -> io::Result<Self> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // distribution reads every REGISTRY_* variable as a config override.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(&key);
            }
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        sys::kill_child_with_parent(&mut cmd);
        let (tx, rx) = oneshot::channel();
        spawner()?
            .send((cmd, tx))
            .map_err(|_| io::Error::other("the registry spawner thread has stopped"))?;
        let child = rx
            .await
            .map_err(|_| io::Error::other("the registry spawner thread has stopped"))??;
        Ok(RegistryProcess { child })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` if the process has exited.
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown status: {e}")),
        }
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // The group id is the child's pid (process_group(0)); the child is not
            // reaped yet, so its pid cannot have been reused.
            sys::kill_process_group(self.child.id());
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1 that no other harness of this process was handed.
pub(crate) fn free_port() -> io::Result<u16> {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..100 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    Err(io::Error::other("no free port found on 127.0.0.1"))
}
