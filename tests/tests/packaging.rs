//! The shipped artefacts, as users get them (issue 7): the layer zips of `packaging/build-layer.sh`
//! and the OCI image of `packaging/build-image.sh`.
//!
//! These need release cross builds (musl, x86_64 and arm64), so this target is behind the
//! `packaging` feature: `scripts/checks.d/packaging.sh` builds the artefacts and then runs
//! `cargo test -p lambdawatch-tests --features packaging --test packaging`. A missing artefact or
//! peer (skopeo, umoci, qemu-aarch64-static, chroot) panics with what to run; nothing is skipped.
//!
//! - [`layer_zips_have_the_lambda_layout`]: each zip holds exactly `extensions/lambdawatch`,
//!   executable, a static ELF for its architecture, and is ≤ 2 MB.
//! - [`collector_image_unpacks_and_its_entrypoint_serves`]: `skopeo` turns the OCI archive into a
//!   layout, `umoci` unpacks it into a runtime bundle; the bundle's own `process.args`, env and user
//!   are run chrooted into the unpacked rootfs (so the image must be self-contained): `--help`,
//!   then `serve` on loopback ports until `/healthz` and `/readyz` answer, the bundled
//!   `lambdawatch-healthcheck` probe passes, OTLP/HTTP refuses a missing token and takes a valid
//!   one, and SIGTERM stops it cleanly; the probe then fails.
//! - [`arm64_extension_runs_under_qemu_in_the_sandbox`]: the arm64 extension from the arm64 zip,
//!   started by the sandbox through a wrapper that execs `qemu-aarch64-static`, registers, and
//!   every invocation of a workload reaches a capturing OTLP endpoint as an invocation span whose
//!   resource says `aws.lambda.architecture=arm64`.

// Tests report failure by panicking with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lambdawatch_semconv::{attr, span_type};
use lambdawatch_tests::{Child, free_port, http, peers, repo_root, wait_until, workspace_bin};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value as AnyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;

/// Layer budget per zip (issue 7).
const MAX_ZIP_BYTES: u64 = 2_000_000;
/// Image budget, archive and unpacked (issue 7).
const MAX_IMAGE_BYTES: u64 = 25_000_000;
/// The image's fixed user (packaging/build-image.sh, deploy/collector-fargate.yaml).
const IMAGE_UID: u64 = 65_532;

/// An artefact path: `$ENV` if set, else `default` under the repository; panics when missing.
fn artefact(env: &str, default: &str, how: &str) -> PathBuf {
    let p = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(default));
    assert!(
        p.is_file(),
        "artefact {} missing: run {how} (or set {env})",
        p.display()
    );
    p
}

fn layer_zip(arch: &str) -> PathBuf {
    artefact(
        &format!("LAMBDAWATCH_LAYER_ZIP_{}", arch.to_uppercase()),
        &format!("target/layer/lambdawatch-extension-{arch}.zip"),
        "packaging/build-layer.sh",
    )
}

fn run_ok(what: &str, cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// ELF64 little-endian facts: (e_machine, has a PT_INTERP program header). A static binary, static-pie
/// included, asks for no program interpreter, which is what lets it run with no libc around it.
fn elf_facts(path: &Path) -> (u16, bool) {
    let b = std::fs::read(path).unwrap();
    assert!(
        b.len() > 64 && &b[..4] == b"\x7fELF",
        "{} is not ELF",
        path.display()
    );
    assert_eq!(b[4], 2, "{} is not ELF64", path.display());
    assert_eq!(b[5], 1, "{} is not little-endian", path.display());
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let machine = u16_at(18);
    let phoff = u64_at(32) as usize;
    let phentsize = u16_at(54) as usize;
    let phnum = u16_at(56) as usize;
    const PT_INTERP: u32 = 3;
    let interp = (0..phnum).any(|i| u32_at(phoff + i * phentsize) == PT_INTERP);
    (machine, interp)
}

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

fn assert_static_for(path: &Path, machine: u16) {
    let (m, interp) = elf_facts(path);
    assert_eq!(
        m,
        machine,
        "{}: ELF machine {m}, want {machine}",
        path.display()
    );
    assert!(
        !interp,
        "{}: has a program interpreter (dynamically linked)",
        path.display()
    );
}

/// Lists a zip with Python's zipfile: (name, unix mode, uncompressed size).
fn zip_entries(zip: &Path) -> Vec<(String, u32, u64)> {
    let py = peers::bin("python3");
    let out = run_ok(
        "list zip",
        Command::new(py).arg("-c").arg(
            "import json, sys, zipfile\n\
             z = zipfile.ZipFile(sys.argv[1])\n\
             print(json.dumps([[i.filename, i.external_attr >> 16, i.file_size] for i in z.infolist()]))",
        ).arg(zip),
    );
    let v: Vec<(String, u32, u64)> = serde_json::from_str(out.trim()).unwrap();
    v
}

/// Extracts `member` of `zip` to `dest` (mode 0755).
fn zip_extract(zip: &Path, member: &str, dest: &Path) {
    let py = peers::bin("python3");
    run_ok(
        "extract from zip",
        Command::new(py)
            .arg("-c")
            .arg(
                "import os, shutil, sys, zipfile\n\
                 with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n\
                 \x20   shutil.copyfileobj(src, dst)\n\
                 os.chmod(sys.argv[3], 0o755)",
            )
            .arg(zip)
            .arg(member)
            .arg(dest),
    );
}

#[test]
fn layer_zips_have_the_lambda_layout() {
    let tmp = tempfile::tempdir().unwrap();
    for (arch, machine) in [("x86_64", EM_X86_64), ("arm64", EM_AARCH64)] {
        let zip = layer_zip(arch);
        let size = std::fs::metadata(&zip).unwrap().len();
        eprintln!("{}: {size} bytes", zip.display());
        assert!(
            size <= MAX_ZIP_BYTES,
            "{}: {size} bytes > {MAX_ZIP_BYTES}",
            zip.display()
        );
        let entries = zip_entries(&zip);
        let names: Vec<&str> = entries.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["extensions/", "extensions/lambdawatch"],
            "{}: Lambda unpacks a layer into /opt and starts /opt/extensions/*",
            zip.display()
        );
        let (_, mode, _) = &entries[1];
        assert_eq!(
            mode & 0o777,
            0o755,
            "extensions/lambdawatch must be executable"
        );
        assert_eq!(
            mode & 0o170000,
            0o100000,
            "extensions/lambdawatch must be a regular file"
        );
        let bin = tmp.path().join(format!("lambdawatch-{arch}"));
        zip_extract(&zip, "extensions/lambdawatch", &bin);
        assert_static_for(&bin, machine);
    }
}

/// The bundle that `umoci unpack` made of the image: its rootfs and runtime config.
struct Bundle {
    _dir: tempfile::TempDir,
    rootfs: PathBuf,
    config: Value,
}

fn unpack_image(archive: &Path) -> Bundle {
    let skopeo = peers::bin("skopeo");
    let umoci = peers::bin("umoci");
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    run_ok(
        "skopeo copy oci-archive -> oci layout",
        Command::new(skopeo)
            .arg("copy")
            .arg("--quiet")
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("oci:{}:lambdawatch", layout.display())),
    );
    let bundle = dir.path().join("bundle");
    run_ok(
        "umoci unpack",
        Command::new(umoci)
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:lambdawatch", layout.display()))
            .arg(&bundle),
    );
    let config: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    Bundle {
        rootfs: bundle.join("rootfs"),
        config,
        _dir: dir,
    }
}

/// Every regular file under `root`, relative, with its size.
fn files_under(root: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                out.push((rel, meta.len()));
            }
        }
    }
    out.sort();
    out
}

/// A command that runs `argv` chrooted into `rootfs` as the image's user, with exactly `env`.
fn in_image(rootfs: &Path, uid: u64, gid: u64, env: &[(String, String)], argv: &[&str]) -> Command {
    let mut c = Command::new(peers::bin("chroot"));
    c.arg(format!("--userspec={uid}:{gid}"))
        .arg(rootfs)
        .args(argv)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    c
}

fn image_env(config: &Value, overrides: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = config["process"]["env"]
        .as_array()
        .expect("process.env")
        .iter()
        .filter_map(|e| e.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
        .collect();
    env.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

#[test]
fn collector_image_unpacks_and_its_entrypoint_serves() {
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "this test chroots into the unpacked image and unpacks it with umoci as root: run it as root \
         (scripts/checks.d/packaging.sh does)"
    );
    let archive = artefact(
        "LAMBDAWATCH_COLLECTOR_IMAGE",
        "target/image/lambdawatch-collector-x86_64.oci.tar",
        "packaging/build-image.sh",
    );
    let archive_size = std::fs::metadata(&archive).unwrap().len();
    assert!(
        archive_size <= MAX_IMAGE_BYTES,
        "image archive {archive_size} bytes > {MAX_IMAGE_BYTES}"
    );
    let b = unpack_image(&archive);

    // What the image is: one static collector, its probe, a CA bundle; nothing else.
    let files = files_under(&b.rootfs);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "etc/ssl/certs/ca-certificates.crt",
            "lambdawatch-collector",
            "lambdawatch-healthcheck"
        ],
        "unexpected rootfs content"
    );
    let unpacked: u64 = files.iter().map(|(_, s)| s).sum();
    eprintln!("image: archive {archive_size} bytes, unpacked rootfs {unpacked} bytes");
    assert!(
        unpacked <= MAX_IMAGE_BYTES,
        "unpacked image {unpacked} bytes > {MAX_IMAGE_BYTES}"
    );
    assert_static_for(&b.rootfs.join("lambdawatch-collector"), EM_X86_64);
    assert_static_for(&b.rootfs.join("lambdawatch-healthcheck"), EM_X86_64);

    let process = &b.config["process"];
    let args: Vec<&str> = process["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        ["/lambdawatch-collector", "serve"],
        "entrypoint + cmd"
    );
    let (uid, gid) = (
        process["user"]["uid"].as_u64().unwrap(),
        process["user"]["gid"].as_u64().unwrap(),
    );
    assert_eq!(
        (uid, gid),
        (IMAGE_UID, IMAGE_UID),
        "the image runs as a non-root user"
    );

    // `--help` from the entrypoint, inside the image.
    let help = run_ok(
        "collector --help in the image",
        &mut in_image(
            &b.rootfs,
            uid,
            gid,
            &image_env(&b.config, &[]),
            &[args[0], "--help"],
        ),
    );
    assert!(
        help.contains("serve"),
        "--help does not mention serve:\n{help}"
    );

    // `serve` (the image's own args and env), on loopback ports, with a token.
    let (grpc, otlp_http, admin) = (free_port(), free_port(), free_port());
    let token = "packaging-test-token";
    let env = image_env(
        &b.config,
        &[
            ("LAMBDAWATCH_OTLP_GRPC_ADDR", format!("127.0.0.1:{grpc}")),
            (
                "LAMBDAWATCH_OTLP_HTTP_ADDR",
                format!("127.0.0.1:{otlp_http}"),
            ),
            ("LAMBDAWATCH_ADMIN_ADDR", format!("127.0.0.1:{admin}")),
            ("LAMBDAWATCH_AUTH_TOKEN", token.to_string()),
        ],
    );
    let mut collector = Child::spawn(
        "image-collector",
        &mut in_image(&b.rootfs, uid, gid, &env, &args),
    );
    let base = format!("http://127.0.0.1:{admin}");
    for path in ["/healthz", "/readyz"] {
        wait_until(
            &format!("{path} = 200 from the image's collector"),
            Duration::from_secs(30),
            || {
                (http::get(&format!("{base}{path}"), Duration::from_secs(2))
                    .ok()?
                    .status
                    == 200)
                    .then_some(())
            },
        );
    }
    let metrics = http::get(&format!("{base}/metrics"), Duration::from_secs(5)).unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text().contains("lambdawatch_"),
        "no lambdawatch_ metrics"
    );

    // The bundled probe, as ECS runs it (same env, inside the image).
    let probe = in_image(&b.rootfs, uid, gid, &env, &["/lambdawatch-healthcheck"])
        .status()
        .unwrap();
    assert!(
        probe.success(),
        "lambdawatch-healthcheck failed against a ready collector: {probe}"
    );

    // OTLP/HTTP: an empty ExportTraceServiceRequest is zero protobuf bytes.
    let url = format!("http://127.0.0.1:{otlp_http}/v1/traces");
    let ct = ("content-type", "application/x-protobuf");
    let denied = http::request("POST", &url, &[ct], &[], Duration::from_secs(5)).unwrap();
    assert_eq!(
        denied.status,
        401,
        "no token must be refused: {}",
        denied.text()
    );
    let bearer = format!("Bearer {token}");
    let ok = http::request(
        "POST",
        &url,
        &[ct, ("authorization", bearer.as_str())],
        &[],
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(ok.status, 200, "valid token refused: {}", ok.text());

    // SIGTERM (what ECS sends): a clean exit well inside the 30 s stopTimeout.
    let started = Instant::now();
    let status = collector.terminate(Duration::from_secs(28));
    let took = started.elapsed();
    assert!(
        status.success(),
        "collector exited with {status} on SIGTERM"
    );
    assert!(
        took < Duration::from_secs(26),
        "SIGTERM to exit took {took:?}"
    );

    // And the probe now says unhealthy (exit 1), not hang.
    let probe = in_image(&b.rootfs, uid, gid, &env, &["/lambdawatch-healthcheck"])
        .status()
        .unwrap();
    assert_eq!(
        probe.code(),
        Some(1),
        "probe against a stopped collector: {probe}"
    );
}

/// A capturing OTLP/HTTP endpoint: HTTP/1.1 with keep-alive, `Content-Length` bodies, gzip or
/// not; answers 200 to everything and keeps the `/v1/traces` bodies (decompressed).
struct TraceCapture {
    addr: std::net::SocketAddr,
    traces: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl TraceCapture {
    fn start() -> TraceCapture {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let traces: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let keep = traces.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let keep = keep.clone();
                std::thread::spawn(move || {
                    let _ = Self::serve(conn, &keep);
                });
            }
        });
        TraceCapture { addr, traces }
    }

    fn serve(conn: TcpStream, keep: &Mutex<Vec<Vec<u8>>>) -> std::io::Result<()> {
        let mut out = conn.try_clone()?;
        let mut r = BufReader::new(conn);
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let (mut len, mut gzip) = (0usize, false);
            loop {
                let mut h = String::new();
                r.read_line(&mut h)?;
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap_or((h, ""));
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    "content-encoding" => gzip = v.trim().eq_ignore_ascii_case("gzip"),
                    _ => {}
                }
            }
            let mut body = vec![0u8; len];
            r.read_exact(&mut body)?;
            if gzip {
                let mut plain = Vec::new();
                flate2::read::GzDecoder::new(body.as_slice()).read_to_end(&mut plain)?;
                body = plain;
            }
            if path == "/v1/traces" {
                keep.lock().unwrap().push(body);
            }
            out.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
            )?;
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<(Resource, Span)> {
        let mut out = Vec::new();
        for body in self.traces.lock().unwrap().iter() {
            let req =
                ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP trace request");
            for rs in req.resource_spans {
                let res = rs.resource.clone().unwrap_or_default();
                for ss in rs.scope_spans {
                    out.extend(ss.spans.into_iter().map(|s| (res.clone(), s)));
                }
            }
        }
        out
    }
}

fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match &kv.value.as_ref()?.value {
            Some(AnyValue::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
}

#[test]
fn arm64_extension_runs_under_qemu_in_the_sandbox() {
    let qemu = peers::bin("qemu-aarch64-static");
    let sandbox = workspace_bin("lambdawatch-sandbox");
    let function_bin = workspace_bin("sample-function");
    let zip = layer_zip("arm64");
    let tmp = tempfile::tempdir().unwrap();

    // /opt as Lambda lays it out, but the arm64 binary lives outside extensions_dir: the host
    // cannot exec it directly, the wrapper runs it under user-mode emulation. It keeps its file
    // name: the extension registers under the name it was started as, and Lambda (and the
    // sandbox) require that to be the file name in extensions_dir.
    std::fs::create_dir(tmp.path().join("arm64")).unwrap();
    let arm64 = tmp.path().join("arm64/lambdawatch");
    zip_extract(&zip, "extensions/lambdawatch", &arm64);
    assert_static_for(&arm64, EM_AARCH64);
    let ext_dir = tmp.path().join("extensions");
    std::fs::create_dir(&ext_dir).unwrap();
    let wrapper = ext_dir.join("lambdawatch");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec '{}' '{}' \"$@\"\n",
            qemu.display(),
            arm64.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let capture = TraceCapture::start();
    let function = tmp.path().join("function.yaml");
    std::fs::write(
        &function,
        format!(
            "name: qemu-arm64\n\
             handler: ['{}']\n\
             extensions_dir: '{}'\n\
             timeout_ms: 10000\n\
             environment:\n  \
               OTEL_EXPORTER_OTLP_ENDPOINT: '{}'\n  \
               LAMBDAWATCH_FLUSH: end\n",
            function_bin.display(),
            ext_dir.display(),
            capture.base()
        ),
    )
    .unwrap();
    let workload = tmp.path().join("workload.yaml");
    std::fs::write(
        &workload,
        "seed: 7\nphases:\n  - name: steady\n    rate_per_sec: 4\n    duration_ms: 1500\n    log_lines: 1\n",
    )
    .unwrap();
    let report_path = tmp.path().join("report.json");
    let mut run = Child::spawn(
        "sandbox",
        Command::new(&sandbox)
            .arg("run")
            .arg("--function")
            .arg(&function)
            .arg("--workload")
            .arg(&workload)
            .arg("--invoke-addr")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--report")
            .arg(&report_path),
    );
    let status = run.wait_exit(Duration::from_secs(120));
    assert!(status.success(), "sandbox run failed: {status}");
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let inv = &report["invocations"];
    let succeeded = inv["success"].as_u64().unwrap();
    assert!(succeeded >= 3, "too few invocations to judge: {report:#}");
    assert_eq!(
        inv["error"].as_u64().unwrap_or(0)
            + inv["timeout"].as_u64().unwrap_or(0)
            + inv["failure"].as_u64().unwrap_or(0),
        0,
        "the emulated extension disturbed the function: {report:#}"
    );

    // It registered (or no INIT would have completed) and exported every invocation.
    let spans = capture.spans();
    let invocations: Vec<_> = spans
        .iter()
        .filter(|(_, s)| {
            str_attr(&s.attributes, attr::LAMBDAWATCH_SPAN_TYPE) == Some(span_type::INVOCATION)
        })
        .collect();
    let ids: BTreeSet<&str> = invocations
        .iter()
        .filter_map(|(_, s)| str_attr(&s.attributes, attr::FAAS_INVOCATION_ID))
        .collect();
    assert_eq!(
        ids.len() as u64,
        succeeded,
        "invocation spans at the capture vs invocations run (spans: {})",
        spans.len()
    );
    for (resource, _) in &invocations {
        assert_eq!(
            str_attr(&resource.attributes, attr::FAAS_NAME),
            Some("qemu-arm64")
        );
        assert_eq!(
            str_attr(&resource.attributes, attr::AWS_LAMBDA_ARCHITECTURE),
            Some("arm64"),
            "the data did not come from the arm64 build"
        );
    }
}
