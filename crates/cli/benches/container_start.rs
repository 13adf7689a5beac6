//! Container start latency: berth's native runtime (overlay + `berth shim` + libcontainer,
//! start → process exit of `/bin/true`) against `podman run --runtime runc` and `docker run`
//! of the same busybox root filesystem, measured in the same run. Needs root, busybox-static,
//! and podman/dockerd for the peers (each peer is skipped with a message if missing).
//!
//!     cargo bench -p berth --bench container_start -- [runs]

#![allow(clippy::disallowed_methods, reason = "a benchmark measures real time")]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_runtime::native::NativeRuntime;
use berth_runtime::spec::ContainerSpec;

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1000.0
}

fn report(name: &str, mut v: Vec<Duration>) {
    println!(
        "| {name} | {:.1} ms | {:.1} ms | {} |",
        pct(&mut v, 0.5),
        pct(&mut v, 0.99),
        v.len()
    );
}

fn rootfs(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for t in ["sh", "true"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(t)).unwrap();
    }
}

fn time_cmd(runs: usize, mut cmd: impl FnMut() -> Command) -> Option<Vec<Duration>> {
    let mut out = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let st = cmd()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        if !st.success() {
            return None;
        }
        out.push(t.elapsed());
    }
    Some(out)
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(30);
    if NativeRuntime::check().is_err() || !Path::new("/bin/busybox").exists() {
        eprintln!("needs root and /bin/busybox");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("image");
    rootfs(&image);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let native = NativeRuntime::new(
        &work.path().join("rt"),
        Path::new(env!("CARGO_BIN_EXE_berth")),
    )
    .unwrap();
    println!("container start → exit of /bin/true, {runs} runs each, same machine, same run\n");
    println!("| runtime | p50 | p99 | runs |");
    println!("|---|---|---|---|");
    let mut v = Vec::new();
    for i in 0..runs {
        let id = format!("bench-{}-{i}", std::process::id());
        let spec = ContainerSpec {
            args: vec!["/bin/true".into()],
            cgroup_path: format!("/berth-bench/{id}"),
            ..Default::default()
        };
        let t = Instant::now();
        rt.block_on(async {
            let mut c = native.start(&id, &image, &spec).await.unwrap();
            native.wait(&mut c).await.unwrap();
        });
        v.push(t.elapsed());
        native.cleanup(&id);
    }
    report("berth native (overlay + shim + libcontainer)", v);
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(h.path().join("berth-bench"));
    }

    // The peers get the same root filesystem as an imported image.
    let tar = work.path().join("rootfs.tar");
    let ok = Command::new("tar")
        .args([
            "-C",
            image.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        return;
    }
    let short = tempfile::Builder::new()
        .prefix("bp")
        .tempdir_in("/tmp")
        .unwrap();
    let pstore = work.path().join("podman");
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.args([
            "--root",
            pstore.to_str().unwrap(),
            "--runroot",
            short.path().to_str().unwrap(),
            "--storage-driver",
            "vfs",
            "--runtime",
            "runc",
        ]);
        c.args(args);
        c
    };
    let imported = podman(&["import", tar.to_str().unwrap(), "localhost/bb:1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if imported {
        match time_cmd(runs, || {
            let mut c = podman(&[
                "run",
                "--rm",
                "--network",
                "none",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
                "localhost/bb:1",
                "/bin/true",
            ]);
            c.stdin(Stdio::null());
            c
        }) {
            Some(v) => report("podman run --runtime runc", v),
            None => println!("| podman run --runtime runc | failed | | |"),
        }
        let _ = podman(&["system", "reset", "--force"]).status();
    } else {
        println!("| podman | not available | | |");
    }

    // docker: a dockerd of our own.
    let d = work.path().join("docker");
    let sock = d.join("docker.sock");
    let dockerd = Command::new("dockerd")
        .args([
            "--data-root",
            d.join("data").to_str().unwrap(),
            "--exec-root",
            d.join("exec").to_str().unwrap(),
            "--pidfile",
            d.join("pid").to_str().unwrap(),
            "-H",
            &format!("unix://{}", sock.display()),
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Ok(mut dd) = dockerd {
        let docker = |args: &[&str]| {
            let mut c = Command::new("docker");
            c.env("DOCKER_HOST", format!("unix://{}", sock.display()));
            c.args(args);
            c
        };
        let mut up = false;
        for _ in 0..100 {
            if docker(&["version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
            {
                up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if up
            && docker(&["import", tar.to_str().unwrap(), "bb:1"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        {
            match time_cmd(runs, || {
                docker(&["run", "--rm", "--network", "none", "bb:1", "/bin/true"])
            }) {
                Some(v) => report("docker run", v),
                None => println!("| docker run | failed | | |"),
            }
        } else {
            println!("| docker | not available | | |");
        }
        let _ = Command::new("kill").arg(dd.id().to_string()).status();
        let _ = dd.wait();
        let _ = Command::new("umount")
            .args(["-R", d.join("data").to_str().unwrap()])
            .status();
    }
}
