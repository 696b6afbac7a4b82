//! The `config_jsonc` target: the service's JSONC configuration loader (`cnet run --config`).

use cnet_apps::config::Config;
use std::path::Path;

/// Parses `data` (when UTF-8) as a `cnet run` configuration file. Never panics; an error names
/// the file (and, through it, its position); a valid configuration translates into driver and
/// stack settings for every port without panicking either.
pub fn config_jsonc(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(Path::new("fuzz.jsonc"), text) {
        Ok(cfg) => {
            assert!(!cfg.ports.is_empty(), "a valid configuration has a port");
            for name in cfg.ports.keys() {
                assert!(cfg.xdp_config(name).is_some(), "port {name} translates");
                let _ = cfg.netlink(name);
            }
            let mut sc = cnet_stack::StackConfig::new(cnet_stack::MacAddr([2, 0, 0, 0, 0, 1]));
            cfg.stack.apply(&mut sc);
            let _ = cfg.runtime.limits();
        }
        Err(e) => {
            let m = e.to_string();
            assert!(m.starts_with("fuzz.jsonc"), "the error names the file: {m}");
        }
    }
}
