//! The gateway's own connection to the upstream honours `upstream_tls`.

use crate::support::*;

async fn upstream_ssl(gw: &Gateway) -> bool {
    let token = gw.token("tls-check", &["dba"]);
    let c = gw.connect("payments", &token).await;
    c.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

fn config_with(tls: &str, ca: Option<&std::path::Path>) -> GatewayBuilder {
    let pg = cluster();
    let ca_line = ca
        .map(|p| format!("upstream_ca_file = \"{}\"\n", p.display()))
        .unwrap_or_default();
    Gateway::builder().extra(&format!(
        "[[connection]]\nname = \"tls-{tls}\"\nupstream = \"127.0.0.1:{}\"\ndatabase = \"payments\"\n\
         user = \"{SVC_USER}\"\npassword_env = \"TEST_DB_PASSWORD\"\nupstream_tls = \"{tls}\"\n{ca_line}\
         allow_groups = [\"dba\"]\n",
        pg.port
    ))
}

#[tokio::test]
async fn disable_require_and_verify_full() {
    let pg = cluster();
    // The harness's default connection uses upstream_tls = "disable".
    let gw = Gateway::start();
    assert!(!upstream_ssl(&gw).await);

    for (mode, ca) in [("require", None), ("verify-full", Some(pg.ca_file()))] {
        let gw = config_with(mode, ca.as_deref()).start();
        let token = gw.token("tls-check", &["dba"]);
        let c = gw.connect(&format!("tls-{mode}"), &token).await;
        let ssl: bool = c
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            ssl,
            "upstream_tls = {mode} must encrypt the upstream connection"
        );
        let start = gw.wait_for_record(|r| {
            r["kind"] == "session_start" && r["connection"] == format!("tls-{mode}")
        });
        assert_eq!(start["detail"]["upstream_tls"], true);
    }
}

#[tokio::test]
async fn verify_full_rejects_an_untrusted_server() {
    // A CA that did not sign the server's certificate.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem", "-out",
        ])
        .arg(dir.path().join("other-ca.crt"))
        .args(["-days", "1", "-subj", "/CN=other"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let gw = config_with("verify-full", Some(&dir.path().join("other-ca.crt"))).start();
    let token = gw.token("tls-check", &["dba"]);
    let Err(err) = gw.try_connect("tls-verify-full", &token).await else {
        panic!("a server signed by another CA must be refused");
    };
    assert_eq!(sqlstate(&err).as_deref(), Some("08001"), "{err}");
    let rec = gw.wait_for_record(|r| r["kind"] == "login_failed");
    assert_eq!(rec["detail"]["reason"], "upstream_unavailable");
}

/// The gateway answers whatever password method the server asks for: SCRAM-SHA-256 (the
/// default role), md5 and cleartext.
#[tokio::test]
async fn md5_and_cleartext_upstream_logins() {
    let pg = cluster();
    let mut b = Gateway::builder();
    for user in [MD5_USER, CLEAR_USER] {
        b = b.extra(&format!(
            "[[connection]]\nname = \"{user}\"\nupstream = \"127.0.0.1:{}\"\ndatabase = \"payments\"\n\
             user = \"{user}\"\npassword_env = \"TEST_DB_PASSWORD\"\nupstream_tls = \"disable\"\n\
             allow_groups = [\"dba\"]\n",
            pg.port
        ));
    }
    let gw = b.start();
    let token = gw.token("auth-methods", &["dba"]);
    for user in [MD5_USER, CLEAR_USER] {
        let c = gw.connect(user, &token).await;
        let who: String = c
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, user);
    }
    // The server really used md5 / password for them (pg_hba), SCRAM for the service role.
    let hba = pg.psql_super(
        "postgres",
        "SELECT string_agg(auth_method, ',' ORDER BY line_number) FROM pg_hba_file_rules \
         WHERE user_name::text LIKE '%gatehouse_%'",
    );
    assert_eq!(hba.trim(), "md5,password");
}
