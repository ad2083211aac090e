//! Kafka TLS and SASL as `check-config` sees them. librdkafka's mock cluster
//! speaks neither TLS nor SASL (it has no SaslHandshake/SaslAuthenticate
//! handlers and plain sockets only), so these settings are proven as far as
//! librdkafka builds its clients from them: generated CA, client certificate
//! and key files are loaded, each SASL mechanism is accepted, missing files
//! and unknown mechanisms are named with exit code 2, and secrets read through
//! `_file` never reach the output.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const PASSWORD: &str = "sasl-pw-7e2d41b9";
const CLIENT_SECRET: &str = "oidc-secret-5a90c3f1";

/// PEM files an operator would mount: a CA, a client certificate it signed,
/// the client key, and a key that belongs to nothing.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn generate() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "kafka test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "pos-profile-sync");
        let key = KeyPair::generate().unwrap();
        let cert = client.signed_by(&key, &ca).unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", ca.pem());
        write("client.pem", cert.pem());
        write("client.key", key.serialize_pem());
        write("other.key", KeyPair::generate().unwrap().serialize_pem());
        write("password", format!("{PASSWORD}\n"));
        write("client-secret", CLIENT_SECRET.into());
        write(
            "oauthbearer-config",
            format!("principal=pos-profile-sync extension_traceId={CLIENT_SECRET}"),
        );
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

struct Checked {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `check-config` on a configuration whose `[kafka.properties]` are these lines.
fn check_config(dir: &Path, properties: &str) -> Checked {
    let path: PathBuf = dir.join("config.toml");
    let toml = format!(
        "[kafka]\nbrokers = \"kafka-0:9093\"\n\n[kafka.properties]\n{properties}\n\n[target]\nclient_code = \"acme\"\n"
    );
    std::fs::write(&path, toml).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pos-profile-sync"))
        .args(["check-config", "--config"])
        .arg(&path)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Checked {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn tls_lines(pki: &Pki, protocol: &str) -> String {
    format!(
        "\"security.protocol\" = \"{protocol}\"\n\"ssl.ca.location\" = \"{}\"\n\"ssl.certificate.location\" = \"{}\"\n\"ssl.key.location\" = \"{}\"\n",
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    )
}

fn assert_no_secret(run: &Checked) {
    for secret in [PASSWORD, CLIENT_SECRET] {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "a secret read through _file appears in the output:\n{}\n{}",
            run.stdout,
            run.stderr
        );
    }
}

#[test]
fn tls_with_a_generated_ca_client_certificate_and_key_is_accepted() {
    let pki = Pki::generate();
    let run = check_config(pki.dir.path(), &tls_lines(&pki, "SSL"));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains(&pki.path("client.pem")),
        "{}",
        run.stdout
    );
}

#[test]
fn sasl_ssl_with_each_mechanism_is_accepted_and_the_password_file_stays_secret() {
    let pki = Pki::generate();
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let lines = format!(
            "{}\"sasl.mechanism\" = \"{mechanism}\"\n\"sasl.username\" = \"svc\"\n\"sasl.password_file\" = \"{}\"\n",
            tls_lines(&pki, "SASL_SSL"),
            pki.path("password"),
        );
        let run = check_config(pki.dir.path(), &lines);
        assert_eq!(run.code, Some(0), "{mechanism}: {}", run.stderr);
        assert!(run.stdout.contains(mechanism), "{}", run.stdout);
        assert_no_secret(&run);
    }
    // OAUTHBEARER with librdkafka's own unsecured tokens (for development
    // brokers): the token settings come from a file and are masked.
    let unsecured = format!(
        "{}\"sasl.mechanism\" = \"OAUTHBEARER\"\n\"enable.sasl.oauthbearer.unsecure.jwt\" = true\n\"sasl.oauthbearer.config_file\" = \"{}\"\n",
        tls_lines(&pki, "SASL_SSL"),
        pki.path("oauthbearer-config"),
    );
    let run = check_config(pki.dir.path(), &unsecured);
    assert_eq!(run.code, Some(0), "OAUTHBEARER: {}", run.stderr);
    assert_no_secret(&run);
}

#[test]
fn oauthbearer_through_oidc_is_refused_by_name_as_this_build_has_no_libcurl() {
    let pki = Pki::generate();
    let oidc = format!(
        "{}\"sasl.mechanism\" = \"OAUTHBEARER\"\n\"sasl.oauthbearer.method\" = \"oidc\"\n\"sasl.oauthbearer.client.id\" = \"pos-profile-sync\"\n\"sasl.oauthbearer.client.secret_file\" = \"{}\"\n\"sasl.oauthbearer.token.endpoint.url\" = \"https://login.example.com/oauth2/token\"\n",
        tls_lines(&pki, "SASL_SSL"),
        pki.path("client-secret"),
    );
    let run = check_config(pki.dir.path(), &oidc);
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(
        // librdkafka names the first unsupported property it meets.
        run.stderr
            .contains("Configuration property \"sasl.oauthbearer.")
            && run.stderr.contains("libcurl"),
        "{}",
        run.stderr
    );
    assert_no_secret(&run);

    // librdkafka's refusal quotes the value: a secret must not be quoted.
    let secret_only = format!(
        "{}\"sasl.mechanism\" = \"OAUTHBEARER\"\n\"sasl.oauthbearer.client.secret_file\" = \"{}\"\n",
        tls_lines(&pki, "SASL_SSL"),
        pki.path("client-secret"),
    );
    let run = check_config(pki.dir.path(), &secret_only);
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(
        run.stderr.contains("sasl.oauthbearer.client.secret"),
        "{}",
        run.stderr
    );
    assert_no_secret(&run);
}

#[test]
fn an_inline_password_is_masked_in_the_output() {
    let pki = Pki::generate();
    let lines = format!(
        "{}\"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"svc\"\n\"sasl.password\" = \"{PASSWORD}\"\n",
        tls_lines(&pki, "SASL_SSL")
    );
    let run = check_config(pki.dir.path(), &lines);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("********"), "{}", run.stdout);
    assert_no_secret(&run);
}

#[test]
fn missing_files_are_named_with_exit_code_2() {
    let pki = Pki::generate();
    let missing = pki.path("missing-ca.pem");
    let lines = tls_lines(&pki, "SSL").replace(&pki.path("ca.pem"), &missing);
    let run = check_config(pki.dir.path(), &lines);
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(run.stderr.contains("missing-ca.pem"), "{}", run.stderr);

    let lines = format!(
        "{}\"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"svc\"\n\"sasl.password_file\" = \"{}\"\n",
        tls_lines(&pki, "SASL_SSL"),
        pki.path("missing-password"),
    );
    let run = check_config(pki.dir.path(), &lines);
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(
        run.stderr
            .contains("kafka.properties.sasl.password_file: cannot read")
            && run.stderr.contains("missing-password"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_unknown_mechanism_or_a_key_of_another_certificate_is_refused_with_exit_code_2() {
    let pki = Pki::generate();
    let lines = format!(
        "{}\"sasl.mechanism\" = \"SCRAM-SHA-1\"\n\"sasl.username\" = \"svc\"\n\"sasl.password_file\" = \"{}\"\n",
        tls_lines(&pki, "SASL_SSL"),
        pki.path("password"),
    );
    let run = check_config(pki.dir.path(), &lines);
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(run.stderr.contains("SCRAM-SHA-1"), "{}", run.stderr);
    assert_no_secret(&run);

    let lines = tls_lines(&pki, "SSL").replace(&pki.path("client.key"), &pki.path("other.key"));
    let run = check_config(pki.dir.path(), &lines);
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(run.stderr.contains("kafka.properties"), "{}", run.stderr);
}
