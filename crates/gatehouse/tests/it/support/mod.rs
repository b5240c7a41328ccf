//! Test support: a real PostgreSQL started in a temp dir on a free port, and the real
//! `gatehouse` binary in front of it. Nothing is mocked.
//!
//! The cluster is shared by the tests of one test binary and stops when the binary exits: it
//! runs under a small shell that waits on a pipe from this process, so it cannot outlive it.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod mariadb;
pub mod mysql8;
mod wire;

pub use wire::*;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const SVC_USER: &str = "gatehouse_svc";
pub const SVC_PASSWORD: &str = "svc-Secret-9f3b";
pub const SUPER_PASSWORD: &str = "super-Secret-77";
/// A role that logs in with md5 (its password is stored as md5).
pub const MD5_USER: &str = "gatehouse_md5";
/// A role that logs in with a cleartext password request.
pub const CLEAR_USER: &str = "gatehouse_clear";

/// Test card numbers (Luhn-valid, from the brands' published test ranges).
pub const CARDS: &[&str] = &[
    "4111111111111111",
    "5555555555554444",
    "378282246310005",
    "6011111111111117",
];

/// A loopback port nobody listens on, taken from below the kernel's ephemeral range.
///
/// Ports from `bind(…:0)` come from the ephemeral range, which the kernel also hands to
/// outgoing connections: between the test picking one and the gateway binding it, a client
/// socket can take it ("Address already in use"). Below 32768 only listeners live, so a port
/// that binds now stays ours; a per-process counter keeps the threads of one test binary apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {}", LOW + SPAN)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn pg_bin(name: &str) -> String {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return format!("{dir}/{name}");
    }
    for v in ["18", "17", "16", "15", "14", "13"] {
        let p = format!("/usr/lib/postgresql/{v}/bin/{name}");
        if Path::new(&p).exists() {
            return p;
        }
    }
    name.to_owned()
}

/// Runs a command as the `postgres` OS user when we are root (PostgreSQL refuses root).
fn as_pg_user(program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

pub struct PgCluster {
    pub port: u16,
    pub dir: PathBuf,
    _keepalive: Mutex<std::process::ChildStdin>,
}

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();

/// The PostgreSQL cluster shared by this test binary.
pub fn cluster() -> &'static PgCluster {
    CLUSTER.get_or_init(PgCluster::start)
}

impl PgCluster {
    fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("gh-pg-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("pg dir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown")
                .success();
            assert!(ok, "chown of the PostgreSQL dir failed");
        }
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, SUPER_PASSWORD).expect("pwfile");
        if is_root() {
            Command::new("chown")
                .args(["postgres"])
                .arg(&pwfile)
                .status()
                .expect("chown");
        }
        let data = dir.join("data");
        let out = as_pg_user(&pg_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        make_upstream_certs(&dir);
        // Roles that make the gateway answer md5 and cleartext password requests upstream.
        let hba = data.join("pg_hba.conf");
        let existing = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        std::fs::write(
            &hba,
            format!(
                "host all {MD5_USER} 127.0.0.1/32 md5\nhost all {CLEAR_USER} 127.0.0.1/32 password\n{existing}"
            ),
        )
        .expect("pg_hba.conf");
        if is_root() {
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(&hba)
                .status()
                .expect("chown");
        }
        let port = free_port();
        let script = format!(
            "{postgres} -D {data} -p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c max_connections=200 -c shared_buffers=32MB -c ssl=on \
             -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key \
             >{dir}/log 2>&1 & pid=$!; \
             cat >/dev/null; kill -INT $pid; wait $pid; rm -rf {dir}",
            postgres = pg_bin("postgres"),
            data = data.display(),
            dir = dir.display(),
        );
        let stdin = run_until_exit(as_pg_user("bash").args(["-c", &script]));
        let c = PgCluster {
            port,
            dir,
            _keepalive: Mutex::new(stdin),
        };
        c.wait_ready();
        c.psql_super(
            "postgres",
            &format!(
                "CREATE ROLE {SVC_USER} LOGIN PASSWORD '{SVC_PASSWORD}';
                 CREATE DATABASE payments OWNER {SVC_USER};
                 SET password_encryption = 'md5';
                 CREATE ROLE {MD5_USER} LOGIN PASSWORD '{SVC_PASSWORD}';
                 RESET password_encryption;
                 CREATE ROLE {CLEAR_USER} LOGIN PASSWORD '{SVC_PASSWORD}';
                 GRANT {SVC_USER} TO {MD5_USER}, {CLEAR_USER};"
            ),
        );
        c.psql_as_svc("payments", &sample_data());
        c
    }

    /// The CA that signed the cluster's server certificate (for `upstream_tls = "verify-full"`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Runs SQL as the superuser with psql; panics on error.
    pub fn psql_super(&self, db: &str, sql: &str) -> String {
        self.psql("postgres", SUPER_PASSWORD, db, sql)
    }

    /// Waits until a server backend is running a statement whose text contains `needle`
    /// (so that a cancel or a disconnect meets a statement in flight, not one still on its
    /// way). Panics after 20 s.
    pub async fn wait_until_running(&self, needle: &str) {
        let client = self.super_client().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE state = 'active' AND pid <> pg_backend_pid() \
                     AND strpos(query, $1) > 0",
                    &[&needle],
                )
                .await
                .expect("pg_stat_activity")
                .get(0);
            if n > 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no backend ran {needle:?} in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A direct client as the superuser.
    pub async fn super_client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres password={SUPER_PASSWORD} dbname=postgres",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("superuser connection");
        tokio::spawn(conn);
        client
    }

    /// Runs SQL as the service role directly (bypassing the gateway).
    pub fn psql_as_svc(&self, db: &str, sql: &str) -> String {
        self.psql(SVC_USER, SVC_PASSWORD, db, sql)
    }

    fn psql(&self, user: &str, pw: &str, db: &str, sql: &str) -> String {
        let mut child = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                user,
                "-d",
                db,
            ])
            .env("PGPASSWORD", pw)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("psql");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(sql.as_bytes())
            .expect("write sql");
        let out = child.wait_with_output().expect("psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A fresh database owned by the service role, with the sample data.
    pub fn create_database(&self, name: &str) {
        self.psql_super(
            "postgres",
            &format!("CREATE DATABASE {name} OWNER {SVC_USER};"),
        );
        self.psql_as_svc(name, &sample_data());
    }

    /// A direct client as the service role (for checking what really happened upstream).
    pub async fn direct(&self, db: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user={SVC_USER} password={SVC_PASSWORD} dbname={db}",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("direct connect");
        tokio::spawn(conn);
        client
    }
}

/// A CA and a server certificate for 127.0.0.1/localhost, made with the openssl CLI.
fn make_upstream_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3",
        "-subj",
        "/CN=gatehouse-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("san");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "3",
        "-extfile",
        "san.ext",
    ]);
    if is_root() {
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .expect("chown");
    }
    Command::new("chmod")
        .arg("600")
        .arg(dir.join("server.key"))
        .status()
        .expect("chmod");
}

pub fn sample_data() -> String {
    format!(
        "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text);
         CREATE TABLE payments (id serial PRIMARY KEY, customer_id int REFERENCES customers,
             card_number text NOT NULL, cvv text, amount numeric(12,2), created_at timestamptz DEFAULT now());
         INSERT INTO customers (name, email) VALUES ('Ada', 'ada@example.com'), ('Grace', 'grace@example.com');
         INSERT INTO payments (customer_id, card_number, cvv, amount) VALUES
             (1, '{}', '123', 10.50), (2, '{}', '456', 99.99), (1, '{}', '789', 5.00);",
        CARDS[0], CARDS[1], CARDS[2]
    )
}

/// Spawns `shell` (a `bash -c` script that starts a server, waits for its stdin to close,
/// then stops the server and removes its directory) and keeps the pipe: when the test process
/// exits, however it exits, the pipe closes and the server goes (a static's `Drop` never runs).
pub fn run_until_exit(shell: &mut Command) -> std::process::ChildStdin {
    let mut child = shell
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a throwaway server");
    let stdin = child.stdin.take().expect("stdin");
    std::mem::forget(child);
    stdin
}

/// A running `gatehouse serve` with its own data dir and ports.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub pg_port: u16,
    pub admin_port: u16,
    /// `listen.mysql`, when the builder asked for it.
    pub mysql_port: Option<u16>,
    child: Option<Child>,
    pub log: PathBuf,
    /// Extra environment variables for the gateway process (applied at the next (re)start).
    pub env: Vec<(String, String)>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_gatehouse")
}

/// Builder for a gateway config; `extra` is appended verbatim (TOML).
pub struct GatewayBuilder {
    pub databases: Vec<(String, String)>,
    pub extra_top: String,
    pub extra: String,
    pub tls_require: bool,
    pub record_results: String,
    /// `listen.mysql` and a `kind = "mysql"` connection `shop` to the test MariaDB.
    pub mysql_port: Option<u16>,
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        Self {
            databases: vec![("payments".into(), "payments".into())],
            extra_top: String::new(),
            extra: String::new(),
            tls_require: false,
            record_results: "masked".into(),
            mysql_port: None,
        }
    }
}

impl GatewayBuilder {
    pub fn connection(mut self, name: &str, db: &str) -> Self {
        self.databases.push((name.into(), db.into()));
        self
    }

    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self
    }

    pub fn extra_top(mut self, toml: &str) -> Self {
        self.extra_top.push_str(toml);
        self
    }

    /// Serves MySQL too: `listen.mysql` and the connection `shop` (the test MariaDB's
    /// `shop` database, as the service account).
    pub fn mysql(mut self) -> Self {
        self.mysql_port = Some(free_port());
        self
    }

    pub fn tls_require(mut self) -> Self {
        self.tls_require = true;
        self
    }

    pub fn config_text(&self, pg_port: u16, admin_port: u16) -> String {
        let pg = cluster();
        let mut s = format!(
            "data_dir = \"./data\"\n{}\n[listen]\npostgres = \"127.0.0.1:{pg_port}\"\nadmin = \"127.0.0.1:{admin_port}\"\n\
             startup_timeout = \"3s\"\n\n[tls]\nrequire = {}\n\n[identity]\nlocal_issuer = true\n\
             admin_groups = [\"gatehouse-admins\"]\n\n[audit]\nrecord_results = \"{}\"\ncheckpoint_every = 50\n\n",
            self.extra_top, self.tls_require, self.record_results
        );
        if let Some(port) = self.mysql_port {
            s = s.replacen(
                "[listen]\n",
                &format!("[listen]\nmysql = \"127.0.0.1:{port}\"\n"),
                1,
            );
            s.push_str(&format!(
                "[[connection]]\nname = \"shop\"\nkind = \"mysql\"\nupstream = \"127.0.0.1:{}\"\n\
                 database = \"shop\"\nuser = \"{SVC_USER}\"\npassword_env = \"TEST_DB_PASSWORD\"\n\
                 upstream_tls = \"disable\"\nallow_groups = [\"fraud-bots\", \"dba\"]\n\n",
                mariadb::mariadb().port
            ));
        }
        for (name, db) in &self.databases {
            s.push_str(&format!(
                "[[connection]]\nname = \"{name}\"\nupstream = \"127.0.0.1:{}\"\ndatabase = \"{db}\"\n\
                 user = \"{SVC_USER}\"\npassword_env = \"TEST_DB_PASSWORD\"\nupstream_tls = \"disable\"\n\
                 allow_groups = [\"fraud-bots\", \"dba\"]\n\n",
                pg.port
            ));
        }
        s.push_str(&self.extra);
        s
    }

    pub fn start(self) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let pg_port = free_port();
        let admin_port = free_port();
        let config = dir.path().join("gatehouse.toml");
        std::fs::write(&config, self.config_text(pg_port, admin_port)).expect("config");
        let mut gw = Gateway {
            log: dir.path().join("gatehouse.log"),
            dir,
            config,
            pg_port,
            admin_port,
            mysql_port: self.mysql_port,
            child: None,
            env: Vec::new(),
        };
        gw.spawn();
        gw
    }
}

impl Gateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    pub fn start() -> Gateway {
        GatewayBuilder::default().start()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(bin())
            .args(["serve", "-c"])
            .arg(&self.config)
            .env("TEST_DB_PASSWORD", SVC_PASSWORD)
            .env("GATEHOUSE_LOG", "info,gatehouse_pg=debug")
            .env("GATEHOUSE_TEST_JOURNAL_FAILPOINT", self.journal_failpoint())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn gatehouse");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.pg_port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).is_err()
        {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("gatehouse exited with {status}: {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "gatehouse did not start: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// While this file exists, the gateway's audit journal refuses writes as a full disk
    /// would (a failpoint of debug builds).
    fn journal_failpoint(&self) -> PathBuf {
        self.dir.path().join("journal-failpoint")
    }

    /// Makes the audit journal fail every write (`true`) or work again (`false`).
    pub fn fail_journal(&self, fail: bool) {
        let p = self.journal_failpoint();
        if fail {
            std::fs::write(&p, b"").expect("failpoint");
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }

    /// The gateway process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Waits (up to 20 s) until the gateway's log holds `needle` at least `times` times.
    pub fn wait_for_log(&self, needle: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.log_text().matches(needle).count() < times {
            assert!(
                Instant::now() < deadline,
                "the log never showed {needle:?} {times} times: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops with SIGTERM (graceful: the chain is sealed with a checkpoint) and waits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Kills the process with SIGKILL (no shutdown of any kind: a crash) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the process again after [`Self::kill`] or [`Self::stop`].
    pub fn start_again(&mut self) {
        self.spawn();
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Runs the CLI against this gateway's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .args(args)
            .arg("-c")
            .arg(&self.config)
            .env("TEST_DB_PASSWORD", SVC_PASSWORD)
            .output()
            .expect("run gatehouse")
    }

    pub fn token(&self, subject: &str, groups: &[&str]) -> String {
        let mut args = vec!["token", "issue", "--subject", subject];
        for g in groups {
            args.push("--group");
            args.push(g);
        }
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "token issue: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn conn_str(&self, db: &str, user: &str, token: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={db} user={user} password={token}",
            self.pg_port
        )
    }

    /// A tokio-postgres client through the gateway (plaintext).
    pub async fn connect(&self, db: &str, token: &str) -> tokio_postgres::Client {
        self.try_connect(db, token)
            .await
            .expect("connect through gatehouse")
    }

    pub async fn try_connect(
        &self,
        db: &str,
        token: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) =
            tokio_postgres::connect(&self.conn_str(db, "agent", token), tokio_postgres::NoTls)
                .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// The audit records as exported (JSON lines parsed).
    /// Every stored record in the export shape, read from the store itself: a CLI export
    /// would be an audit read, recorded by the gateway shortly after, and tests that count
    /// records would race with it. (`audit_access.rs` covers the CLI's own reads.)
    pub fn export(&self) -> Vec<serde_json::Value> {
        let store = gatehouse_store::SqliteStore::open_existing(&self.store_url())
            .unwrap_or_else(|e| panic!("open the audit store: {e}"));
        let mut out = Vec::new();
        store
            .for_each_record(None, |r| {
                // Through text, as every consumer sees it (serde_json's default float parsing
                // can differ from the in-memory f64 in the last digit).
                let line = r.export_json().to_string();
                out.push(serde_json::from_str(&line).expect("export line parses"));
                true
            })
            .unwrap_or_else(|e| panic!("read the audit store: {e}"));
        out
    }

    /// The admin API's Prometheus text (`/metrics`).
    pub async fn metrics(&self) -> String {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{}/metrics", self.admin_port))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until an exported record satisfies `pred` (outcomes are written after the fact).
    pub fn wait_for_record(&self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = self.export().into_iter().find(|r| pred(r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no matching audit record; log: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn store_url(&self) -> String {
        format!("sqlite://{}/data/gatehouse.db", self.dir.path().display())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The SQLSTATE of a tokio-postgres error, if the server sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_owned())
}

pub fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Helpers added for the masking suite
// ---------------------------------------------------------------------------------------------

impl PgCluster {
    /// A fresh database owned by the service role, loaded with `sql` (not the sample data).
    pub fn create_database_with(&self, name: &str, sql: &str) {
        self.psql_super(
            "postgres",
            &format!("CREATE DATABASE {name} OWNER {SVC_USER};"),
        );
        self.psql_as_svc(name, sql);
    }
}

impl GatewayBuilder {
    /// Like `start`, but the generated config text is passed through `edit` first (for keys
    /// the builder writes itself, such as a connection's `allow_groups`).
    pub fn start_edited(self, edit: impl FnOnce(String) -> String) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let pg_port = free_port();
        let admin_port = free_port();
        let config = dir.path().join("gatehouse.toml");
        let text = self.config_text(pg_port, admin_port);
        let edited = edit(text.clone());
        assert_ne!(text, edited, "config edit changed nothing");
        std::fs::write(&config, edited).expect("config");
        let mut gw = Gateway {
            log: dir.path().join("gatehouse.log"),
            dir,
            config,
            pg_port,
            admin_port,
            mysql_port: self.mysql_port,
            child: None,
            env: Vec::new(),
        };
        gw.spawn();
        gw
    }
}

impl Gateway {
    /// A tokio-postgres client through the gateway whose asynchronous messages (notices and
    /// notifications) are delivered on the returned channel.
    pub async fn connect_with_messages(
        &self,
        db: &str,
        token: &str,
    ) -> (
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>,
    ) {
        use futures_util::StreamExt;
        let (client, mut conn) =
            tokio_postgres::connect(&self.conn_str(db, "agent", token), tokio_postgres::NoTls)
                .await
                .expect("connect through gatehouse");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(Ok(m)) = stream.next().await {
                let _ = tx.send(m);
            }
        });
        (client, rx)
    }

    /// The gateway's SQLite store and its WAL companions (those that exist), with their bytes.
    pub fn store_file_bytes(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let db = self.data_dir().join("gatehouse.db");
        [
            db.clone(),
            PathBuf::from(format!("{}-wal", db.display())),
            PathBuf::from(format!("{}-shm", db.display())),
        ]
        .into_iter()
        .chain(
            std::fs::read_dir(self.data_dir().join("gatehouse.journal"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path()),
        )
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect()
    }
}

/// Calls the admin API of `gw` (GET, or POST with a JSON body): the status and the JSON body
/// (`null` when it is not JSON).
pub async fn api(
    gw: &Gateway,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://127.0.0.1:{}{path}", gw.admin_port);
    let mut req = match method {
        "POST" => client.post(url),
        _ => client.get(url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// Runs a libpq tool (psql, pg_dump, …) with `args` and the token in `PGPASSWORD`; asserts
/// exit 0 and returns its stdout. Nothing from the environment may redirect or reconfigure
/// the connection.
pub fn libpq_tool(tool: &str, args: &[&str], token: &str) -> String {
    let mut cmd = Command::new(tool);
    cmd.args(args)
        .env("PGPASSWORD", token)
        .env("PGCONNECT_TIMEOUT", "20");
    for v in [
        "PGHOST",
        "PGPORT",
        "PGDATABASE",
        "PGUSER",
        "PGSERVICE",
        "PGOPTIONS",
        "PGSSLMODE",
    ] {
        cmd.env_remove(v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} exited with {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (up to 10 s) for the first pending approval request `token` may see, through the
/// admin API, and returns it.
pub async fn pending_approval(gw: &Gateway, token: &str) -> serde_json::Value {
    for _ in 0..200 {
        let (status, list) = api(
            gw,
            "GET",
            "/api/approvals?status=pending",
            Some(token),
            None,
        )
        .await;
        assert_eq!(status, 200, "{list}");
        if let Some(r) = list.as_array().and_then(|a| a.first()) {
            return r.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no pending approval request appeared");
}

/// How many rows a simple-protocol answer holds.
pub fn row_count(msgs: &[tokio_postgres::SimpleQueryMessage]) -> usize {
    msgs.iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count()
}
