//! Usage errors of the real binary, the way kubectl and conntrack users read them (issue 12):
//! one line on stderr naming the flag, the value and what would be valid, exit 64 (EX_USAGE).

use std::process::Command;

fn ctreap(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ctreap"))
        .args(args)
        .output()
        .expect("running ctreap");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn usage_error(args: &[&str]) -> String {
    let (code, out, err) = ctreap(args);
    assert_eq!(code, Some(64), "ctreap {args:?}: {err}");
    assert!(out.is_empty(), "ctreap {args:?} printed to stdout: {out}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn an_invalid_output_format_lists_the_valid_ones() {
    let err = usage_error(&["stale", "-o", "yaml"]);
    assert!(
        err.contains("invalid value 'yaml'") && err.contains("possible values: table, json"),
        "{err}"
    );
}

#[test]
fn a_negative_duration_is_named_as_such() {
    for args in [&["run", "--grace", "-1s"][..], &["run", "--grace=-1s"][..]] {
        let err = usage_error(args);
        assert!(
            err.contains("'--grace <GRACE>'") && err.contains("cannot be negative"),
            "{err}"
        );
    }
}

#[test]
fn a_misspelt_flag_gets_the_suggestion() {
    let err = usage_error(&["conntrack", "list", "--dprot", "53"]);
    assert!(err.contains("'--dport'"), "{err}");
}

#[test]
fn every_filter_flag_has_help_and_the_port_aliases_show() {
    let (code, out, _) = ctreap(&["conntrack", "list", "--help"]);
    assert_eq!(code, Some(0));
    let flags: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("--") || l.trim_start().starts_with('-'))
        .collect();
    assert!(!flags.is_empty());
    // clap prints a flag's help on the next line; an empty one means no help text.
    let lines: Vec<&str> = out.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        if t.starts_with("--orig-port") || t.starts_with("--reply-port") {
            let help = lines.get(i + 1).map_or("", |h| h.trim());
            assert!(!help.is_empty(), "{t} has no help text:\n{out}");
        }
    }
    assert!(
        out.contains("[alias: --sport]") && out.contains("[alias: --dport]"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// Reaching the cluster, the way kubectl does.

/// A port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn kubeconfig_to(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let p = dir.join("config");
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             users:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
             current-context: x\n"
        ),
    )
    .expect("write kubeconfig");
    p
}

/// The command's one error line, and how long it took.
fn fails_with(args: &[&str], env: &[(&str, &str)]) -> (String, std::time::Duration) {
    let t = std::time::Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ctreap"));
    cmd.args(args).env_remove("KUBECONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running ctreap");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    (err, t.elapsed())
}

/// `ctreap CMD --kubeconfig KC --node-name n`, which must fail in one line.
fn fails_reading(cmd: &str, kc: &std::path::Path) -> (String, std::time::Duration) {
    fails_with(
        &[
            cmd,
            "--kubeconfig",
            kc.to_str().expect("path"),
            "--node-name",
            "n",
        ],
        &[],
    )
}

#[test]
fn an_unreachable_api_server_fails_fast_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = closed_port();
    let kc = kubeconfig_to(dir.path(), port);
    for cmd in ["stale", "watch"] {
        let (err, took) = fails_reading(cmd, &kc);
        assert!(
            err.contains(&format!(
                "cannot reach the API server at http://127.0.0.1:{port}/"
            )) && err.contains("Connection refused"),
            "{err}"
        );
        // kubectl gives up within seconds; before, this took --sync-timeout (30 s) and
        // printed about 130 lines.
        assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    }
}

/// A server on 127.0.0.1 that answers every request with `status` and `body` (of
/// `content_type`), as a web server or a proxy in front of the wrong address does.
fn answering(status: &'static str, content_type: &'static str, body: &'static str) -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            // Read the request head (kube's requests have no body).
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                c,
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// `python3 -m http.server`'s answer to a path it does not have.
const HTML_404: &str = "<!DOCTYPE HTML>\n<html lang=\"en\">\n    <head>\n        <meta charset=\"utf-8\">\n        <title>Error response</title>\n    </head>\n    <body>\n        <h1>Error response</h1>\n        <p>Error code: 404</p>\n        <p>Message: File not found.</p>\n    </body>\n</html>\n";

#[test]
fn a_server_that_answers_with_an_error_is_named_with_its_status_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        // A plain web server (not an API server): its HTML page is not repeated.
        (
            answering("404 File not found", "text/html", HTML_404),
            "answered GET /version with 404 Not Found: not a Kubernetes API server: check the kubeconfig's server URL",
        ),
        // An API server's own 404 (a wrong path prefix in the URL): its message is quoted.
        (
            answering(
                "404 Not Found",
                "application/json",
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}"#,
            ),
            "answered GET /version with 404 Not Found (the server could not find the requested resource): the API server lacks this resource or the URL has a wrong path prefix",
        ),
        (
            answering(
                "403 Forbidden",
                "application/json",
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"forbidden: User \"system:anonymous\" cannot get path \"/version\"","reason":"Forbidden","details":{},"code":403}"#,
            ),
            "answered GET /version with 403 Forbidden (forbidden: User \"system:anonymous\" cannot get path \"/version\"): the credentials are not allowed this request",
        ),
    ];
    for (i, (port, want)) in cases.into_iter().enumerate() {
        let sub = dir.path().join(i.to_string());
        std::fs::create_dir(&sub).expect("mkdir");
        let kc = kubeconfig_to(&sub, port);
        let (err, took) = fails_reading("stale", &kc);
        assert!(
            err.contains(&format!("the server at http://127.0.0.1:{port}/ {want}")),
            "want {want:?}:\n{err}"
        );
        for noise in ["<html", "Failed to parse", "cannot reach"] {
            assert!(!err.contains(noise), "{noise:?} in {err}");
        }
        assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    }
}

#[test]
fn kubeconfig_errors_say_the_cause_once_with_the_fix() {
    let (err, _) = fails_with(&["stale", "--kubeconfig", "/nonexistent/kubeconfig"], &[]);
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "the cause once: {err}"
    );
    assert!(
        err.contains("kubeconfig /nonexistent/kubeconfig") && err.contains("--kubeconfig"),
        "{err}"
    );
    assert!(!err.contains("'\""), "quoted twice: {err}");
}

#[test]
fn kubeconfig_is_a_list_that_skips_missing_files_as_kubectl_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = closed_port();
    let kc = kubeconfig_to(dir.path(), port);
    let list = format!("/nonexistent/a:{}", kc.display());
    // The second file is read (its server is named), the missing first one skipped.
    let (err, _) = fails_with(&["stale", "--node-name", "n"], &[("KUBECONFIG", &list)]);
    assert!(err.contains(&format!("http://127.0.0.1:{port}/")), "{err}");
    let (err, _) = fails_with(
        &["stale"],
        &[("KUBECONFIG", "/nonexistent/a:/nonexistent/b")],
    );
    assert!(
        err.contains("none of the files in $KUBECONFIG exists"),
        "{err}"
    );
}

#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = kubeconfig_to(dir.path(), closed_port());
    let out = Command::new(env!("CARGO_BIN_EXE_ctreap"))
        .args([
            "stale",
            "--kubeconfig",
            kc.to_str().expect("path"),
            "--node-name",
            "n",
        ])
        .env("CTREAP_LOG", "debug")
        .output()
        .expect("running ctreap");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().count() > 1, "debug logs expected: {err}");
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe: {err:?}");
}

// ---------------------------------------------------------------------------------------------
// Shell completions and the man page, generated from the clap definitions.

#[test]
fn bash_completion_completes_subcommands_and_flags() {
    let (code, script, err) = ctreap(&["completion", "bash"]);
    assert_eq!(code, Some(0), "{err}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ctreap.bash");
    std::fs::write(&path, &script).expect("write");
    // What bash offers after `ctreap st<TAB>` and `ctreap stale --out<TAB>`.
    let complete = |words: &str, cword: usize| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{words}'; \
                 _ctreap ctreap \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; \
                 echo \"${{COMPREPLY[@]}}\"",
                path.display()
            ))
            .output()
            .expect("bash");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(complete("ctreap st", 1), "stale");
    assert_eq!(complete("ctreap stale --outp", 2), "--output");
}

#[test]
fn zsh_and_fish_completions_name_the_subcommands() {
    for shell in ["zsh", "fish"] {
        let (code, script, err) = ctreap(&["completion", shell]);
        assert_eq!(code, Some(0), "{shell}: {err}");
        for sub in ["stale", "watch", "doctor", "run", "conntrack"] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let err = usage_error(&["completion", "tcsh"]);
    assert!(err.contains("possible values: bash"), "{err}");
}

#[test]
fn the_man_page_is_roff_listing_the_commands() {
    let (code, page, err) = ctreap(&["man"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(page.contains(".TH ctreap 1"), "{page}");
    for sub in ["stale", "watch", "doctor", "run", "conntrack", "completion"] {
        assert!(page.contains(sub), "the man page lacks {sub}");
    }
}

#[test]
fn all_namespaces_is_spelt_as_kubectl_spells_it_and_conflicts_with_n() {
    for cmd in ["stale", "watch"] {
        let (code, out, _) = ctreap(&[cmd, "--help"]);
        assert_eq!(code, Some(0));
        assert!(out.contains("-A, --all-namespaces"), "{cmd}: {out}");
        let err = usage_error(&[cmd, "-A", "-n", "kube-system"]);
        assert!(err.contains("cannot be used with"), "{err}");
    }
}
