//! Every config file the repository ships is loaded (and validated) by this test.

use std::path::Path;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn every_shipped_config_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut n = 0;
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().and_then(|x| x.to_str()) != Some("toml") {
                continue;
            }
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let text = read(&p);
            let what = p.display().to_string();
            if p.parent().unwrap().ends_with("attacks") || name.starts_with("attack-") {
                patcher::attack::from_file(&p).unwrap_or_else(|e| panic!("{what}: {e}"));
            } else if name.starts_with("align-") {
                toml::from_str::<patcher::align::AlignConfig>(&text).unwrap_or_else(|e| panic!("{what}: {e}"));
            } else if name.starts_with("patcher-") {
                let c: patcher::defense::patcher::PatcherConfig =
                    toml::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}"));
                c.validate().unwrap();
            } else if name.starts_with("tiny-") {
                toml::from_str::<patcher::tiny::TinyConfig>(&text).unwrap_or_else(|e| panic!("{what}: {e}"));
            } else {
                patcher::experiment::ExperimentConfig::from_toml(&text, &what)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
            }
            n += 1;
        }
    }
    println!("{n} config files loaded");
    assert!(n >= 10, "expected the shipped configs, found {n}");
}
