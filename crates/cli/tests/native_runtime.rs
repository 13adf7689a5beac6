//! The native runtime on the real kernel: containers from a busybox root filesystem, started
//! through `berth shim` (libcontainer), with exit codes, SIGTERM → SIGKILL, limits and
//! cleanup checked from outside. Needs root; skipped (with a message) otherwise.

#![allow(
    clippy::disallowed_methods,
    reason = "waits on real containers and the real kernel, in real time"
)]

use std::path::Path;
use std::time::Duration;

use berth_runtime::native::{Exit, NativeRuntime};
use berth_runtime::spec::ContainerSpec;

fn busybox_rootfs(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for tool in ["sh", "echo", "sleep", "cat", "hostname", "id"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(tool)).unwrap();
    }
}

fn spec(id: &str, args: &[&str]) -> ContainerSpec {
    ContainerSpec {
        args: args.iter().map(|a| a.to_string()).collect(),
        hostname: format!("h-{id}"),
        cgroup_path: format!("/berth-test/{id}"),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_run_exit_stop_and_clean_up() {
    if NativeRuntime::check().is_err() || !Path::new("/bin/busybox").exists() {
        eprintln!("skipping: needs root and /bin/busybox (busybox-static)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("image");
    busybox_rootfs(&image);
    let rt = NativeRuntime::new(
        &work.path().join("rt"),
        Path::new(env!("CARGO_BIN_EXE_berth")),
    )
    .unwrap();
    let tag = std::process::id();

    // Output goes to the log; exit 0; the hostname is the container's own.
    let id = format!("echo-{tag}");
    let mut c = rt
        .start(
            &id,
            &image,
            &spec(&id, &["/bin/sh", "-c", "echo hello; hostname"]),
        )
        .await
        .unwrap();
    assert_eq!(rt.wait(&mut c).await.unwrap(), Exit::Code(0));
    let log = std::fs::read_to_string(rt.log_path(&id)).unwrap();
    assert_eq!(log, format!("hello\nh-{id}\n"));
    rt.cleanup(&id);

    // Exit codes come through.
    let id = format!("exit-{tag}");
    let mut c = rt
        .start(&id, &image, &spec(&id, &["/bin/sh", "-c", "exit 3"]))
        .await
        .unwrap();
    assert_eq!(rt.wait(&mut c).await.unwrap().code(), 3);
    rt.cleanup(&id);

    // A container that ignores SIGTERM (PID 1 without a handler) is killed after the timeout;
    // while it runs, its memory limit is in its cgroup and its root is an overlay.
    let id = format!("sleep-{tag}");
    let mut s = spec(&id, &["/bin/sleep", "100"]);
    s.memory_limit = Some(64 << 20);
    let mut c = rt.start(&id, &image, &s).await.unwrap();
    let limit_v1 = format!("/sys/fs/cgroup/memory/berth-test/{id}/memory.limit_in_bytes");
    let limit_v2 = format!("/sys/fs/cgroup/berth-test/{id}/memory.max");
    let limit = std::fs::read_to_string(&limit_v1)
        .or_else(|_| std::fs::read_to_string(&limit_v2))
        .expect("the container's memory cgroup exists");
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        mounts.contains(&format!("{id}/rootfs overlay"))
            || mounts
                .lines()
                .any(|l| l.contains(&id) && l.contains("overlay"))
    );
    let t = std::time::Instant::now();
    let exit = rt.stop(&mut c, Duration::from_millis(500)).await.unwrap();
    assert_eq!(exit, Exit::Signal(9), "SIGTERM ignored, then SIGKILL");
    assert_eq!(exit.code(), 137);
    assert!(t.elapsed() >= Duration::from_millis(450));
    rt.cleanup(&id);

    // Over its memory limit: the kernel kills it, and the runtime says it was memory.
    let id = format!("oom-{tag}");
    let mut s = spec(&id, &["/bin/sh", "-c", "x=a; while true; do x=$x$x; done"]);
    s.memory_limit = Some(16 << 20);
    let mut c = rt.start(&id, &image, &s).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(30), rt.wait(&mut c))
        .await
        .expect("the OOM killer acts within 30 s")
        .unwrap();
    assert_eq!(exit, Exit::OutOfMemory);
    assert_eq!(exit.code(), 137);
    rt.cleanup(&id);

    // Nothing left behind: no mount, no cgroup, no bundle.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(work.path().to_str().unwrap()),
        "a mount was left behind"
    );
    assert!(!Path::new(&limit_v1).exists() && !Path::new(&limit_v2).exists());
    // The test's parent cgroup, in every hierarchy (v1 controllers, or v2).
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(h.path().join("berth-test"));
    }
    let _ = std::fs::remove_dir("/sys/fs/cgroup/berth-test");
}
