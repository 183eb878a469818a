//! The record of everything a lab instance created: namespaces, cgroups, mounts. It is written
//! *before* each thing is created, so after a crash (even `kill -9`) the next `lab up` or
//! `lab down` removes exactly what the previous run made, and nothing else.

use std::{fs, path::Path};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::{paths::Paths, sys};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Process id of the `lab up` that owns the instance.
    pub pid: u32,
    /// Named network namespaces created (node, pods, outside world).
    pub netns: Vec<String>,
    /// Mount points created (bpffs, cgroup2), unmounted in reverse order.
    pub mounts: Vec<String>,
    /// Cgroup directories created (processes in them are killed on cleanup).
    pub cgroups: Vec<String>,
    /// Web address served, for `lab up -d` to print and `lab status` to show.
    pub web: Option<String>,
    /// The cluster this run built and a digest of the manifests it came from: a restart with
    /// the same manifests takes the running cluster over instead of rebuilding it.
    #[serde(default)]
    pub topology: Option<crate::cluster::Topology>,
    #[serde(default)]
    pub manifest_digest: String,
}

impl Record {
    pub fn load(paths: &Paths) -> Result<Option<Self>> {
        let file = paths.state_file();
        match fs::read(&file) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is damaged; remove it and any leftovers by hand",
                    file.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
        }
    }

    /// Writes atomically (temp file + rename).
    pub fn save(&self, paths: &Paths) -> Result<()> {
        fs::create_dir_all(&paths.root)?;
        let file = paths.state_file();
        let tmp = file.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        fs::rename(&tmp, &file).with_context(|| format!("writing {}", file.display()))
    }

    pub fn note_netns(&mut self, paths: &Paths, name: &str) -> Result<()> {
        self.note_netns_all(paths, [name])
    }

    /// Notes several namespaces with one write of the record (which holds the whole topology:
    /// a write per pod would make start-up quadratic in the number of pods).
    pub fn note_netns_all<'a>(
        &mut self,
        paths: &Paths,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<()> {
        let before = self.netns.len();
        for name in names {
            if !self.netns.iter().any(|n| n == name) {
                self.netns.push(name.to_owned());
            }
        }
        if self.netns.len() != before {
            self.save(paths)?;
        }
        Ok(())
    }

    pub fn note_mount(&mut self, paths: &Paths, path: &Path) -> Result<()> {
        let p = path.to_string_lossy().into_owned();
        if !self.mounts.contains(&p) {
            self.mounts.push(p);
            self.save(paths)?;
        }
        Ok(())
    }

    pub fn note_cgroup(&mut self, paths: &Paths, path: &Path) -> Result<()> {
        let p = path.to_string_lossy().into_owned();
        if !self.cgroups.contains(&p) {
            self.cgroups.push(p);
            self.save(paths)?;
        }
        Ok(())
    }
}

/// What cleanup did, for the user.
#[derive(Debug, Default)]
pub struct CleanupReport {
    pub removed: Vec<String>,
    pub errors: Vec<String>,
}

/// Removes everything in the record, in reverse order of creation: processes (by cgroup),
/// namespaces (which takes their veths and the links attached to them), pins and mounts, then
/// the instance directory. Every error is collected, not just the first.
pub fn cleanup(paths: &Paths, record: &Record) -> CleanupReport {
    let mut report = CleanupReport::default();
    for cg in record.cgroups.iter().rev() {
        match sys::remove_cgroup(Path::new(cg)) {
            Ok(()) => report.removed.push(format!("cgroup {cg}")),
            Err(e) => report.errors.push(format!("cgroup {cg}: {e:#}")),
        }
    }
    for ns in record.netns.iter().rev() {
        match sys::delete_netns(ns) {
            Ok(()) => report.removed.push(format!("netns {ns}")),
            Err(e) => report.errors.push(format!("netns {ns}: {e:#}")),
        }
    }
    // A cgroup mount is only given up once its cgroups are gone: otherwise they would stay in
    // the system's hierarchy, out of the next cleanup's reach.
    let cgroups_left = report.errors.iter().any(|e| e.starts_with("cgroup "));
    for m in record.mounts.iter().rev() {
        if cgroups_left && m.ends_with("/cgroup") {
            report
                .errors
                .push(format!("mount {m}: kept, because cgroups under it remain"));
            continue;
        }
        match sys::unmount(Path::new(m)) {
            Ok(()) => report.removed.push(format!("mount {m}")),
            Err(e) => report.errors.push(format!("mount {m}: {e:#}")),
        }
    }
    if report.errors.is_empty()
        && let Err(e) = fs::remove_dir_all(&paths.root)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        report.errors.push(format!("{}: {e}", paths.root.display()));
    }
    report
}
