//! The afl++ driver: `berth-fuzz-afl <target>` runs one target of [`berth_fuzz::TARGETS`]
//! under afl's persistent mode. Built only by `bench/fuzz.sh` (`cargo afl build --features
//! afl`); the replay test runs the same functions without it.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = berth_fuzz::target(&name) else {
        let names: Vec<&str> = berth_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: berth-fuzz-afl <{}>", names.join("|"));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| target(data));
}
