//! A throwaway MariaDB for the MySQL adapter's tests: `mariadb-install-db` + `mariadbd` on a
//! free loopback port (as the `mysql` OS user when run as root), one server per test binary,
//! with the gateway's service account and a `shop` database holding sample card data.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{SVC_PASSWORD, SVC_USER, free_port, is_root, make_upstream_certs, run_until_exit};

/// A service account that may log in only over TLS (`REQUIRE SSL`).
pub const TLS_USER: &str = "gatehouse_tls";

pub struct MariaDb {
    pub port: u16,
    socket: PathBuf,
    /// The CA of the server's TLS certificate (for 127.0.0.1 and localhost).
    ca: PathBuf,
    /// The server runs under a shell that waits on this pipe: when the test process exits
    /// (however it exits), the pipe closes and the shell stops the server and removes its
    /// directory. A static's `Drop` would never run.
    _keepalive: std::sync::Mutex<std::process::ChildStdin>,
}

/// The server binary: on PATH, or where Debian puts it (`/usr/sbin`, not on a user's PATH).
fn mariadbd() -> String {
    ["/usr/sbin/mariadbd", "/usr/bin/mariadbd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("mariadbd")
        .to_owned()
}

/// The one server of this test binary, stopped when the process exits.
pub fn mariadb() -> &'static MariaDb {
    static SERVER: OnceLock<MariaDb> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// The sample data: `shop.payments` with card numbers and a note.
pub const SHOP_SQL: &str = "CREATE DATABASE shop;
     CREATE TABLE shop.payments (id int PRIMARY KEY, card_number varchar(32), note text);
     INSERT INTO shop.payments VALUES (1, '4111111111111111', 'first'), (2, '5500005555555559', NULL);";

impl MariaDb {
    pub fn ca_file(&self) -> &std::path::Path {
        &self.ca
    }

    /// Runs `sql` as the server's root over its socket; stdout, or a panic with stderr.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-u", "root", "-N", "-B", "-e", sql])
            .output()
            .expect("mariadb");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn start() -> MariaDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let data: PathBuf = dir.path().join("data");
    make_upstream_certs(dir.path());
    let root = is_root();
    if root {
        assert!(
            Command::new("chown")
                .args(["-R", "mysql:mysql"])
                .arg(dir.path())
                .status()
                .expect("chown")
                .success()
        );
    }
    let mut install = Command::new("mariadb-install-db");
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
    if root {
        install.arg("--user=mysql");
    }
    let out = install.output().expect("mariadb-install-db");
    assert!(
        out.status.success(),
        "mariadb-install-db: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let socket = dir.path().join("sock");
    let mut cmd = Command::new("mariadbd");
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--port={port}"))
        .args([
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=16M",
        ])
        .arg(format!(
            "--ssl-cert={}",
            dir.path().join("server.crt").display()
        ))
        .arg(format!(
            "--ssl-key={}",
            dir.path().join("server.key").display()
        ))
        .arg(format!("--ssl-ca={}", dir.path().join("ca.crt").display()))
        .arg(format!(
            "--log-error={}",
            dir.path().join("err.log").display()
        ))
        .arg(format!("--pid-file={}", dir.path().join("pid").display()));
    if root {
        cmd.arg("--user=mysql");
    }
    let mut line: Vec<String> = vec![mariadbd()];
    line.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    let dir = dir.keep();
    let script = format!(
        "{} >/dev/null 2>&1 & pid=$!; cat >/dev/null; kill $pid; wait $pid; rm -rf {}",
        line.join(" "),
        dir.display()
    );
    let stdin = run_until_exit(Command::new("bash").args(["-c", &script]));
    let server = MariaDb {
        port,
        socket,
        ca: dir.join("ca.crt"),
        _keepalive: std::sync::Mutex::new(stdin),
    };
    // Ready once the socket answers the CLI.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", server.socket.display()))
            .args(["-u", "root", "-e", "SELECT 1"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "mariadbd did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.sql(&format!(
        "CREATE USER '{SVC_USER}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{SVC_PASSWORD}');
         GRANT ALL ON *.* TO '{SVC_USER}'@'%';
         CREATE USER '{TLS_USER}'@'%' IDENTIFIED BY '{SVC_PASSWORD}' REQUIRE SSL;
         GRANT ALL ON shop.* TO '{TLS_USER}'@'%';
         {SHOP_SQL}"
    ));
    server
}
