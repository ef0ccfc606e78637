//! Leases: a running operation (a pull, say) leases the blobs, layers and ingests it is using, and
//! garbage collection leaves leased items alone.
//!
//! A lease ends when its holder releases it, when its expiry passes, or when the process that took
//! it is gone. For the last case a lease records the holder's pid together with the process start
//! time and the boot identity (from `/proc`), so a recycled pid or a reboot does not keep a dead
//! holder's lease alive. Where `/proc` is unavailable, process-bound leases end only by release or
//! expiry.

use std::fs;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use oci_spec::image::Digest;
use rusqlite::{OptionalExtension, params};

use super::Metadata;
use crate::durable::{self, from_unix_millis, unix_millis};
use crate::error::{Result, StoreError};

/// How a new lease ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseOptions {
    /// The lease ends this long after creation, even if never released.
    pub expires_in: Option<Duration>,
    /// The lease ends when this process exits (the default).
    pub bind_to_process: bool,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            expires_in: None,
            bind_to_process: true,
        }
    }
}

/// Something a lease protects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LeaseResource {
    /// A blob of the content store, by digest. Lease it before writing it.
    Blob(Digest),
    /// An unpacked layer, by ChainID.
    Layer(Digest),
    /// An ingest, by its reference.
    Ingest(String),
}

impl LeaseResource {
    fn parts(&self) -> (&'static str, String) {
        match self {
            LeaseResource::Blob(d) => ("blob", d.to_string()),
            LeaseResource::Layer(d) => ("layer", d.to_string()),
            LeaseResource::Ingest(r) => ("ingest", r.clone()),
        }
    }

    fn from_parts(kind: &str, id: String) -> Option<LeaseResource> {
        match kind {
            "blob" => Digest::try_from(id).ok().map(LeaseResource::Blob),
            "layer" => Digest::try_from(id).ok().map(LeaseResource::Layer),
            "ingest" => Some(LeaseResource::Ingest(id)),
            _ => None,
        }
    }
}

/// A lease as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Its identifier.
    pub id: String,
    /// The process it is bound to, if any.
    pub pid: Option<u32>,
    /// When it was taken.
    pub created_at: SystemTime,
    /// When it expires, if ever.
    pub expires_at: Option<SystemTime>,
    /// Whether it still protects its resources (not expired, holder alive).
    pub alive: bool,
    /// What it protects.
    pub resources: Vec<LeaseResource>,
}

/// The identity of a process, precise enough to survive pid reuse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) pid: u32,
    pub(crate) start: Option<u64>,
    pub(crate) boot: Option<String>,
}

/// This process's identity.
pub(crate) fn current_holder() -> Holder {
    let pid = std::process::id();
    Holder {
        pid,
        start: process_start(pid),
        boot: durable::boot_id(),
    }
}

/// Start time of a process in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is parenthesised and may contain spaces or parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that took a lease is still running.
fn holder_alive(pid: u32, start: Option<u64>, boot: Option<&str>) -> bool {
    let proc_works = fs::metadata("/proc/self/stat").is_ok();
    if !proc_works {
        return true; // cannot tell: rely on release and expiry
    }
    if let (Some(theirs), Some(ours)) = (boot, durable::boot_id())
        && theirs != ours
    {
        return false;
    }
    match (process_start(pid), start) {
        (None, _) => false,
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
    }
}

fn new_lease_id(holder: &Holder) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}-{}-{}-{n}",
        holder.pid,
        holder.start.unwrap_or(0),
        unix_millis(SystemTime::now())
    )
}

impl Metadata {
    /// Takes a new lease with no resources; returns its identifier.
    pub fn create_lease(&self, options: &LeaseOptions) -> Result<String> {
        let holder = current_holder();
        let id = new_lease_id(&holder);
        let now = SystemTime::now();
        let expires = options.expires_in.map(|d| unix_millis(now + d));
        let (pid, start, boot) = if options.bind_to_process {
            (
                Some(i64::from(holder.pid)),
                holder.start.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
                holder.boot.clone(),
            )
        } else {
            (None, None, None)
        };
        self.write(|tx| {
            tx.execute(
                "INSERT INTO leases (id, pid, pid_start, boot_id, created_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, pid, start, boot, unix_millis(now), expires],
            )
            .map(|_| ())
        })?;
        Ok(id)
    }

    /// Adds a resource to a lease.
    pub fn add_lease_resource(&self, lease: &str, resource: &LeaseResource) -> Result<()> {
        let (kind, rid) = resource.parts();
        let found = self.write(|tx| {
            let exists: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM leases WHERE id = ?1)",
                [lease],
                |r| r.get(0),
            )?;
            if exists {
                tx.execute(
                    "INSERT OR IGNORE INTO lease_resources (lease, kind, id) VALUES (?1, ?2, ?3)",
                    params![lease, kind, rid],
                )?;
            }
            Ok(exists)
        })?;
        if found {
            Ok(())
        } else {
            Err(StoreError::LeaseNotFound {
                id: lease.to_owned(),
            })
        }
    }

    /// Removes a resource from a lease (no error if it was not there).
    pub fn remove_lease_resource(&self, lease: &str, resource: &LeaseResource) -> Result<()> {
        let (kind, rid) = resource.parts();
        self.write(|tx| {
            tx.execute(
                "DELETE FROM lease_resources WHERE lease = ?1 AND kind = ?2 AND id = ?3",
                params![lease, kind, rid],
            )
            .map(|_| ())
        })
    }

    /// Ends a lease; returns whether it existed.
    pub fn delete_lease(&self, lease: &str) -> Result<bool> {
        self.write(|tx| Ok(tx.execute("DELETE FROM leases WHERE id = ?1", [lease])? > 0))
    }

    /// Every lease with its resources and liveness, oldest first.
    pub fn leases(&self) -> Result<Vec<LeaseRecord>> {
        let now = SystemTime::now();
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT id, pid, pid_start, boot_id, created_ms, expires_ms FROM leases
                 ORDER BY created_ms, id",
            )?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut res_st = c.prepare(
                "SELECT kind, id FROM lease_resources WHERE lease = ?1 ORDER BY kind, id",
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for (id, pid, start, boot, created, expires) in rows {
                let resources = res_st
                    .query_map([&id], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?
                    .into_iter()
                    .filter_map(|(k, v)| LeaseResource::from_parts(&k, v))
                    .collect();
                let pid = pid.and_then(|p| u32::try_from(p).ok());
                let expires_at = expires.map(from_unix_millis);
                let alive = expires_at.is_none_or(|e| e > now)
                    && pid.is_none_or(|p| {
                        holder_alive(
                            p,
                            start.and_then(|s| u64::try_from(s).ok()),
                            boot.as_deref(),
                        )
                    });
                out.push(LeaseRecord {
                    id,
                    pid,
                    created_at: from_unix_millis(created),
                    expires_at,
                    alive,
                    resources,
                });
            }
            Ok(out)
        })
    }

    /// Deletes every lease that has expired or whose holder is gone; returns their identifiers.
    pub fn collect_dead_leases(&self) -> Result<Vec<String>> {
        let dead: Vec<String> = self
            .leases()?
            .into_iter()
            .filter(|l| !l.alive)
            .map(|l| l.id)
            .collect();
        for id in &dead {
            self.delete_lease(id)?;
        }
        Ok(dead)
    }

    /// The resources of every live lease.
    pub fn leased_resources(&self) -> Result<Vec<LeaseResource>> {
        Ok(self
            .leases()?
            .into_iter()
            .filter(|l| l.alive)
            .flat_map(|l| l.resources)
            .collect())
    }

    /// Whether a lease exists.
    pub fn lease_exists(&self, lease: &str) -> Result<bool> {
        self.read(|c| {
            c.query_row("SELECT 1 FROM leases WHERE id = ?1", [lease], |_| Ok(()))
                .optional()
                .map(|o| o.is_some())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::open_temp;
    use super::*;
    use crate::digests::sha256_of;

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = current_holder();
        assert!(me.start.is_some(), "/proc is available on the test machine");
        assert!(holder_alive(me.pid, me.start, me.boot.as_deref()));
        assert!(!holder_alive(
            me.pid,
            me.start.map(|s| s + 1),
            me.boot.as_deref()
        ));
        assert!(!holder_alive(me.pid, me.start, Some("another-boot")));
    }

    #[test]
    fn lease_resources_are_listed_and_end_with_the_lease() {
        let (_d, md) = open_temp();
        let id = md.create_lease(&LeaseOptions::default()).unwrap();
        let blob = LeaseResource::Blob(sha256_of(b"b"));
        let ingest = LeaseResource::Ingest("pull-x".into());
        md.add_lease_resource(&id, &blob).unwrap();
        md.add_lease_resource(&id, &blob).unwrap();
        md.add_lease_resource(&id, &ingest).unwrap();
        let mut got = md.leased_resources().unwrap();
        got.sort_by_key(|r| format!("{r:?}"));
        let mut want = vec![blob.clone(), ingest];
        want.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(got, want);
        md.remove_lease_resource(&id, &blob).unwrap();
        assert_eq!(md.leased_resources().unwrap().len(), 1);
        assert!(md.delete_lease(&id).unwrap());
        assert!(md.leased_resources().unwrap().is_empty());
        assert!(matches!(
            md.add_lease_resource(&id, &blob),
            Err(StoreError::LeaseNotFound { .. })
        ));
    }

    #[test]
    fn expired_leases_are_dead_and_collected() {
        let (_d, md) = open_temp();
        let expired = md
            .create_lease(&LeaseOptions {
                expires_in: Some(Duration::ZERO),
                bind_to_process: false,
            })
            .unwrap();
        let live = md
            .create_lease(&LeaseOptions {
                expires_in: Some(Duration::from_secs(3600)),
                bind_to_process: true,
            })
            .unwrap();
        let d = sha256_of(b"d");
        md.add_lease_resource(&expired, &LeaseResource::Layer(d.clone()))
            .unwrap();
        md.add_lease_resource(&live, &LeaseResource::Blob(d.clone()))
            .unwrap();
        assert_eq!(md.leased_resources().unwrap(), vec![LeaseResource::Blob(d)]);
        assert_eq!(md.collect_dead_leases().unwrap(), vec![expired.clone()]);
        assert!(!md.lease_exists(&expired).unwrap());
        assert!(md.lease_exists(&live).unwrap());
    }

    #[test]
    fn lease_of_a_recycled_pid_is_dead() {
        let (_d, md) = open_temp();
        let id = md.create_lease(&LeaseOptions::default()).unwrap();
        // Make the recorded start time disagree with the running process, as after pid reuse.
        md.write(|tx| {
            tx.execute(
                "UPDATE leases SET pid_start = pid_start + 1 WHERE id = ?1",
                [&id],
            )
        })
        .unwrap();
        assert!(!md.leases().unwrap()[0].alive);
    }
}
