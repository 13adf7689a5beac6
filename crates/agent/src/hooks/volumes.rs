//! The volumes hook: a container's `mountPoints` (and those of the containers it takes
//! `volumesFrom`, read-only if asked) as bind mounts — a host volume's `sourcePath`, or a
//! directory of the task's own; the task's directory removed at the end.

use std::path::PathBuf;

use async_trait::async_trait;
use berth_model::wire::ecs::ContainerDefinition;
use berth_runtime::spec::BindMount;

use super::Hook;
use crate::task::{Launch, Task};

pub(crate) struct Volumes;

fn host_path(t: &Task, volume: &str) -> Result<PathBuf, String> {
    let v = t
        .volumes
        .iter()
        .find(|v| v.name.as_deref() == Some(volume))
        .ok_or_else(|| format!("CannotStartContainerError: unknown volume {volume}"))?;
    let p = match v.host.as_ref().and_then(|h| h.source_path.clone()) {
        Some(src) => PathBuf::from(src),
        None => t.inner.volume_dir(t.st.id(), volume),
    };
    std::fs::create_dir_all(&p)
        .map_err(|e| format!("CannotStartContainerError: volume {volume}: {e}"))?;
    Ok(p)
}

fn mounts_of(
    t: &Task,
    d: &ContainerDefinition,
    seen: &mut Vec<String>,
) -> Result<Vec<BindMount>, String> {
    let name = d.name.clone().unwrap_or_default();
    if seen.contains(&name) {
        return Ok(vec![]);
    }
    seen.push(name);
    let mut out = Vec::new();
    for m in d.mount_points.as_deref().unwrap_or_default() {
        let vol = m.source_volume.as_deref().unwrap_or_default();
        out.push(BindMount {
            source: host_path(t, vol)?,
            destination: m.container_path.clone().unwrap_or_default(),
            readonly: m.read_only.unwrap_or(false),
        });
    }
    for vf in d.volumes_from.as_deref().unwrap_or_default() {
        let src = vf.source_container.as_deref().unwrap_or_default();
        let sd = t.def(src).ok_or_else(|| {
            format!("CannotStartContainerError: volumesFrom unknown container {src}")
        })?;
        for mut m in mounts_of(t, sd, seen)? {
            if vf.read_only == Some(true) {
                m.readonly = true;
            }
            out.push(m);
        }
    }
    Ok(out)
}

#[async_trait]
impl Hook for Volumes {
    async fn create(&mut self, t: &mut Task, c: &mut Launch) -> Result<(), String> {
        if let Some(d) = t.def(&c.name) {
            c.spec.mounts = mounts_of(t, d, &mut Vec::new())?;
        }
        Ok(())
    }

    async fn finish(&mut self, t: &mut Task) {
        let _ = std::fs::remove_dir_all(t.inner.task_dir(t.st.id()));
    }
}
