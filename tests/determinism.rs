//! Determinism of training (issue 18, `patcher::determinism`).
//!
//! 1. Core count: the same seeded run on rayon pools of 1, 2 and 3 threads gives the same
//!    weights to the bit, with the backend's reductions and with `--deterministic`.
//! 2. Processor: the built binary runs the same seeded run natively and under
//!    `qemu-x86_64 -cpu Haswell` (an AVX2 processor without AVX-512: every kernel that
//!    dispatches on the CPU's features takes its AVX2 path). With the backend's reductions the
//!    weights differ (this shows the emulated processor really changes the kernels); with
//!    `--deterministic` they are identical. Needs `qemu-user` (installed by `.ci/run`; without
//!    it the check is skipped with a message, and fails when `CI` is set). In a build with the
//!    `avx512` feature on an AVX-512 processor the matrix kernels themselves differ and the
//!    check asserts the opposite (a difference), so the docs stay true.
//!
//! Bit equality is the claim here, so the weight difference asserted is exactly zero.

use std::path::Path;
use std::process::Command;

use burn::prelude::*;
use patcher::determinism::{fingerprint, max_abs_diff, with_threads};

fn tiny_shape() -> (patcher::model::LlamaConfig, usize, usize) {
    patcher::bench::shape("tiny").unwrap()
}

#[test]
fn training_does_not_depend_on_the_number_of_threads() {
    let (cfg, b, t) = tiny_shape();
    let dev = Device::flex();
    for fixed in [false, true] {
        patcher::model::fixed::set_fixed_order(fixed);
        let runs: Vec<_> =
            [1, 2, 3].iter().map(|&n| with_threads(n, || fingerprint(&cfg, b, t, 12, 5, &dev)).unwrap()).collect();
        patcher::model::fixed::set_fixed_order(false);
        for (n, (m, fp)) in [2, 3].iter().zip(&runs[1..]) {
            let d = max_abs_diff(&runs[0].0, m);
            println!(
                "fixed-order {fixed}: 1 vs {n} threads: max |Δ weight| {d:.3e}, hashes {} / {}",
                runs[0].1.hash_final, fp.hash_final
            );
            assert_eq!(d, 0.0, "fixed-order {fixed}: {n} threads changed the weights");
            assert_eq!(runs[0].1.losses, fp.losses);
        }
    }
}

fn qemu() -> Option<&'static str> {
    let ok = Command::new("qemu-x86_64").arg("--version").output().is_ok_and(|o| o.status.success());
    ok.then_some("qemu-x86_64")
}

/// Run the probe (optionally under qemu as a Haswell), saving to or comparing with `dir`.
fn probe(qemu: Option<&str>, deterministic: bool, save: Option<&Path>, compare: Option<&Path>) -> String {
    let bin = env!("CARGO_BIN_EXE_patcher");
    let mut cmd = match qemu {
        Some(q) => {
            let mut c = Command::new(q);
            c.args(["-cpu", "Haswell", bin]);
            c
        }
        None => Command::new(bin),
    };
    if deterministic {
        cmd.arg("--deterministic");
    }
    cmd.args(["determinism", "--shape", "tiny", "--steps", "4", "--seed", "3"]);
    if let Some(d) = save {
        cmd.arg("--save").arg(d);
    }
    if let Some(d) = compare {
        cmd.arg("--compare").arg(d);
    }
    let out = cmd.output().expect("run the patcher binary");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{cmd:?} failed: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    text
}

fn max_delta(report: &str) -> f64 {
    let line = report.lines().find(|l| l.starts_with("max |Δ weight|")).expect("a comparison line");
    line.rsplit(": ").next().unwrap().trim().parse().expect("a number")
}

#[test]
fn deterministic_mode_gives_the_same_weights_on_an_avx2_processor() {
    if !cfg!(target_arch = "x86_64") {
        println!("skipped: the processor check emulates x86-64 processors");
        return;
    }
    let Some(q) = patcher::testing::require(qemu(), "qemu-x86_64", ".ci/run installs it: apt-get install qemu-user")
    else {
        return;
    };
    let root = std::env::temp_dir().join(format!("patcher-determinism-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for deterministic in [false, true] {
        let dir = root.join(if deterministic { "fixed" } else { "backend" });
        let native = probe(None, deterministic, Some(&dir), None);
        let emulated = probe(Some(q), deterministic, None, Some(&dir));
        let simd = |r: &str| r.lines().next().unwrap_or("").to_string();
        println!("native:   {}\nemulated: {}", simd(&native), simd(&emulated));
        assert!(simd(&emulated).contains("simd avx2"), "qemu did not present an AVX2 processor: {emulated}");
        let d = max_delta(&emulated);
        println!("deterministic {deterministic}: max |Δ weight| native vs Haswell after 4 steps: {d:.3e}");
        if deterministic && native.contains("matmul avx512") {
            // A build with the `avx512` feature on an AVX-512 processor: its matrix kernels
            // block and sum differently from the AVX2 ones, which `--deterministic` does not
            // remove (measured 2.9e-5 on the tiny shape, docs/results.md section 19). CI builds
            // without the feature, where the assertion below holds.
            println!("(this build runs the AVX-512 matrix kernels: no equality promised)");
            assert!(d > 0.0, "AVX-512 and AVX2 matrix kernels gave identical weights: update the docs");
        } else if deterministic {
            assert_eq!(d, 0.0, "--deterministic differs between this processor and an AVX2 one");
        } else if simd(&native).contains("simd avx2") {
            println!("(this processor is itself AVX2: no difference expected from the backend either)");
        } else {
            assert!(d > 0.0, "the backend's reductions gave identical weights: the emulation changed nothing");
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
