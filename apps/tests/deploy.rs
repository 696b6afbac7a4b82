//! deploy/: the Kubernetes manifests parse (PyYAML, skipped with a message when absent), every
//! embedded cnet.jsonc passes `cnet check-config`'s logic (`Config::load`), the embedded copies
//! match the files they come from, and the device plugin's pool config obeys its rules.

use cnet_apps::config::{Config, XskMap};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every document of a YAML file as JSON, through python3 + PyYAML; `None` if unavailable.
fn yaml_docs(file: &Path) -> Option<Vec<Value>> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(file)
        .output()
        .ok()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("No module named"),
            "{} does not parse: {err}",
            file.display()
        );
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("python printed JSON"))
}

fn load_jsonc(text: &str, tag: &str) -> Config {
    let f = std::env::temp_dir().join(format!("cnet-deploy-{}-{tag}.jsonc", std::process::id()));
    std::fs::write(&f, text).unwrap();
    let c = Config::load(&f).unwrap_or_else(|e| panic!("{tag}: embedded cnet.jsonc: {e:#}"));
    let _ = std::fs::remove_file(&f);
    c
}

fn check_dp_config(v: &Value) -> Vec<String> {
    let mut names = Vec::new();
    for p in v["pools"].as_array().expect("pools") {
        let name = p["name"].as_str().expect("pool name");
        assert!(
            !name.is_empty() && name.len() <= 20 && name.bytes().all(|b| b.is_ascii_alphanumeric()),
            "pool name {name:?}: alphanumeric, 1..=20"
        );
        if let Some(t) = p.get("udsTimeout").and_then(Value::as_i64) {
            assert!(matches!(t, -1 | 0 | 30..=300), "udsTimeout {t}");
        }
        if let Some(u) = p.get("uid").and_then(Value::as_i64) {
            assert!((1000..=256000).contains(&u), "uid {u}");
        }
        names.push(name.to_string());
    }
    names
}

#[test]
fn device_plugin_config_follows_the_plugins_rules() {
    let text = std::fs::read_to_string(deploy().join("k8s/device-plugin-config.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(check_dp_config(&v), ["cnetuds", "cnetpin"]);
    assert_eq!(v["pools"][1]["BpfMapPinningEnable"], true);
}

#[test]
fn pod_config_uses_the_device_plugin_and_is_valid() {
    let text = std::fs::read_to_string(deploy().join("k8s/cnet-pod.jsonc")).unwrap();
    let c = load_jsonc(&text, "pod");
    assert_eq!(c.ports["p0"].xskmap, XskMap::Uds(None));
}

#[test]
fn manifests_parse_and_embed_valid_configs() {
    let Some(docs) = yaml_docs(&deploy().join("k8s/cnet.yaml")) else {
        eprintln!(
            "SKIP manifests_parse_and_embed_valid_configs: python3 with PyYAML not available"
        );
        return;
    };
    fn of_kind<'a>(docs: &'a [Value], k: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        docs.iter().filter(move |d| d["kind"] == k)
    }
    let kind = |k: &'static str| of_kind(&docs, k);
    // The embedded copies are the files.
    let pod_jsonc = std::fs::read_to_string(deploy().join("k8s/cnet-pod.jsonc")).unwrap();
    let cm = kind("ConfigMap")
        .find(|d| d["metadata"]["name"] == "cnet-config")
        .expect("cnet-config ConfigMap");
    let embedded = cm["data"]["cnet.jsonc"].as_str().unwrap();
    assert_eq!(embedded, pod_jsonc);
    load_jsonc(embedded, "configmap");
    let dp = kind("ConfigMap")
        .find(|d| d["metadata"]["name"] == "afxdp-dp-config")
        .expect("device plugin ConfigMap");
    let dp: Value = serde_json::from_str(dp["data"]["config.json"].as_str().unwrap()).unwrap();
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("k8s/device-plugin-config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(dp, file);
    let pools = check_dp_config(&dp);
    // Every NAD is an afxdp netconf for a pool that exists; the pinning one has dpSyncer.
    let mut nads = 0;
    for nad in kind("NetworkAttachmentDefinition") {
        nads += 1;
        let conf: Value = serde_json::from_str(nad["spec"]["config"].as_str().unwrap()).unwrap();
        assert_eq!(conf["type"], "afxdp");
        let res = nad["metadata"]["annotations"]["k8s.v1.cni.cncf.io/resourceName"]
            .as_str()
            .unwrap();
        let pool = res.strip_prefix("afxdp/").expect("afxdp/ resource");
        assert!(pools.iter().any(|p| p == pool), "{res}: no such pool");
        if pool == "cnetpin" {
            assert_eq!(conf["dpSyncer"], true, "pinning needs dpSyncer");
        }
    }
    assert_eq!(nads, 2);
    // The Deployment asks for a pool's device, names its network, runs unprivileged.
    let dep = kind("Deployment").next().expect("Deployment");
    let tmpl = &dep["spec"]["template"];
    assert_eq!(
        tmpl["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"],
        "afxdp-cnetuds"
    );
    let c = &tmpl["spec"]["containers"][0];
    assert_eq!(c["resources"]["limits"]["afxdp/cnetuds"], "1");
    assert_eq!(
        c["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(
        c["securityContext"]["capabilities"]["add"],
        serde_json::json!(["NET_RAW", "IPC_LOCK"])
    );
    assert_eq!(tmpl["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let name = dep["metadata"]["name"].as_str().unwrap();
    // Deployment pod names add "-<hash>-<5>" (~17 characters): stay well under 55.
    assert!(name.len() + 17 <= cnet_apps::deviceplugin::MAX_HOSTNAME);
}

#[test]
fn bpfman_manifest_parses_and_its_config_uses_the_csi_mount() {
    let Some(docs) = yaml_docs(&deploy().join("k8s/bpfman.yaml")) else {
        eprintln!("SKIP bpfman_manifest: python3 with PyYAML not available");
        return;
    };
    let app = docs
        .iter()
        .find(|d| d["kind"] == "ClusterBpfApplication")
        .unwrap();
    assert_eq!(app["apiVersion"], "bpfman.io/v1alpha1");
    assert_eq!(app["spec"]["programs"][0]["type"], "XDP");
    let pod = docs.iter().find(|d| d["kind"] == "Pod").unwrap();
    let vol = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v.get("csi").is_some())
        .unwrap();
    assert_eq!(vol["csi"]["driver"], "csi.bpfman.io");
    assert_eq!(
        vol["csi"]["volumeAttributes"]["csi.bpfman.io/program"],
        app["metadata"]["name"]
    );
    let mount = pod["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == vol["name"])
        .unwrap();
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let c = load_jsonc(cm["data"]["cnet.jsonc"].as_str().unwrap(), "bpfman");
    assert_eq!(
        c.ports["p0"].xskmap,
        XskMap::Pinned(Some(mount["mountPath"].as_str().unwrap().into()))
    );
}

#[test]
fn dockerfile_runs_as_non_root() {
    let d = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    let user = d
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER line");
    assert_ne!(user.trim(), "0");
    assert_ne!(user.trim(), "root");
    assert!(d.matches("FROM ").count() >= 2, "multi-stage");
}
