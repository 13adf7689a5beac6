//! The default seccomp policy of containers, compiled to BPF with the pure-Rust `seccompiler`
//! and installed by the container's init process right before it execs the workload (a
//! libcontainer [`Executor`]), after `no_new_privs` is set.
//!
//! The policy follows what Docker's default profile takes away from a container without
//! `CAP_SYS_ADMIN`: loading kernels and modules, rebooting, swap, the kernel keyring, BPF,
//! perf events, mounting, new namespaces (`unshare`, `setns`, namespace flags of `clone`;
//! `clone3` answers ENOSYS so that libc falls back to `clone`), `open_by_handle_at` (the
//! "Shocker" escape), setting the clock, `userfaultfd`, `io_uring`, the kernel log, and
//! obsolete or x86-only calls (`iopl`, `ioperm`, `uselib`, …). Everything else is allowed.
//! Calls of another architecture kill the process; on x86_64, calls through the x32 ABI
//! (numbers with `__X32_SYSCALL_BIT` set, which reach the same kernel code under other
//! numbers than the rules name) are refused with EPERM.
//! Privileged containers, and containers given `SYS_ADMIN`, run without it, as with Docker.
//!
//! `berth nsexec` installs the same programs ([`default_programs`]) in every process it
//! starts inside a container with the policy.

use std::collections::BTreeMap;

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The annotation in a bundle's `config.json` that turns the policy off (`unconfined`).
pub const ANNOTATION: &str = "berth.seccomp";

/// Syscalls refused with EPERM, whatever their arguments.
fn denied() -> Vec<i64> {
    let mut v = vec![
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_keyctl,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_syslog,
        libc::SYS_quotactl,
        libc::SYS_lookup_dcookie,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_fsconfig,
        libc::SYS_fspick,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_mount_setattr,
        libc::SYS_fanotify_init,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS_uselib,
        libc::SYS_sysfs,
        libc::SYS__sysctl,
        libc::SYS_umount2,
        libc::SYS_nfsservctl,
        libc::SYS_vhangup,
    ]);
    v.sort();
    v.dedup();
    v
}

/// `clone` flags that create namespaces.
const NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

fn arch() -> TargetArch {
    #[cfg(target_arch = "aarch64")]
    return TargetArch::aarch64;
    #[cfg(not(target_arch = "aarch64"))]
    TargetArch::x86_64
}

/// A filter that refuses, with EPERM, every x32 ABI call (`nr >= __X32_SYSCALL_BIT` on the
/// x86_64 audit architecture). The seccompiler rules match syscall numbers exactly, so an x32
/// `mount` (`0x40000000 | 165`) would otherwise pass as an unknown number. Other
/// architectures are left to the other filters, which kill the process.
#[cfg(target_arch = "x86_64")]
fn x32_program() -> BpfProgram {
    // Classic BPF opcodes (linux/bpf_common.h) and the x86_64 audit architecture.
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    // Offsets in `struct seccomp_data`: nr, then arch.
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    let op = |code, jt, jf, k| seccompiler::sock_filter { code, jt, jf, k };
    vec![
        op(LD_W_ABS, 0, 0, ARCH),
        op(JEQ_K, 0, 3, AUDIT_ARCH_X86_64), // not x86_64: allow (judged elsewhere)
        op(LD_W_ABS, 0, 0, NR),
        op(JGE_K, 0, 1, X32_SYSCALL_BIT),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// The policy as BPF programs, to be installed in order.
pub fn default_programs() -> Result<Vec<BpfProgram>, String> {
    let e = |e: seccompiler::BackendError| e.to_string();
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        denied().into_iter().map(|s| (s, vec![])).collect();
    // clone(flags, …): refuse any namespace flag. The flags are the first argument on
    // x86_64 and aarch64.
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|f| {
            SeccompRule::new(vec![
                SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(*f), *f)
                    .map_err(e)?,
            ])
            .map_err(e)
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    let eperm = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch(),
    )
    .map_err(e)?;
    let enosys = SeccompFilter::new(
        [(libc::SYS_clone3, vec![])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch(),
    )
    .map_err(e)?;
    #[allow(unused_mut)]
    let mut programs = vec![eperm.try_into().map_err(e)?, enosys.try_into().map_err(e)?];
    #[cfg(target_arch = "x86_64")]
    programs.push(x32_program());
    Ok(programs)
}

/// Whether a bundle's spec asks for the policy (the default) or not.
pub fn wanted(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION))
        .is_none_or(|v| v != "unconfined")
}

/// libcontainer's executor: the seccomp policy installed just before `execve`, and, for
/// `initProcessEnabled`, an init as the container's PID 1 (see [`run_init`]).
#[derive(Clone)]
pub struct SeccompExecutor {
    pub programs: Vec<BpfProgram>,
    /// Stay as PID 1: fork the workload, forward signals to it, reap orphans.
    pub init: bool,
}

impl Executor for SeccompExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        for p in &self.programs {
            seccompiler::apply_filter(p).map_err(|e| {
                ExecutorError::Execution(format!("installing the seccomp policy: {e}").into())
            })?;
        }
        if self.init {
            run_init(spec);
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// The annotation that asks for an init process (`linuxParameters.initProcessEnabled`).
pub const INIT_ANNOTATION: &str = "berth.init";

extern "C" fn forward_marker(_: nix::libc::c_int) {}

/// Become the container's init, as `docker run --init` (tini) does, without needing any file
/// in the image: this process — already loaded, already inside the container — forks; the
/// child execs the workload in its own process group; the parent forwards the signals a
/// container receives (TERM, INT, HUP, QUIT, USR1, USR2, WINCH) to that group, reaps every
/// orphan, and exits with the workload's status. Returns only in the child.
pub fn run_init(spec: &Spec) {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let forwarded = [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ];
    let mut set = SigSet::empty();
    for s in forwarded {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    // Block first, so that nothing arrives between fork and the wait loop.
    let _ = set.thread_block();
    // SAFETY: the container init process is single-threaded (libcontainer's init runs in a
    // freshly forked process), so forking here is sound.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let _ =
                nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
            let _ = set.thread_unblock();
            // Back to the caller, which execs the workload.
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let _ = spec;
            // PID 1 only receives signals it handles: install a handler for each forwarded one.
            let act = SigAction::new(
                SigHandler::Handler(forward_marker),
                SaFlags::empty(),
                SigSet::empty(),
            );
            for s in forwarded {
                // SAFETY: installing a handler that does nothing (signals are taken with
                // sigwait below, the handler never actually runs while they are blocked).
                let _ = unsafe { sigaction(s, &act) };
            }
            let mut code = 0;
            loop {
                let Ok(sig) = set.wait() else { continue };
                if sig != Signal::SIGCHLD {
                    let _ = nix::sys::signal::killpg(child, sig);
                    continue;
                }
                loop {
                    match nix::sys::wait::waitpid(
                        nix::unistd::Pid::from_raw(-1),
                        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                    ) {
                        Ok(nix::sys::wait::WaitStatus::Exited(p, c)) => {
                            if p == child {
                                code = c;
                                std::process::exit(code);
                            }
                        }
                        Ok(nix::sys::wait::WaitStatus::Signaled(p, s, _)) => {
                            if p == child {
                                code = 128 + s as i32;
                                std::process::exit(code);
                            }
                        }
                        Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                let _ = code;
            }
        }
        Err(_) => {
            let _ = set.thread_unblock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles() {
        let p = default_programs().unwrap();
        assert_eq!(p.len(), if cfg!(target_arch = "x86_64") { 3 } else { 2 });
        assert!(!p[0].is_empty());
        assert!(denied().contains(&libc::SYS_unshare));
        assert!(!denied().contains(&libc::SYS_read));
    }

    /// Installed in a child process: unshare(CLONE_NEWUSER) and keyctl are refused with EPERM,
    /// clone3 with ENOSYS, an x32 ABI call with EPERM (a kernel without the filter answers
    /// ENOSYS when x32 is off, or runs it), ordinary calls work.
    #[test]
    fn refuses_what_it_should_in_a_child() {
        let progs = default_programs().unwrap();
        // SAFETY: the child only makes raw syscalls and exits; it touches no locks or
        // allocator state shared with the parent's other threads.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: plain syscalls with integer arguments.
                let code = unsafe {
                    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                    let mut ok = true;
                    for p in &progs {
                        ok &= seccompiler::apply_filter(p).is_ok();
                    }
                    let r1 = libc::unshare(libc::CLONE_NEWUSER);
                    let e1 = *libc::__errno_location();
                    let r2 = libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0);
                    let e2 = *libc::__errno_location();
                    let r3 = libc::syscall(libc::SYS_clone3, 0, 0);
                    let e3 = *libc::__errno_location();
                    let pid = libc::getpid();
                    ok &= r1 == -1 && e1 == libc::EPERM;
                    ok &= r2 == -1 && e2 == libc::EPERM;
                    ok &= r3 == -1 && e3 == libc::ENOSYS;
                    if cfg!(target_arch = "x86_64") {
                        // x32 getpid: the x86_64 number with __X32_SYSCALL_BIT.
                        let r4 = libc::syscall(0x4000_0000 | libc::SYS_getpid);
                        let e4 = *libc::__errno_location();
                        ok &= r4 == -1 && e4 == libc::EPERM;
                    }
                    ok &= pid > 0;
                    if ok { 0 } else { 1 }
                };
                // SAFETY: leaving the forked child without running the parent's destructors.
                unsafe { libc::_exit(code) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
